"""Ten-crop testing, as the AlexNet paper reports its results (Krizhevsky et al. 2012, section 4.1):
the four corner crops and the centre crop of each image, and their mirror images, go through
the net, and the predictions of the ten are averaged. `tools/test --oversample` scores a net so.

The net is rewritten, not the data layers: a data layer with crop_size c delivers the whole
transformed image (crop_size 0, mirror off; a mean file is then subtracted at full size, which
for every crop equals Caffe's mean read at the crop's positions), and a Python layer (TenCrop)
after it cuts the ten c x c views, view by view, into a batch ten times as large. Where a blob
computed from those views meets a blob that is not (the label, at Accuracy or
SoftmaxWithLoss), or leaves the net, a second Python layer (CropAverage) averages its ten
views back to one row per image: a Softmax layer's output is averaged as it is; scores read
only by Accuracy, SoftmaxWithLoss, Softmax or ArgMax are averaged as softmax probabilities p
and passed on as log p, so Accuracy ranks by p and SoftmaxWithLoss gives -log p[label], the
loss of the averaged prediction; any other blob is averaged as it is.
"""

import numpy as np

from .. import caffe_pb2
from ..errors import CaffeError
from ..layers.base import Layer
from ..netgraph import filter_net

VIEWS = 10
SOFTMAX_READERS = {"Accuracy", "SoftmaxWithLoss", "Softmax", "ArgMax"}
DATA_TYPES_WITH_TRANSFORM = {"Data", "ImageData", "WindowData", "MemoryData", "AnnotatedData"}


def crop_offsets(height, width, crop):
    """(top, left) of the four corners and the centre ((H - c) // 2, Caffe's centre crop)."""
    bottom, right = height - crop, width - crop
    return [(0, 0), (0, right), (bottom, 0), (bottom, right), (bottom // 2, right // 2)]


class TenCrop(Layer):
    """(N, C, H, W) to (10 N, C, c, c): view v of image n at row v * N + n; views 5..9 mirror 0..4."""

    def setup(self, bottom, top):
        self.crop = int(self.param_str)

    def reshape(self, bottom, top):
        count, channels, height, width = bottom[0].data.shape
        if height < self.crop or width < self.crop:
            raise self.error(f"crop_size {self.crop} is larger than the image ({height} x {width})")
        top[0].reshape(VIEWS * count, channels, self.crop, self.crop)

    def forward(self, bottom, top):
        images, c = bottom[0].data, self.crop
        count = images.shape[0]
        views = [images[:, :, h:h + c, w:w + c] for h, w in crop_offsets(*images.shape[2:], c)]
        views += [view[..., ::-1] for view in views]
        out = top[0].data
        for index, view in enumerate(views):
            out[index * count:(index + 1) * count] = view


class CropAverage(Layer):
    """(10 N, ...) to (N, ...): the mean over the ten views, of softmax probabilities (returned as
    their log) when param_str is "softmax", else of the values themselves."""

    def setup(self, bottom, top):
        self.softmax = self.param_str == "softmax"

    def reshape(self, bottom, top):
        shape = bottom[0].data.shape
        if shape[0] % VIEWS:
            raise self.error(f"expected ten views per image, got a batch of {shape[0]}")
        top[0].reshape(shape[0] // VIEWS, *shape[1:])

    def forward(self, bottom, top):
        values = bottom[0].data.astype(np.float64)
        views = values.reshape(VIEWS, -1, *values.shape[1:])
        if self.softmax:
            shifted = np.exp(views - views.max(axis=2, keepdims=True))
            probabilities = (shifted / shifted.sum(axis=2, keepdims=True)).mean(axis=0)
            top[0].data[...] = np.log(np.maximum(probabilities, np.finfo(np.float32).tiny))
        else:
            top[0].data[...] = views.mean(axis=0)


def _python_layer(name, layer_class, bottom, top, param_str):
    layer = caffe_pb2.LayerParameter(name=name, type="Python", bottom=[bottom], top=[top])
    layer.python_param.module = __name__
    layer.python_param.layer = layer_class
    layer.python_param.param_str = param_str
    return layer


def ten_crop_net(param, state):
    """The NetParameter `param`, filtered for `state`, rewritten to score ten crops per image
    (see the module docstring). Returns (net, [(data layer, crop size)], [(blob, how averaged)])."""
    net = filter_net(param, state)
    layers = list(net.layer)
    out, crops = [], []
    for layer in layers:
        if layer.type in DATA_TYPES_WITH_TRANSFORM and layer.transform_param.crop_size and layer.top:
            crop = int(layer.transform_param.crop_size)
            image = layer.top[0]
            changed = caffe_pb2.LayerParameter()
            changed.CopyFrom(layer)
            changed.transform_param.crop_size = 0
            changed.transform_param.mirror = False
            changed.top[0] = f"{image}_full"
            out += [changed, _python_layer(f"{layer.name}_ten_crop", "TenCrop", f"{image}_full", image, str(crop))]
            crops.append((layer.name, crop))
        else:
            out.append(layer)
    if not crops:
        raise CaffeError("--oversample needs a data layer with transform_param crop_size (the crops are cut "
                         "from its images)")
    averaged = _average_points(out)
    net.ClearField("layer")
    net.layer.extend(_insert_averages(out, averaged))
    return net, crops, [(blob, "softmax" if how == "softmax" else "mean") for blob, how in averaged.items()]


def _average_points(layers):
    """{blob: "softmax" | "mean"}: the view-dependent blobs that meet other blobs or leave the net."""
    varying, producer, last, points = set(), {}, {}, []
    for index, layer in enumerate(layers):
        if layer.type == "Python" and layer.python_param.layer == "TenCrop":
            varying.update(layer.top)
        elif any(b in varying for b in layer.bottom):
            if all(b in varying for b in layer.bottom):
                varying.update(layer.top)
            else:  # it reads the averaged blobs: its tops have one row per image
                points += [b for b in layer.bottom if b in varying and b not in points]
                varying.difference_update(layer.top)
        else:
            varying.difference_update(layer.top)
        for t in layer.top:
            producer[t], last[t] = layer.type, index
    consumed = {b for layer in layers for b in layer.bottom}
    for layer in layers:
        for t in layer.top:
            if t in varying and t not in consumed and t not in points:
                points.append(t)
    how = {}
    for blob in points:
        # the layers that will read the averaged blob: those after its last producer
        readers = [layer.type for layer in layers[last[blob] + 1:] if blob in layer.bottom]
        if producer.get(blob) == "Softmax":
            how[blob] = "mean"
        elif readers and set(readers) <= SOFTMAX_READERS:
            how[blob] = "softmax"
        else:
            how[blob] = "mean"
    return how


def _insert_averages(layers, averaged):
    """Up to each averaged blob's last producer (in-place layers included) the blob is called
    BLOB_views; a CropAverage after that producer writes BLOB, which the layers after it read."""
    last = {}
    for index, layer in enumerate(layers):
        for t in layer.top:
            if t in averaged:
                last[t] = index
    result = []
    for index, layer in enumerate(layers):
        early = [blob for blob, end in last.items() if index <= end and (blob in layer.top or blob in layer.bottom)]
        if early:
            layer = _renamed(layer, early)
        result.append(layer)
        for blob in [t for t in layers[index].top if last.get(t) == index]:
            result.append(_python_layer(f"{blob}_crop_average", "CropAverage", f"{blob}_views", blob, averaged[blob]))
    return result


def _renamed(layer, blobs):
    changed = caffe_pb2.LayerParameter()
    changed.CopyFrom(layer)
    for field in (changed.bottom, changed.top):
        for i, name in enumerate(field):
            if name in blobs:
                field[i] = f"{name}_views"
    return changed
