"""Convolution through cuDNN against the im2col + cuBLAS path, on the GPU, in float32."""

import numpy as np
import pytest

from engine import backend
from engine.cuda import cudnn
from layer_check import build_layer

pytestmark = pytest.mark.gpu
RNG = np.random.default_rng(11)

GEOMETRIES = [
    ("num_output: 8 kernel_size: 3 pad: 1", (4, 5, 9, 9)),
    ("num_output: 8 kernel_size: 11 stride: 4", (2, 3, 35, 35)),                # conv1 of AlexNet, small
    ("num_output: 6 group: 2 kernel_size: 5 pad: 2", (2, 4, 8, 8)),              # AlexNet's groups
    ("num_output: 8 group: 8 kernel_size: 3 pad: 1 stride: 2", (3, 8, 10, 10)),  # depthwise (MobileNet)
    ("num_output: 7 kernel_size: 1", (2, 6, 5, 5)),                              # NIN / bottleneck 1x1
    ("num_output: 4 kernel_size: 3 dilation: 2 pad: 2", (2, 3, 9, 9)),
    ("num_output: 3 kernel_h: 3 kernel_w: 1 pad_h: 1 pad_w: 0 stride_h: 1 stride_w: 2", (2, 2, 6, 7)),
    ("num_output: 4 kernel_size: 3 bias_term: false", (2, 3, 5, 5)),
]


def conv_text(params):
    return (f'type: "Convolution" convolution_param {{ {params} weight_filler {{ type: "gaussian" std: 0.5 }} '
            'bias_filler { type: "gaussian" std: 0.5 } }')


def run(text, x, weights, dy, use_cudnn):
    import cupy

    cudnn.ENABLED = use_cudnn
    try:
        layer, bottom, top = build_layer(text, [x], dtype=np.float32, xp=cupy)
        for mine, value in zip(layer.blobs, weights):
            mine.data[...] = cupy.asarray(value)
            mine.diff[...] = 1.0  # Caffe accumulates parameter gradients: the 1 must stay
        layer.run_forward(bottom, top)
        top[0].diff[...] = cupy.asarray(dy)
        bottom[0].diff[...] = np.nan  # every element must be written
        layer.backward(top, [True], bottom)
        return [a.get() for a in (top[0].data, bottom[0].diff, *(b.diff for b in layer.blobs))]
    finally:
        cudnn.ENABLED = True


@pytest.mark.parametrize("params,shape", GEOMETRIES)
def test_cudnn_matches_im2col(params, shape):
    if cudnn.frontend() is None:
        pytest.skip("the cuDNN frontend package (nvidia-cudnn-frontend) is not installed")
    backend.set_mode_gpu()
    text = conv_text(params)
    x = RNG.standard_normal(shape).astype(np.float32)
    probe, _, probe_top = build_layer(text, [x], dtype=np.float32)
    weights = [RNG.standard_normal(b.shape).astype(np.float32) for b in probe.blobs]
    dy = RNG.standard_normal(probe_top[0].shape).astype(np.float32)
    layer_plan = cudnn.plan("forward", shape, probe.blobs[0].shape, probe_top[0].shape, probe.pad, probe.stride,
                            probe.dilation, np.float32)
    assert layer_plan is not None, "cuDNN refused a geometry it supports"
    ours = run(text, x, weights, dy, use_cudnn=True)
    reference = run(text, x, weights, dy, use_cudnn=False)
    for name, mine, theirs in zip(("top", "bottom diff", "weight diff", "bias diff"), ours, reference):
        assert np.isfinite(mine).all(), name
        error = np.linalg.norm(mine - theirs) / np.linalg.norm(theirs)
        assert error < 1e-5, f"{name}: relative error {error:.2e}"


def test_tf32_changes_plans_not_shapes():
    if cudnn.frontend() is None:
        pytest.skip("the cuDNN frontend package (nvidia-cudnn-frontend) is not installed")
    backend.set_mode_gpu()
    args = ("forward", (2, 3, 8, 8), (4, 3, 3, 3), (2, 4, 8, 8), (1, 1), (1, 1), (1, 1), np.float32)
    try:
        backend.set_tf32(True)
        fast = cudnn.plan(*args)
    finally:
        backend.set_tf32(False)
    exact = cudnn.plan(*args)
    assert fast is not None and exact is not None and fast is not exact
