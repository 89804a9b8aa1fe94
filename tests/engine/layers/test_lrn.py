"""LRN (lrn.py): both normalization regions against their definitions, gradients, errors, GPU."""

import numpy as np
import pytest
from layer_check import build_layer, check_gradient, forward

from engine import backend
from engine.errors import LayerError

RNG = np.random.default_rng(21)


def reference_across(x, size, alpha, beta, k):
    half = (size - 1) // 2
    channels = x.shape[1]
    scale = np.empty_like(x)
    for c in range(channels):
        lo, hi = max(0, c - half), min(channels, c + half + 1)
        scale[:, c] = k + alpha / size * (x[:, lo:hi] ** 2).sum(axis=1)
    return x * scale ** -beta


def reference_within(x, size, alpha, beta):
    """Caffe's composition: AVE pooling of x^2 (pad (n-1)/2, divisor n^2), then (1 + alpha s)^-beta."""
    half = (size - 1) // 2
    height, width = x.shape[2:]
    pooled = np.empty_like(x)
    for h in range(height):
        for w in range(width):
            window = x[:, :, max(0, h - half):h + half + 1, max(0, w - half):w + half + 1]
            pooled[:, :, h, w] = (window ** 2).sum(axis=(2, 3)) / (size * size)
    return x * (1 + alpha * pooled) ** -beta


ACROSS_CASES = [
    "local_size: 5 alpha: 0.0001 beta: 0.75",
    "local_size: 3 alpha: 0.5 beta: 0.75 k: 2",
    "local_size: 5 alpha: 2 beta: 0.5 k: 1.5",
    "local_size: 1 alpha: 1 beta: 1",
    "local_size: 9 alpha: 1 beta: 0.75",   # window wider than the channels
]
WITHIN_CASES = [
    "local_size: 3 alpha: 0.3 beta: 0.75",
    "local_size: 5 alpha: 2 beta: 0.5 k: 7",   # k plays no part within channels
    "local_size: 7 alpha: 1 beta: 1",          # window wider than the image
]


def params(text):
    values = dict(local_size=5, alpha=1.0, beta=0.75, k=1.0)
    tokens = text.split()
    for key, value in zip(tokens[::2], tokens[1::2]):
        values[key.rstrip(":")] = float(value)
    return int(values["local_size"]), values["alpha"], values["beta"], values["k"]


@pytest.mark.parametrize("text", ACROSS_CASES)
def test_across_channels_forward(text):
    x = RNG.standard_normal((2, 6, 3, 4)) * 3
    layer, bottom, top = build_layer(f'type: "LRN" lrn_param {{ {text} }}', [x])
    size, alpha, beta, k = params(text)
    # The schema's floats are float32: alpha 0.0001 is not exactly 1e-4.
    expected = reference_across(x, size, float(np.float32(alpha)), float(np.float32(beta)), float(np.float32(k)))
    np.testing.assert_allclose(forward(layer, bottom, top)[0], expected, rtol=1e-12)


@pytest.mark.parametrize("text", WITHIN_CASES)
def test_within_channel_forward(text):
    x = RNG.standard_normal((2, 3, 5, 6))
    layer, bottom, top = build_layer(f'type: "LRN" lrn_param {{ {text} norm_region: WITHIN_CHANNEL }}', [x])
    size, alpha, beta, _ = params(text)
    expected = reference_within(x, size, float(np.float32(alpha)), float(np.float32(beta)))
    np.testing.assert_allclose(forward(layer, bottom, top)[0], expected, rtol=1e-12)


@pytest.mark.parametrize("text", ACROSS_CASES)
def test_across_channels_gradient(text):
    check_gradient(f'type: "LRN" lrn_param {{ {text} }}', [RNG.standard_normal((2, 6, 3, 3))], max_checks=80)


@pytest.mark.parametrize("text", WITHIN_CASES)
def test_within_channel_gradient(text):
    check_gradient(f'type: "LRN" lrn_param {{ {text} norm_region: WITHIN_CHANNEL }}',
                   [RNG.standard_normal((2, 2, 5, 4))], max_checks=80)


def test_float32_matches_float64():
    x = RNG.standard_normal((2, 7, 4, 4)) * 30
    text = 'type: "LRN" lrn_param { local_size: 5 alpha: 0.0001 beta: 0.75 }'
    layer, bottom, top = build_layer(text, [x], dtype=np.float32)
    got = forward(layer, bottom, top)[0]
    assert got.dtype == np.float32
    expected = reference_across(x, 5, float(np.float32(1e-4)), 0.75, 1.0)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_even_local_size_and_wrong_axes_are_rejected():
    with pytest.raises(LayerError, match="LRN only supports odd values for local_size"):
        build_layer('type: "LRN" lrn_param { local_size: 4 }', [np.zeros((1, 4, 2, 2))])
    with pytest.raises(LayerError, match="Input must have 4 axes"):
        build_layer('type: "LRN"', [np.zeros((1, 4, 2))])


@pytest.mark.gpu
@pytest.mark.parametrize("region,size,shape", [("ACROSS_CHANNELS", 3, (2, 5, 6, 6)),
                                                ("ACROSS_CHANNELS", 5, (3, 7, 4, 5)),
                                                ("ACROSS_CHANNELS", 5, (2, 2, 3, 3)),
                                                ("WITHIN_CHANNEL", 3, (2, 5, 6, 6))])
def test_cupy_matches_numpy(region, size, shape):
    import cupy

    x = RNG.standard_normal(shape)
    text = f'type: "LRN" lrn_param {{ local_size: {size} alpha: 0.5 beta: 0.75 norm_region: {region} }}'
    cpu, cpu_bottom, cpu_top = build_layer(text, [x])
    backend.set_mode_gpu()
    gpu, gpu_bottom, gpu_top = build_layer(text, [x], xp=cupy)
    y = forward(cpu, cpu_bottom, cpu_top)[0]
    np.testing.assert_allclose(cupy.asnumpy(forward(gpu, gpu_bottom, gpu_top)[0]), y, rtol=1e-10, atol=1e-12)
    dy = RNG.standard_normal(y.shape)
    cpu_top[0].diff[...] = dy
    gpu_top[0].diff[...] = cupy.asarray(dy)
    cpu.backward(cpu_top, [True], cpu_bottom)
    gpu.backward(gpu_top, [True], gpu_bottom)
    np.testing.assert_allclose(cupy.asnumpy(gpu_bottom[0].diff), cpu_bottom[0].diff, rtol=1e-10, atol=1e-12)
