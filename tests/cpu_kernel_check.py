"""Run a layer through the NumPy path and through engine/cpu's kernels, and compare everything.

`compare_layer` builds the layer twice with the same parameters, runs forward
and backward (top diff drawn at random) with the kernels off and on, and
returns the largest relative differences of the tops, bottom diffs and
parameter diffs. `spy` counts the calls a kernel module receives, so that a
test fails when the layer never reached the kernel it is meant to check.
"""

import contextlib

import numpy as np
from layer_check import layer_param, make_blobs

from engine import caffe_pb2, cpu
from engine.blob import Blob
from engine.layers.base import layer_class


@contextlib.contextmanager
def kernels(enabled):
    previous = cpu.set_enabled(enabled)
    try:
        yield
    finally:
        cpu.set_enabled(previous)


@contextlib.contextmanager
def spy(name):
    """Yield a dict counting the calls of each function of engine.cpu.<name>."""
    module = cpu.kernels(name)
    counts = {}
    originals = {key: value for key, value in vars(module).items()
                 if callable(value) and hasattr(value, "py_func") and not key.startswith("_")}
    for key, function in originals.items():
        def counted(*args, _function=function, _key=key):
            counts[_key] = counts.get(_key, 0) + 1
            return _function(*args)
        setattr(module, key, counted)
    try:
        yield counts
    finally:
        for key, function in originals.items():
            setattr(module, key, function)


def _run(text, bottoms, dtype, num_tops, phase, in_place, params, top_diff_seed, propagate):
    param = layer_param(text, phase)
    layer = layer_class(param.type)(param)
    bottom = make_blobs(bottoms, dtype)
    top = bottom[:1] if in_place else [Blob((), dtype=dtype) for _ in range(num_tops)]
    layer.set_up(bottom, top)
    for index, blob in enumerate(layer.blobs):
        if blob.dtype != dtype:  # parameters in the bottoms' precision, as build_layer makes them
            converted = Blob(blob.shape, dtype=dtype)
            converted.data[...] = blob.data
            layer.blobs[index] = converted
    for blob, values in zip(layer.blobs, params or []):
        blob.data[...] = values
    for blob in layer.blobs:
        blob.diff[...] = 0
    layer.run_forward(bottom, top)
    outputs = [t.data.copy() for t in top]
    rng = np.random.default_rng(top_diff_seed)
    for t in top:
        t.diff[...] = rng.standard_normal(t.shape)
    layer.run_backward(top, propagate or [True] * len(bottom), bottom)
    return outputs, [b.diff.copy() for b in bottom], [blob.diff.copy() for blob in layer.blobs], layer


def compare_layer(text, bottoms, dtype, num_tops=1, phase=caffe_pb2.TRAIN, in_place=False, params=None,
                  propagate=None):
    """Largest relative difference (tops, bottom diffs, param diffs) between the two paths."""
    with kernels(False):
        want = _run(text, bottoms, dtype, num_tops, phase, in_place, params, 5, propagate)
    if params is None:
        params = [blob.data.copy() for blob in want[3].blobs]
    with kernels(True):
        got = _run(text, bottoms, dtype, num_tops, phase, in_place, params, 5, propagate)
    worst = 0.0
    for expected, actual in zip(want[:3], got[:3]):
        for a, b in zip(expected, actual):
            assert a.shape == b.shape and a.dtype == b.dtype
            scale = max(float(np.abs(a).max()), 1e-30) if a.size else 1.0
            worst = max(worst, float(np.abs(a - b).max()) / scale if a.size else 0.0)
    return worst


def tolerance(dtype):
    return 1e-12 if dtype == np.float64 else 2e-6
