"""Shared helpers for layer tests: build one layer from prototxt text, run it,
and check its backward against central differences in float64.

Usage:
    check_gradient('type: "ReLU"', [x])                         # all bottoms and params
    check_gradient(text, [x, labels], bottoms=[0])                # skip the label bottom
    check_gradient(text, [x], kink=0.0, kink_range=1e-3)          # skip inputs near a kink
"""

import numpy as np

from engine import backend, caffe_pb2
from engine.blob import Blob
from engine.formats import parse_text
from engine.layers import layer_class


def gpu_present():
    return backend.gpu_available()


def layer_param(text, phase=caffe_pb2.TEST, name="layer"):
    param = parse_text(text, caffe_pb2.LayerParameter(), "<test layer>")
    if not param.name:
        param.name = name
    if not param.HasField("phase"):
        param.phase = phase
    return param


def make_blobs(arrays, dtype=np.float64, xp=np):
    blobs = []
    for array in arrays:
        array = np.asarray(array)
        blob = Blob(array.shape, dtype=dtype, xp=xp)
        blob.data[...] = xp.asarray(array, dtype=dtype)
        blobs.append(blob)
    return blobs


def build_layer(text, bottoms, num_tops=1, phase=caffe_pb2.TEST, dtype=np.float64, xp=np):
    """Set up a layer on float64 blobs (params converted to float64 too)."""
    param = layer_param(text, phase)
    layer = layer_class(param.type)(param)
    bottom = make_blobs(bottoms, dtype, xp)
    top = [Blob((), dtype=dtype, xp=xp) for _ in range(num_tops)]
    layer.set_up(bottom, top)
    for i, blob in enumerate(layer.blobs):
        if blob.dtype != dtype:
            converted = Blob(blob.shape, dtype=dtype, xp=xp)
            converted.data[...] = xp.asarray(blob.data, dtype=dtype)
            layer.blobs[i] = converted
    return layer, bottom, top


def make_data_layer(text, num_tops=2, phase=caffe_pb2.TEST):
    """Set up a data layer (no bottoms) on fresh top blobs."""
    param = layer_param(text, phase)
    layer = layer_class(param.type)(param)
    top = [Blob() for _ in range(num_tops)]
    layer.set_up([], top)
    return layer, top


def data_forward(layer, top):
    """One forward of a data layer: copies of its tops."""
    layer.run_forward([], top)
    return [t.data.copy() for t in top]


def forward(layer, bottom, top, seed=None):
    if seed is not None:
        backend.set_random_seed(seed)
    layer.run_forward(bottom, top)
    return [t.data.copy() for t in top]


def _objective(layer, bottom, top, weights, seed):
    forward(layer, bottom, top, seed)
    return sum(float((t.data * w).sum()) for t, w in zip(top, weights))


def _sample(size, limit, rng):
    if size <= limit:
        return np.arange(size)
    return rng.choice(size, limit, replace=False)


def check_gradient(text, bottoms, num_tops=1, bottoms_checked=None, params_checked=None,
                   phase=caffe_pb2.TEST, eps=1e-5, rtol=1e-4, atol=1e-6, kink=None, kink_range=None,
                   seed=7, max_checks=150, top_weights=None):
    """Compare analytic gradients (bottoms and params) with central differences.

    The objective is sum_k <top_k, w_k> with fixed random weights w_k, so every
    top and every element takes part. Raises AssertionError naming the blob
    and element on a mismatch.
    """
    rng = np.random.default_rng(seed)
    layer, bottom, top = build_layer(text, bottoms, num_tops, phase)
    forward(layer, bottom, top, seed)
    weights = top_weights or [rng.standard_normal(t.shape) for t in top]
    if bottoms_checked is None:
        bottoms_checked = list(range(len(bottom)))
    if params_checked is None:
        params_checked = list(range(len(layer.blobs)))

    # Analytic: top diffs = weights; param diffs start at zero (layers accumulate).
    for blob in layer.blobs:
        blob.diff[...] = 0
    for t, w in zip(top, weights):
        t.diff[...] = w
    propagate = [i in bottoms_checked for i in range(len(bottom))]
    layer.param_propagate_down = [i in params_checked for i in range(len(layer.blobs))]
    layer.run_backward(top, propagate, bottom)
    targets = [(f"bottom {i}", bottom[i]) for i in bottoms_checked]
    targets += [(f"param {i}", layer.blobs[i]) for i in params_checked]
    analytic = {name: blob.diff.copy() for name, blob in targets}

    for name, blob in targets:
        flat = blob.data.reshape(-1)
        grad = analytic[name].reshape(-1)
        for index in _sample(flat.size, max_checks, rng):
            original = float(flat[index])
            if kink is not None and abs(original - kink) < kink_range:
                continue
            flat[index] = original + eps
            plus = _objective(layer, bottom, top, weights, seed)
            flat[index] = original - eps
            minus = _objective(layer, bottom, top, weights, seed)
            flat[index] = original
            numeric = (plus - minus) / (2 * eps)
            scale = max(abs(numeric), abs(float(grad[index])), 1.0)
            if abs(numeric - float(grad[index])) > atol + rtol * scale:
                raise AssertionError(f"{layer.type} gradient of {name} at flat index {index}: "
                                     f"analytic {float(grad[index])!r}, numeric {numeric!r}")
    return layer
