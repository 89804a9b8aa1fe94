"""Net surgery: turn InnerProduct layers into the equivalent Convolution layers.

Caffe's examples/net_surgery makes CaffeNet fully convolutional this way: an
InnerProduct over a C x H x W bottom computes the same dot products as a
Convolution with an H x W kernel, and an InnerProduct over a flat C-vector
(the output of another converted layer, now C x 1 x 1) is a 1x1
convolution. The weights carry over by reshaping (num_output, C*H*W) to
(num_output, C, H, W): both layers read the bottom in the same C-order. On
a larger input the converted net then slides the classifier over the image
and produces a map of scores instead of one vector.

As in Caffe's example, converted layers and their top blobs are renamed
(fc6 → fc6-conv) so that the original weights are never loaded into them by
name by mistake; in-place layers on those blobs (ReLU, Dropout) and later
bottoms follow the rename.
"""

from dataclasses import dataclass

import numpy as np

from . import backend, caffe_pb2, formats
from .errors import NetError
from .net import TEST, Net


@dataclass
class Conversion:
    old_name: str
    new_name: str
    kernel: tuple  # (channels, kernel_h, kernel_w) of the bottom the layer reads
    transpose: bool  # InnerProduct's weights are stored (K, N) instead of (N, K)


def _bottom_shapes(net):
    """Layer name -> shape of its first bottom, from a built net."""
    return {name: net.blobs[bottoms[0]].shape for name, bottoms in net.bottom_names.items() if bottoms}


def _kernel(layer, shape):
    ip = layer.inner_product_param
    axis = ip.axis + len(shape) if ip.axis < 0 else ip.axis
    if axis != 1:
        raise NetError(f"layer '{layer.name}': only an InnerProduct over axis 1 can become a convolution "
                       f"(axis is {ip.axis})")
    if len(shape) == 4:
        return tuple(int(d) for d in shape[1:])
    if len(shape) == 2:
        return (int(shape[1]), 1, 1)
    raise NetError(f"layer '{layer.name}': cannot convert an InnerProduct whose bottom has shape {shape}; "
                   "a convolution needs N x C x H x W (or N x C from a converted layer)")


def _as_convolution(layer, new_name, kernel, rename):
    """A Convolution LayerParameter computing what InnerProduct `layer` computes."""
    ip = layer.inner_product_param
    conv_layer = caffe_pb2.LayerParameter()
    conv_layer.CopyFrom(layer)
    conv_layer.ClearField("inner_product_param")
    conv_layer.name = new_name
    conv_layer.type = "Convolution"
    conv_layer.bottom[:] = [rename.get(b, b) for b in layer.bottom]
    conv = conv_layer.convolution_param
    conv.num_output = ip.num_output
    if not ip.bias_term:
        conv.bias_term = False
    _, height, width = kernel
    if height == width:
        conv.kernel_size.append(height)
    else:
        conv.kernel_h, conv.kernel_w = height, width
    if ip.HasField("weight_filler"):
        conv.weight_filler.CopyFrom(ip.weight_filler)
    if ip.HasField("bias_filler"):
        conv.bias_filler.CopyFrom(ip.bias_filler)
    return conv_layer


def _layers_to_convert(net_param, layers):
    """The InnerProduct layers to convert: `layers`, checked, or all of them."""
    inner_products = [layer.name for layer in net_param.layer if layer.type == "InnerProduct"]
    wanted = list(inner_products if layers is None else layers)
    for name in wanted:
        if name not in inner_products:
            kinds = {layer.name: layer.type for layer in net_param.layer}
            what = f"is a {kinds[name]} layer" if name in kinds else "is not in the net"
            raise NetError(f"cannot convert '{name}' to a convolution: it {what} "
                           f"(InnerProduct layers: {', '.join(inner_products) or 'none'})")
    return wanted


def fc_to_conv_param(net_param, bottom_shapes, layers=None, suffix="-conv"):
    """The converted NetParameter and the list of Conversions.

    `bottom_shapes` maps layer names to their first bottom's shape (from a
    built net); `layers` names the InnerProduct layers to convert (default: all).
    """
    wanted = _layers_to_convert(net_param, layers)
    result = caffe_pb2.NetParameter()
    result.CopyFrom(net_param)
    del result.layer[:]
    rename, conversions = {}, []
    for layer in net_param.layer:
        if layer.name in wanted:
            if layer.name not in bottom_shapes:
                raise NetError(f"layer '{layer.name}' is not part of the net built for the TEST phase")
            kernel = _kernel(layer, bottom_shapes[layer.name])
            if len(bottom_shapes[layer.name]) == 2 and layer.bottom[0] not in rename:
                raise NetError(f"cannot convert '{layer.name}': its bottom '{layer.bottom[0]}' is a flat "
                               f"N x {kernel[0]} blob that stays flat; convert the layer producing it too")
            new_name = layer.name + suffix
            for top in layer.top:
                rename[top] = top + suffix
            converted = _as_convolution(layer, new_name, kernel, rename)
            converted.top[:] = [rename[t] for t in layer.top]
            result.layer.add().CopyFrom(converted)
            conversions.append(Conversion(layer.name, new_name, kernel, layer.inner_product_param.transpose))
            continue
        copy = result.layer.add()
        copy.CopyFrom(layer)
        copy.bottom[:] = [rename.get(b, b) for b in layer.bottom]
        copy.top[:] = [rename.get(t, t) if t in layer.bottom else t for t in layer.top]
        for top in copy.top:
            if top not in layer.bottom:
                rename.pop(top, None)  # a new producer of that name ends the rename
    return result, conversions


def _set_input_shape(net_param, shape):
    inputs = [layer for layer in net_param.layer if layer.type == "Input"]
    if len(inputs) != 1 or len(inputs[0].top) != 1:
        raise NetError("--input-shape needs a net with exactly one Input layer of one top")
    param = inputs[0].input_param
    del param.shape[:]
    param.shape.add().dim.extend(int(d) for d in shape)


def transplant(source, target, conversions):
    """Copy every parameter of `source` into `target`: by name, reshaping the converted layers."""
    renamed = {c.new_name: c for c in conversions}
    source_params = source.params
    for name, blobs in target.params.items():
        conversion = renamed.get(name)
        from_blobs = source_params.get(conversion.old_name if conversion else name)
        if from_blobs is None:
            continue
        for index, (src, dst) in enumerate(zip(from_blobs, blobs)):
            values = backend.to_host(src.data)
            if conversion and index == 0:
                if conversion.transpose:
                    values = values.T
                values = np.ascontiguousarray(values).reshape(dst.shape)
            elif values.size != dst.count:
                raise NetError(f"cannot transplant param {index} of layer '{name}': {values.shape} vs {dst.shape}")
            dst.data[...] = backend.to_device(values.reshape(dst.shape), dst.xp)


def fc_to_conv(model, weights=None, layers=None, suffix="-conv", input_shape=None):
    """Convert `model` (prototxt path or NetParameter) with its `weights`.

    Returns (converted NetParameter, converted Net with the weights carried
    over, the Conversions). `input_shape` replaces the Input layer's shape in
    the converted net (e.g. 1,3,451,451 for a map of scores).
    """
    net_param = formats.read_net(model)
    _layers_to_convert(net_param, layers)  # fail before loading (possibly large) weights
    source = Net(net_param, TEST, weights=weights)
    converted, conversions = fc_to_conv_param(net_param, _bottom_shapes(source), layers, suffix)
    if input_shape is not None:
        _set_input_shape(converted, input_shape)
    target = Net(converted, TEST)
    transplant(source, target, conversions)
    return converted, target, conversions
