"""bench/torch_from_prototxt.py computes what our engine computes, layer type by layer type.

The benchmark's ratios mean something only if the torch model does the same
work as ours; these tests run small nets through both, with the same weights
and inputs, and compare outputs, bottom diffs and parameter diffs.
"""

import sys
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import text_format

import engine
from engine import caffe_pb2

torch = pytest.importorskip("torch", reason="PyTorch is not installed (pip install torch==2.13.0)")

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

from bench_nets import init_weights, training_from_deploy, without_dropout  # noqa: E402
from torch_from_prototxt import TorchNet, caffe_pooled_size, torch_pooled_size  # noqa: E402


def _needs(*types):
    missing = sorted(set(types) - set(engine.layer_type_list()))
    if missing:
        pytest.skip(f"engine has no {', '.join(missing)} layer yet")


def _net(body, inputs):
    text = "force_backward: true\n"
    for name, shape in inputs.items():
        dims = " ".join(f"dim: {d}" for d in shape)
        text += f'layer {{ name: "{name}" type: "Input" top: "{name}" input_param {{ shape {{ {dims} }} }} }}\n'
    return text_format.Parse(text + body, caffe_pb2.NetParameter())


def _close(ours, theirs, what, tol=2e-5):
    ours, theirs = np.asarray(ours), np.asarray(theirs)
    assert ours.shape == theirs.shape, f"{what}: shape {ours.shape} vs torch {theirs.shape}"
    scale = max(float(np.abs(theirs).max()), 1e-6)
    err = float(np.abs(ours - theirs).max()) / scale
    assert err <= tol, f"{what}: relative error {err:.2e}"


def compare(body, inputs, phase=engine.TRAIN, labels=(), seed=0):
    """Forward and backward through ours and torch; compare outputs, input diffs, parameter diffs."""
    param = _net(body, inputs)
    net = engine.Net(param, phase)
    init_weights(net, seed)
    rng = np.random.default_rng(seed + 1)
    values = {}
    for name, shape in inputs.items():
        if name in labels:
            values[name] = rng.integers(0, labels[name], shape).astype(np.float32)
        else:
            values[name] = rng.standard_normal(shape).astype(np.float32)
        net.blobs[name].data[...] = values[name]
    net.forward()
    top_diffs = {}
    for name in net.outputs:
        blob = net.blobs[name]
        weight = net.blob_loss_weights[name]
        top_diffs[name] = np.full(blob.shape, weight, np.float32) if weight else \
            rng.standard_normal(blob.shape).astype(np.float32)
        blob.diff[...] = top_diffs[name]
    net.backward()

    weights = {layer: [blob.data.copy() for blob in blobs] for layer, blobs in net.params.items()}
    model = TorchNet(param, weights, phase)
    tensors = {name: torch.tensor(v, requires_grad=name not in labels) for name, v in values.items()}
    blobs = model(tensors)
    objective = sum((blobs[name] * torch.from_numpy(diff)).sum() for name, diff in top_diffs.items())
    objective.backward()
    for name in net.outputs:
        _close(net.blobs[name].data, blobs[name].detach().numpy(), f"top '{name}'")
    for name, tensor in tensors.items():
        if name not in labels:
            _close(net.blobs[name].diff, tensor.grad.numpy(), f"bottom diff '{name}'")
    for layer, params in model.caffe_params().items():
        for index, tensor in enumerate(params):
            if tensor.grad is not None:
                _close(net.params[layer][index].diff, tensor.grad.numpy(), f"param diff {layer}/{index}")
    return net, model


CONV_CASES = [
    "num_output: 4 kernel_size: 3",
    "num_output: 4 kernel_size: 3 stride: 2 pad: 1",
    "num_output: 6 kernel_size: 3 group: 2 pad: 1",
    "num_output: 4 kernel_size: 3 dilation: 2 pad: 2",
    "num_output: 4 kernel_h: 3 kernel_w: 2 stride_h: 2 stride_w: 1 pad_h: 1 pad_w: 0 bias_term: false",
]


@pytest.mark.parametrize("conv", CONV_CASES)
def test_convolution(conv):
    _needs("Convolution")
    compare(f'layer {{ name: "c" type: "Convolution" bottom: "x" top: "y" convolution_param {{ {conv} }} }}',
            {"x": (2, 4, 7, 6)})


POOL_CASES = [  # (size, kernel, stride, pad): ceil rounding, the clip rule, AVE divisors at the edges
    (5, 2, 2, 1), (7, 3, 2, 1), (6, 3, 2, 0), (8, 3, 3, 1), (6, 2, 2, 0), (9, 3, 2, 0),
]


@pytest.mark.parametrize("method", ["MAX", "AVE"])
@pytest.mark.parametrize("size,kernel,stride,pad", POOL_CASES)
def test_pooling(method, size, kernel, stride, pad):
    _needs("Pooling")
    compare(f'layer {{ name: "p" type: "Pooling" bottom: "x" top: "y" pooling_param {{ pool: {method} '
            f'kernel_size: {kernel} stride: {stride} pad: {pad} }} }}', {"x": (2, 3, size, size + 1)})


@pytest.mark.parametrize("method", ["MAX", "AVE"])
def test_global_pooling(method):
    _needs("Pooling")
    compare(f'layer {{ name: "p" type: "Pooling" bottom: "x" top: "y" '
            f'pooling_param {{ pool: {method} global_pooling: true }} }}', {"x": (2, 3, 4, 5)})


def test_pooled_size_rules():
    assert caffe_pooled_size(5, 2, 2, 1) == 3  # Caffe drops the window starting in the padding
    assert caffe_pooled_size(6, 3, 2, 0) == 3  # ceil: (6 - 3) / 2 -> 2, plus one
    assert caffe_pooled_size(5, 1, 3, 0) == 3 and torch_pooled_size(5, 1, 3, 0) == 2


def test_pooling_caffe_keeps_a_window_torch_drops():
    _needs("Pooling")
    param = _net('layer { name: "p" type: "Pooling" bottom: "x" top: "y" '
                 'pooling_param { pool: MAX kernel_size: 1 stride: 3 } }', {"x": (1, 1, 5, 5)})
    model = TorchNet(param, {})
    with pytest.raises(NotImplementedError, match="Caffe keeps 3 windows"):
        model({"x": torch.zeros(1, 1, 5, 5)})


@pytest.mark.parametrize("region", ["ACROSS_CHANNELS", "WITHIN_CHANNEL"])
def test_lrn(region):
    _needs("LRN")
    compare(f'layer {{ name: "n" type: "LRN" bottom: "x" top: "y" lrn_param {{ local_size: 3 alpha: 0.5 '
            f'beta: 0.75 k: 2 norm_region: {region} }} }}', {"x": (2, 5, 4, 4)})


@pytest.mark.parametrize("phase", [engine.TRAIN, engine.TEST])
def test_batchnorm_scale(phase):
    _needs("BatchNorm", "Scale")
    compare('layer { name: "bn" type: "BatchNorm" bottom: "x" top: "x" '
            '  param { lr_mult: 0 } param { lr_mult: 0 } param { lr_mult: 0 } }\n'
            'layer { name: "sc" type: "Scale" bottom: "x" top: "x" scale_param { bias_term: true } }',
            {"x": (4, 3, 3, 2)}, phase=phase)


@pytest.mark.parametrize("eltwise", ["operation: SUM coeff: 0.5 coeff: -2", "operation: PROD", "operation: MAX"])
def test_eltwise(eltwise):
    _needs("Eltwise")
    compare(f'layer {{ name: "e" type: "Eltwise" bottom: "a" bottom: "b" top: "y" eltwise_param {{ {eltwise} }} }}',
            {"a": (2, 3, 4), "b": (2, 3, 4)})


def test_concat_flatten_inner_product_relu_softmax():
    _needs("Concat", "Flatten")
    compare('layer { name: "c" type: "Concat" bottom: "a" bottom: "b" top: "c" }\n'
            'layer { name: "f" type: "Flatten" bottom: "c" top: "f" }\n'
            'layer { name: "r" type: "ReLU" bottom: "f" top: "f" relu_param { negative_slope: 0.1 } }\n'
            'layer { name: "ip" type: "InnerProduct" bottom: "f" top: "ip" inner_product_param { num_output: 5 } }\n'
            'layer { name: "s" type: "Softmax" bottom: "ip" top: "s" }',
            {"a": (3, 2, 2, 2), "b": (3, 1, 2, 2)})


@pytest.mark.parametrize("normalization", ["VALID", "BATCH_SIZE", "FULL", "NONE"])
def test_softmax_with_loss(normalization):
    compare('layer { name: "ip" type: "InnerProduct" bottom: "x" top: "ip" inner_product_param { num_output: 4 } }\n'
            'layer { name: "d" type: "Dropout" bottom: "ip" top: "ip" }\n'
            f'layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" '
            f'loss_param {{ normalization: {normalization} }} }}',
            {"x": (5, 6), "label": (5,)}, phase=engine.TEST, labels={"label": 4})


def test_training_from_deploy_and_without_dropout():
    deploy = text_format.Parse(
        'layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 10 dim: 3 dim: 224 dim: 224 } } }'
        'layer { name: "pool" type: "Pooling" bottom: "data" top: "pool" '
        '  pooling_param { pool: AVE kernel_size: 7 stride: 1 } }'
        'layer { name: "drop" type: "Dropout" bottom: "pool" top: "dropped" }'
        'layer { name: "fc" type: "InnerProduct" bottom: "dropped" top: "fc" inner_product_param { num_output: 3 } }'
        'layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob" }', caffe_pb2.NetParameter())
    net = training_from_deploy(deploy, batch=2, size=9)
    assert list(net.layer[0].input_param.shape[0].dim) == [2, 3, 9, 9]
    assert net.layer[1].type == "Input" and list(net.layer[1].input_param.shape[0].dim) == [2]
    assert net.layer[2].pooling_param.global_pooling and not net.layer[2].pooling_param.HasField("kernel_size")
    loss = net.layer[-1]
    assert loss.type == "SoftmaxWithLoss" and list(loss.bottom) == ["fc", "label"] and list(loss.top) == ["loss"]
    plain = without_dropout(net)
    assert [layer.type for layer in plain.layer].count("Dropout") == 0
    assert list(plain.layer[-2].bottom) == ["pool"]
