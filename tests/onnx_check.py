"""Shared helpers for the ONNX export tests: nets filled with random weights, and the
exported model's agreement with the engine on every blob.

Convolution and inner-product weights are He-scaled draws; BatchNorm's
statistics and scale factor and BN's and Normalize's blobs are drawn from
[0.5, 1.5], Scale's factors from [0.5, 1] and biases from N(0, 0.01).
The statistics are deliberately not those of the data: normalizing each
channel of a random net to its own statistics makes the net chaotic, so that
float rounding (1e-7) grows to differences of 1e-3 within ONNX Runtime
alone. Scale's factors below 1 keep the residual nets' sums from growing
block after block (in SE-ResNet, gates on sums of 1e3 amplify rounding the
same way); factors much below 1 shrink DenseNet's late features until the
biases cancel them. Every blob is
an output of the tested model, so a saturated final Softmax hides nothing.
"""

import math

import numpy as np

from engine import backend, formats
from engine.export import onnx_export
from engine.net import TEST, Net


def deploy_param(path, size=None, batch=1):
    """The net at `path` with its Input layers' (or input header's) batch and spatial size set."""
    param = formats.read_net(path)
    shapes = [shape for layer in param.layer if layer.type == "Input" for shape in layer.input_param.shape]
    shapes += list(param.input_shape)
    for shape in shapes:
        if batch and len(shape.dim) >= 1:
            shape.dim[0] = batch
        if size and len(shape.dim) == 4:
            shape.dim[2:] = [size, size] if isinstance(size, int) else list(size)
    if param.input_dim:
        dims = list(param.input_dim)
        for start in range(0, len(dims), 4):
            if batch:
                dims[start] = batch
            if size and start + 4 <= len(dims):
                dims[start + 2:start + 4] = [size, size] if isinstance(size, int) else list(size)
        param.input_dim[:] = dims
    return param


def build(path, size=None, batch=1):
    return Net(deploy_param(path, size, batch), phase=TEST, source=str(path))


def _fill(net, rng):
    for layer in net.layers:
        for index, blob in enumerate(layer.blobs):
            blob.data[...] = backend.to_device(_draw(layer, index, blob.data.shape, rng), blob.xp)


def _draw(layer, index, shape, rng):
    if layer.type == "Scale" and index == 0:
        return rng.uniform(0.5, 1.0, shape).astype(np.float32)
    if layer.type in ("BatchNorm", "BN", "Normalize"):
        return rng.uniform(0.5, 1.5, shape).astype(np.float32)
    if index == 0 and len(shape) >= 2 and layer.type != "Embed":
        fan_in = math.prod(shape[1:]) if layer.type != "Deconvolution" else shape[0] * math.prod(shape[2:])
        return rng.standard_normal(shape, np.float32) * np.float32(math.sqrt(2.0 / max(fan_in, 1)))
    return rng.standard_normal(shape, np.float32) * np.float32(0.1)


def prepare(net, seed=0):
    """Fill the weights (see the module's docstring) and draw the inputs; returns the input feeds."""
    rng = np.random.default_rng(seed)
    _fill(net, rng)
    feeds = {}
    for name in onnx_export.input_names(net):
        feeds[name] = rng.standard_normal(net.blobs[name].shape).astype(np.float32)
    return feeds


def check_agreement(net, model, feeds, tolerance=1e-4):
    """Every output of `model` within `tolerance` relative error (max |ours - onnx| / max |ours|) of
    the engine's blob; returns {output: error}."""
    errors = onnx_export.agreement(net, model, feeds=feeds)
    bad = {name: error for name, error in errors.items() if not error <= tolerance}
    assert not bad, f"outputs beyond {tolerance} relative error: {bad}"
    return errors


def export_and_check(net, feeds, outputs=None, opset=onnx_export.DEFAULT_OPSET, tolerance=1e-4):
    """Export with every blob as an output (default), check each, and return (model, errors)."""
    model = onnx_export.export_net(net, opset, outputs=outputs or list(net.blobs))
    return model, check_agreement(net, model, feeds, tolerance)
