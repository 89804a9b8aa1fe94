"""pycaffe's coord_map: how spatial coordinates move through a NetSpec's layers.

Each layer maps an input coordinate x to an output coordinate a * x + b on
its spatial axes (from `axis` on). Composing these maps along the graph
relates any two tops, which is what aligning a score map with the input needs
(FCN's Crop offsets): `crop(top_from, top_to)` builds the Crop layer that cuts
`top_from` to the extent of `top_to`.

Maps are (axis, a, b); axis None means the layer works pointwise and fits any
axis. The errors raised are pycaffe's (RuntimeError for tops with no spatial
path between them, AssertionError for crops that cannot be made), since
scripts written for it catch those.
"""

import numpy as np

from .net_spec import layers as L

PASS_THROUGH_LAYERS = ["AbsVal", "BatchNorm", "Bias", "BNLL", "Dropout", "Eltwise", "ELU", "Log", "LRN",
                       "Exp", "MVN", "Power", "ReLU", "PReLU", "Scale", "Sigmoid", "Split", "TanH",
                       "Threshold"]


class UndefinedMapException(Exception):
    """The layer has no coordinate mapping (InnerProduct, for instance)."""


class AxisMismatchException(Exception):
    """Two maps act on different first spatial axes and cannot be composed."""


def conv_params(fn):
    """(axis, stride, effective kernel extent, pad) of a Convolution-like or Pooling Function."""
    params = fn.params.get("convolution_param", fn.params)
    legacy = {"pad_h", "pad_w", "kernel_h", "kernel_w", "stride_h", "stride_w"} & set(params)
    if legacy:
        raise AssertionError(f"cropping does not support legacy _h/_w params ({sorted(legacy)})")
    axis = params.get("axis", 1)
    kernel = np.array(params["kernel_size"], ndmin=1)
    dilation = np.array(params.get("dilation", 1), ndmin=1)
    stride = np.array(params.get("stride", 1), ndmin=1)
    pad = np.array(params.get("pad", 0), ndmin=1)
    return axis, stride, (kernel - 1) * dilation + 1, pad


def crop_params(fn):
    """(axis, offset) of a Crop Function, with Caffe's defaults (axis 2, offset 0)."""
    params = fn.params.get("crop_param", fn.params)
    return params.get("axis", 2), np.array(params.get("offset", 0), ndmin=1)


def coord_map(fn):
    """The (axis, scale, shift) map from a layer's bottom coordinates to its top's."""
    if fn.type_name in ("Convolution", "Pooling", "Im2col"):
        axis, stride, extent, pad = conv_params(fn)
        return axis, 1 / stride, (pad - (extent - 1) / 2) / stride
    if fn.type_name == "Deconvolution":
        axis, stride, extent, pad = conv_params(fn)
        return axis, stride, (extent - 1) / 2 - pad
    if fn.type_name in PASS_THROUGH_LAYERS:
        return None, 1, 0
    if fn.type_name == "Crop":
        axis, offset = crop_params(fn)
        # Crop's axis counts the batch axis; the maps count from the first non-coordinate axis.
        return axis - 1, 1, -offset
    raise UndefinedMapException(fn.type_name)


def compose(base_map, next_map):
    """Follow `base_map` by `next_map`: scales multiply, the second shift is scaled by the first."""
    axis1, a1, b1 = base_map
    axis2, a2, b2 = next_map
    if axis1 is None:
        axis = axis2
    elif axis2 is None or axis1 == axis2:
        axis = axis1
    else:
        raise AxisMismatchException(f"axes {axis1} and {axis2}")
    return axis, a1 * a2, a1 * b2 + b1


def inverse(coord_map):
    """The map that undoes `coord_map` (output coordinates back to input ones)."""
    axis, a, b = coord_map
    return axis, 1 / a, -b / a


def _mappable_bottoms(top):
    # Every bottom of a layer maps alike, except Crop's second bottom, which only gives the size.
    bottoms = top.fn.inputs
    return bottoms[:1] if top.fn.type_name == "Crop" else bottoms


def _walk_back(start, stop_at=None):
    """Maps from every ancestor of `start` to `start`; with `stop_at`, return the
    map for the first ancestor found in that dict (and that ancestor)."""
    maps = {start: (None, 1, 0)}
    frontier = [start]
    while frontier:
        top = frontier.pop()
        if stop_at is not None and top in stop_at:
            return maps, top
        try:
            step = coord_map(top.fn)
        except UndefinedMapException:
            continue
        for bottom in _mappable_bottoms(top):
            maps[bottom] = compose(maps[top], step)
            frontier.append(bottom)
    return maps, None


def coord_map_from_to(top_from, top_to):
    """The (axis, a, b) map taking coordinates of `top_to` to those of `top_from`,
    through their nearest common ancestor; RuntimeError if none is spatially connected."""
    from_maps, _ = _walk_back(top_from)
    to_maps, common = _walk_back(top_to, stop_at=from_maps)
    if common is None:
        raise RuntimeError("Could not compute map between tops; are they connected by spatial layers?")
    return compose(to_maps[common], inverse(from_maps[common]))


def crop(top_from, top_to):
    """A Crop layer cutting `top_from` to `top_to`'s extent, with axis and offsets from the map."""
    axis, a, b = coord_map_from_to(top_from, top_to)
    a, b = np.asarray(a), np.asarray(b)
    if not (a == 1).all():
        raise AssertionError(f"scale mismatch on crop (a = {a})")
    if not (b <= 0).all():
        raise AssertionError(f"cannot crop negative offset (b = {b})")
    if not (np.round(b) == b).all():
        raise AssertionError(f"cannot crop noninteger offset (b = {b})")
    offsets = [int(v) for v in -np.round(b).astype(int)]
    return L.Crop(top_from, top_to, crop_param=dict(axis=axis + 1, offset=offsets))
