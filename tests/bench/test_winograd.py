"""bench/winograd.py computes what engine's Convolution layer computes (3x3, stride 1).

The candidate is offered to the layer's owner as a drop-in for those
geometries, so it is held to the layer's own results in float64: top,
bottom diff, weight and bias diffs (accumulated, not overwritten), over
pads 0-2, groups, odd and even sizes. Also checks the benchmark's what-if
patch routes exactly the supported layers to it.
"""

import sys
from pathlib import Path

import numpy as np
import pytest

from engine import caffe_pb2

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import winograd  # noqa: E402
from layer_check import build_layer  # noqa: E402

CASES = [  # (num, channels, height, width, num_output, pad, group)
    (2, 3, 7, 6, 4, 1, 1),
    (2, 4, 8, 8, 6, 0, 2),
    (3, 2, 5, 9, 4, 2, 2),
    (1, 5, 4, 4, 3, 1, 1),
    (2, 6, 3, 3, 4, 0, 1),
]


def _layer(num, channels, height, width, outputs, pad, group, rng):
    text = (f'type: "Convolution" convolution_param {{ num_output: {outputs} kernel_size: 3 pad: {pad} '
            f'group: {group} weight_filler {{ type: "gaussian" }} bias_filler {{ type: "gaussian" }} }}')
    x = rng.standard_normal((num, channels, height, width))
    layer, bottom, top = build_layer(text, [x], phase=caffe_pb2.TRAIN)
    layer.param_propagate_down = [True, True]
    return layer, bottom, top


@pytest.mark.parametrize("num,channels,height,width,outputs,pad,group", CASES)
def test_matches_engine_convolution(num, channels, height, width, outputs, pad, group):
    rng = np.random.default_rng(3)
    layer, bottom, top = _layer(num, channels, height, width, outputs, pad, group, rng)
    layer.forward(bottom, top)
    dy = rng.standard_normal(top[0].shape)
    top[0].diff[...] = dy
    prior_w, prior_b = rng.standard_normal(layer.blobs[0].shape), rng.standard_normal(layer.blobs[1].shape)
    layer.blobs[0].diff[...], layer.blobs[1].diff[...] = prior_w, prior_b
    layer.backward(top, [True], bottom)

    weight, bias, x = layer.blobs[0].data, layer.blobs[1].data, bottom[0].data
    conv = winograd.WinogradConvolution((pad, pad), group)
    y = conv.forward(x, weight, bias)
    np.testing.assert_allclose(y, top[0].data, rtol=1e-10, atol=1e-10)
    dw, db = prior_w.copy(), prior_b.copy()
    dx = conv.backward(x, dy, weight, dw, db)
    np.testing.assert_allclose(dx, bottom[0].diff, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(dw, layer.blobs[0].diff, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(db, layer.blobs[1].diff, rtol=1e-10, atol=1e-10)


def test_backward_without_forward_recomputes_and_can_skip_the_bottom():
    rng = np.random.default_rng(4)
    x, w = rng.standard_normal((2, 3, 6, 5)), rng.standard_normal((4, 3, 3, 3))
    dy = rng.standard_normal((2, 4, 6, 5))
    reference = winograd.WinogradConvolution((1, 1))
    reference.forward(x, w)
    expected = np.zeros_like(w)
    reference.backward(x, dy, w, expected)
    fresh, dw = winograd.WinogradConvolution((1, 1)), np.zeros_like(w)
    assert fresh.backward(x, dy, w, dw, need_bottom=False) is None
    np.testing.assert_allclose(dw, expected, rtol=1e-12)


def test_float32_error_is_small():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((4, 16, 13, 13)).astype(np.float32)
    w = (rng.standard_normal((8, 16, 3, 3)) / 12).astype(np.float32)
    exact = winograd.WinogradConvolution((1, 1)).forward(x.astype(np.float64), w.astype(np.float64))
    single = winograd.WinogradConvolution((1, 1)).forward(x, w)
    assert single.dtype == np.float32
    assert np.abs(single - exact).max() / np.abs(exact).max() < 1e-5


@pytest.mark.parametrize("kernel,stride,dilation,pad,expected", [
    ((3, 3), (1, 1), (1, 1), (1, 1), True),
    ((3, 3), (2, 2), (1, 1), (1, 1), False),
    ((5, 5), (1, 1), (1, 1), (2, 2), False),
    ((3, 3), (1, 1), (2, 2), (2, 2), False),
    ((3, 3), (1, 1), (1, 1), (3, 3), False),
])
def test_supported_geometry(kernel, stride, dilation, pad, expected):
    assert winograd.supported(kernel, stride, dilation, pad) is expected


def test_what_if_patch_gives_the_layers_results():
    """The patched class computes what the original did, for supported and unsupported layers."""
    from engine.layers import conv as conv_module

    rng = np.random.default_rng(6)
    cases = [(2, 3, 6, 6, 4, 1, 1), (2, 4, 5, 7, 4, 1, 2)]
    expected = []
    for case in cases + [None]:
        if case is None:  # an unsupported geometry: 5x5 stays on im2col
            text = 'type: "Convolution" convolution_param { num_output: 3 kernel_size: 5 pad: 2 ' \
                   'weight_filler { type: "gaussian" } }'
            layer, bottom, top = build_layer(text, [rng.standard_normal((2, 2, 6, 6))], phase=caffe_pb2.TRAIN)
        else:
            layer, bottom, top = _layer(*case, rng)
        expected.append((layer, bottom, top))
    originals = conv_module.ConvolutionLayer.forward, conv_module.ConvolutionLayer.backward
    results = []
    try:
        import what_if

        for patched in (False, True):
            if patched:
                what_if.patch_winograd()
            outs = []
            for layer, bottom, top in expected:
                layer.forward(bottom, top)
                top[0].diff[...] = 1.0
                for blob in layer.blobs:
                    blob.diff[...] = 0
                layer.backward(top, [True], bottom)
                outs.append([top[0].data.copy(), bottom[0].diff.copy()] + [b.diff.copy() for b in layer.blobs])
            results.append(outs)
        assert "_winograd" in expected[0][0].__dict__ and "_winograd" not in expected[2][0].__dict__
    finally:
        conv_module.ConvolutionLayer.forward, conv_module.ConvolutionLayer.backward = originals
    for before, after in zip(*results):
        for a, b in zip(before, after):
            np.testing.assert_allclose(b, a, rtol=1e-10, atol=1e-10)
