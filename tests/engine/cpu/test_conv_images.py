"""engine/cpu/conv_images.py: a convolution image by image on the pool gives the whole-batch im2col path's numbers."""

import numpy as np
import pytest
from layer_check import build_layer, check_gradient

from engine.cpu import conv_images, products
from engine.layers import conv

RNG = np.random.default_rng(12)


def _run(text, x, params, dy, image_by_image):
    """(top, weight diff, bottom diff) of a Convolution layer with parameters `params` on x (float64), top
    diff dy."""
    layer, bottom, top = build_layer(text, [x])
    assert layer._image_by_image(bottom[0].data) == image_by_image
    for blob, values in zip(layer.blobs, params):
        blob.data[...] = values
    layer.forward(bottom, top)
    top[0].diff[...] = dy
    layer.blobs[0].diff[...] = 0.5  # the diff is added to what is there
    layer.backward(top, [True], bottom)
    return top[0].data.copy(), layer.blobs[0].diff.copy(), bottom[0].diff.copy()


@pytest.mark.parametrize("params,shape", [
    ("num_output: 4 kernel_size: 3", (3, 3, 7, 6)),
    ("num_output: 5 kernel_size: 5 pad: 2", (2, 3, 8, 8)),
    ("num_output: 4 kernel_size: 7 stride: 2 pad: 3", (3, 3, 11, 12)),
    ("num_output: 3 kernel_h: 3 kernel_w: 2 stride_h: 2 stride_w: 1 pad_h: 0 pad_w: 1 dilation: 2", (2, 1, 9, 7)),
    ("num_output: 6 kernel_size: 4 stride: 4 bias_term: false", (9, 2, 12, 12)),
])
def test_image_by_image_matches_the_whole_batch(monkeypatch, params, shape):
    monkeypatch.setattr(conv, "IMAGE_COLUMNS", (1, 1 << 22))  # small images here
    _compare_with_the_whole_batch(monkeypatch, params, shape, "IMAGE_CHANNELS", 0)


def _compare_with_the_whole_batch(monkeypatch, params, shape, setting, value):
    """The layer's top, weight diff and bottom diff image by image, then with conv.<setting> = value (which
    sends it to the whole-batch path): the same numbers."""
    text = f'type: "Convolution" convolution_param {{ {params} weight_filler {{ type: "gaussian" std: 0.5 }} ' \
           'bias_filler { type: "uniform" min: -1 max: 1 } }'
    x = RNG.standard_normal(shape)
    layer, _, top = build_layer(text, [x])
    params = [blob.data.copy() for blob in layer.blobs]
    dy = RNG.standard_normal(top[0].shape)
    got = _run(text, x, params, dy, True)
    monkeypatch.setattr(conv, setting, value)
    want = _run(text, x, params, dy, False)
    for name, a, b in zip(("top", "weight diff", "bottom diff"), got, want):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12, err_msg=name)


def test_only_few_channels_one_group_and_bounded_columns(monkeypatch):
    monkeypatch.setattr(conv, "IMAGE_COLUMNS", (1, 1 << 22))
    def layer(params, shape, dtype=np.float64):
        built, bottom, _ = build_layer(f'type: "Convolution" convolution_param {{ {params} }}',
                                       [np.zeros(shape)], dtype=dtype)
        return built._image_by_image(bottom[0].data)

    assert layer("num_output: 8 kernel_size: 3", (1, 3, 8, 8))
    assert layer("num_output: 8 kernel_size: 3", (1, 4, 8, 8), np.float32)
    assert not layer("num_output: 8 kernel_size: 3", (1, 5, 8, 8))
    assert not layer("num_output: 8 kernel_size: 3 group: 2", (1, 4, 8, 8))
    monkeypatch.setattr(conv, "IMAGE_COLUMNS", (1, 27 * 36 - 1))  # one image's columns: 27 x 36
    assert not layer("num_output: 8 kernel_size: 3", (1, 3, 8, 8))
    monkeypatch.setattr(conv, "IMAGE_COLUMNS", (27 * 36 + 1, 1 << 30))
    assert not layer("num_output: 8 kernel_size: 3", (1, 3, 8, 8))


def test_weight_diff_is_the_same_on_one_thread_and_two(two_threads):
    """The images run on the pool; their products are added in fixed groups, whatever thread took them."""
    x = RNG.standard_normal((11, 3, 9, 9)).astype(np.float32)
    weight = RNG.standard_normal((4, 27)).astype(np.float32)
    dy = RNG.standard_normal((11, 4, 7, 7)).astype(np.float32)
    geometry = ((3, 3), (0, 0), (1, 1), (1, 1))
    top = np.empty((11, 4, 7, 7), np.float32)
    conv_images.forward(x, weight, None, *geometry, top)
    two = np.zeros((4, 27), np.float32)
    conv_images.weight_diff(x, dy, *geometry, two)
    assert two_threads, "the images did not run on the pool"
    products._STATE["threads"] = 1
    one = np.zeros((4, 27), np.float32)
    conv_images.weight_diff(x, dy, *geometry, one)
    assert np.array_equal(one, two)
    one_top = np.empty_like(top)
    conv_images.forward(x, weight, None, *geometry, one_top)
    assert np.array_equal(one_top, top)


def test_gradient_image_by_image(monkeypatch):
    monkeypatch.setattr(conv, "IMAGE_COLUMNS", (1, 1 << 22))
    check_gradient('type: "Convolution" convolution_param { num_output: 3 kernel_size: 3 stride: 2 pad: 1 '
                   'weight_filler { type: "gaussian" std: 0.5 } bias_filler { type: "uniform" min: -1 max: 1 } }',
                   [RNG.standard_normal((3, 2, 6, 5))], max_checks=40)


@pytest.mark.parametrize("params,shape", [
    ("num_output: 5 kernel_size: 1", (3, 6, 4, 5)),
    ("num_output: 7 kernel_size: 1 bias_term: false", (2, 9, 3, 3)),
])
def test_pointwise_image_by_image_matches_the_whole_batch(monkeypatch, params, shape):
    """A 1 x 1 layer's products between the blobs give the batch columns' numbers: top, weight and bottom diff."""
    monkeypatch.setattr(conv, "POINTWISE_PIXELS", 1)
    _compare_with_the_whole_batch(monkeypatch, params, shape, "POINTWISE_PIXELS", 1 << 30)


def test_pointwise_only_unpadded_stride_one_on_enough_pixels(monkeypatch):
    def layer(params, shape):
        built, bottom, _ = build_layer(f'type: "Convolution" convolution_param {{ {params} }}', [np.zeros(shape)])
        return built._image_by_image(bottom[0].data)

    monkeypatch.setattr(conv, "POINTWISE_PIXELS", 64)
    assert layer("num_output: 8 kernel_size: 1", (1, 16, 8, 8))
    assert not layer("num_output: 8 kernel_size: 1", (1, 16, 8, 7))            # 56 pixels
    assert not layer("num_output: 8 kernel_size: 1 stride: 2", (1, 16, 16, 16))
    assert not layer("num_output: 8 kernel_size: 1 pad: 1", (1, 16, 8, 8))
    assert not layer("num_output: 8 kernel_size: 1 group: 2", (1, 16, 8, 8))
    assert not layer("num_output: 65 kernel_size: 1", (1, 16, 8, 8))           # more outputs than pixels


def test_gradient_pointwise_image_by_image(monkeypatch):
    monkeypatch.setattr(conv, "POINTWISE_PIXELS", 1)
    check_gradient('type: "Convolution" convolution_param { num_output: 3 kernel_size: 1 '
                   'weight_filler { type: "gaussian" std: 0.5 } bias_filler { type: "uniform" min: -1 max: 1 } }',
                   [RNG.standard_normal((2, 4, 3, 3))], max_checks=40)
