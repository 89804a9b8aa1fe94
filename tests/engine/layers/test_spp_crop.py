"""SPP (spp.py) and Crop (crop.py): hand-computed forwards, gradients, shapes and errors."""

import numpy as np
import pytest
from layer_check import build_layer, check_gradient, forward

from engine import backend
from engine.blob import Blob
from engine.errors import LayerError
from engine.layers.spp import level_pooling_param

RNG = np.random.default_rng(17)


def distinct(shape):
    return (RNG.permutation(int(np.prod(shape))).reshape(shape) - 10.0) * 0.01


def spp(text, x, **kw):
    layer, bottom, top = build_layer(f'type: "SPP" spp_param {{ {text} }}', [x], **kw)
    return layer, forward(layer, bottom, top)[0]


def test_level_parameters_follow_caffe():
    p = level_pooling_param(1, 7, 6, 0)
    assert (p.kernel_h, p.kernel_w, p.stride_h, p.stride_w, p.pad_h, p.pad_w) == (4, 3, 4, 3, 1, 0)
    p = level_pooling_param(2, 7, 6, 1)
    assert (p.kernel_h, p.kernel_w, p.pad_h, p.pad_w, p.pool) == (2, 2, 1, 1, 1)
    p = level_pooling_param(0, 5, 9, 0)
    assert (p.kernel_h, p.kernel_w, p.pad_h, p.pad_w) == (5, 9, 0, 0)


def test_max_pyramid_by_hand():
    x = RNG.standard_normal((2, 3, 4, 4))
    _, got = spp("pyramid_height: 2 pool: MAX", x)
    level0 = x.max(axis=(2, 3)).reshape(2, 3)
    level1 = x.reshape(2, 3, 2, 2, 2, 2).max(axis=(3, 5)).reshape(2, 12)
    np.testing.assert_allclose(got, np.concatenate([level0, level1], axis=1))


def test_ave_pyramid_with_padding_by_hand():
    # Height 7 at level 1: kernel 4, pad 1 -> rows [-1, 3) and [3, 7), each divided by 4 (padding counts).
    # Width 6: kernel 3, no pad -> columns [0, 3) and [3, 6).
    x = RNG.standard_normal((1, 2, 7, 6))
    _, got = spp("pyramid_height: 2 pool: AVE", x)
    level0 = x.mean(axis=(2, 3)).reshape(1, 2)
    bins = np.empty((1, 2, 2, 2))
    for i, rows in enumerate((slice(0, 3), slice(3, 7))):
        for j, cols in enumerate((slice(0, 3), slice(3, 6))):
            bins[:, :, i, j] = x[:, :, rows, cols].sum(axis=(2, 3)) / (4 * 3)
    np.testing.assert_allclose(got, np.concatenate([level0, bins.reshape(1, 8)], axis=1))


def test_single_level_keeps_four_axes_and_reshapes_with_the_bottom():
    x = RNG.standard_normal((2, 3, 5, 4))
    layer, got = spp("pyramid_height: 1", x)
    assert got.shape == (2, 3, 1, 1)
    np.testing.assert_allclose(got[:, :, 0, 0], x.max(axis=(2, 3)))
    x = RNG.standard_normal((2, 3, 8, 6))
    layer, bottom, top = build_layer('type: "SPP" spp_param { pyramid_height: 3 }', [x])
    assert top[0].shape == (2, 3 * 21)
    bigger = Blob((1, 3, 9, 11), np.float64)
    bigger.data[...] = RNG.standard_normal(bigger.shape)
    layer.reshape([bigger], top)
    layer.forward([bigger], top)
    assert top[0].shape == (1, 63)
    np.testing.assert_allclose(top[0].data[:, :3], bigger.data.max(axis=(2, 3)))


@pytest.mark.parametrize("text", ["pyramid_height: 2 pool: MAX", "pyramid_height: 3 pool: AVE",
                                  "pyramid_height: 1 pool: AVE"])
def test_spp_gradient(text):
    check_gradient(f'type: "SPP" spp_param {{ {text} }}', [distinct((2, 2, 7, 6))], max_checks=60)


def test_spp_errors():
    with pytest.raises(LayerError, match="pyramid_height must be positive"):
        build_layer('type: "SPP"', [np.zeros((1, 1, 4, 4))])
    with pytest.raises(LayerError, match=r"pyramid level 2 .*pad_h \(2\) must be smaller than kernel_h \(2\)"):
        build_layer('type: "SPP" spp_param { pyramid_height: 4 }', [np.zeros((1, 1, 5, 5))])


# -- Crop -------------------------------------------------------------------------------------

CROP_CASES = [
    ("", (2, 3, 7, 8), (1, 1, 4, 5), (slice(None), slice(None), slice(0, 4), slice(0, 5))),
    ("offset: 2", (2, 3, 7, 8), (1, 1, 4, 5), (slice(None), slice(None), slice(2, 6), slice(2, 7))),
    ("axis: 1 offset: 1 offset: 2 offset: 3", (2, 4, 7, 8), (2, 2, 4, 5),
     (slice(None), slice(1, 3), slice(2, 6), slice(3, 8))),
    ("axis: -1 offset: 3", (2, 3, 7, 8), (9, 9, 9, 4), (slice(None), slice(None), slice(None), slice(3, 7))),
    ("axis: 0", (3, 2, 4, 4), (2, 1, 3, 4), (slice(0, 2), slice(0, 1), slice(0, 3), slice(0, 4))),
]


@pytest.mark.parametrize("params,shape,ref_shape,window", CROP_CASES, ids=[c[0] or "default" for c in CROP_CASES])
def test_crop_forward_and_gradient(params, shape, ref_shape, window):
    x, ref = RNG.standard_normal(shape), np.zeros(ref_shape)
    text = f'type: "Crop" crop_param {{ {params} }}'
    layer, bottom, top = build_layer(text, [x, ref])
    np.testing.assert_array_equal(forward(layer, bottom, top)[0], x[window])
    check_gradient(text, [x, ref], max_checks=40)


def test_crop_backward_zeroes_the_cut_region():
    x = RNG.standard_normal((1, 1, 5, 5))
    layer, bottom, top = build_layer('type: "Crop" crop_param { offset: 1 }', [x, np.zeros((1, 1, 3, 3))])
    forward(layer, bottom, top)
    bottom[0].diff[...] = 9.0
    top[0].diff[...] = 1.0
    layer.backward(top, [True, True], bottom)
    expected = np.zeros((5, 5))
    expected[1:4, 1:4] = 1.0
    np.testing.assert_array_equal(bottom[0].diff[0, 0], expected)
    assert not bottom[1].diff.any()


@pytest.mark.parametrize("params,shape,ref_shape,message", [
    ("offset: 1 offset: 1", (1, 1, 5, 5, 5), (1, 1, 3, 3, 3), "number of offset values specified must be equal"),
    ("offset: 3", (1, 1, 5, 5), (1, 1, 3, 3), "the crop for dimension 2 is out-of-bounds with size 3 and offset 3"),
    ("axis: 4", (1, 1, 5, 5), (1, 1, 3, 3), "crop axis 4 bigger than input dim"),
])
def test_crop_errors(params, shape, ref_shape, message):
    with pytest.raises(LayerError, match=message):
        build_layer(f'type: "Crop" crop_param {{ {params} }}', [np.zeros(shape), np.zeros(ref_shape)])


@pytest.mark.gpu
@pytest.mark.parametrize("text,tops", [
    ('type: "SPP" spp_param { pyramid_height: 3 pool: MAX }', 1),
    ('type: "Crop" crop_param { offset: 1 }', 1),
])
def test_cupy_matches_numpy(text, tops):
    import cupy

    bottoms = [distinct((2, 3, 7, 6))] + ([np.zeros((2, 3, 4, 4))] if "Crop" in text else [])
    cpu, cpu_bottom, cpu_top = build_layer(text, bottoms)
    backend.set_mode_gpu()
    gpu, gpu_bottom, gpu_top = build_layer(text, bottoms, xp=cupy)
    y = forward(cpu, cpu_bottom, cpu_top)[0]
    np.testing.assert_allclose(cupy.asnumpy(forward(gpu, gpu_bottom, gpu_top)[0]), y, rtol=1e-12)
    dy = RNG.standard_normal(y.shape)
    cpu_top[0].diff[...] = dy
    gpu_top[0].diff[...] = cupy.asarray(dy)
    cpu.backward(cpu_top, [True] * len(bottoms), cpu_bottom)
    gpu.backward(gpu_top, [True] * len(bottoms), gpu_bottom)
    np.testing.assert_allclose(cupy.asnumpy(gpu_bottom[0].diff), cpu_bottom[0].diff, rtol=1e-12)
