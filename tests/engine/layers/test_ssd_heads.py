"""SSD's Permute, Normalize and PriorBox: float64 gradient checks, forwards
against OpenCV's dnn module, hand-computed priors, one-line errors."""

import numpy as np
import pytest
from layer_check import build_layer, check_gradient, forward
from opencv_reference import opencv_forward

from engine.errors import LayerError

RNG = np.random.default_rng(11)


def opencv(prototxt, inputs, output, weights=None):
    return opencv_forward(prototxt, inputs, [output], weights)[0]


def inputs_text(**shapes):
    return "".join(f'layer {{ name: "{name}" type: "Input" top: "{name}" '
                   f'input_param {{ shape {{ {" ".join(f"dim: {d}" for d in shape)} }} }} }}\n'
                   for name, shape in shapes.items())


# -- Permute ---------------------------------------------------------------------------------

@pytest.mark.parametrize("order, shape", [((0, 2, 3, 1), (2, 3, 4, 5)), ((1, 0), (3, 4)),
                                          ((0, 3), (2, 3, 4, 5)), ((), (2, 3))])
def test_permute_forward_and_gradient(order, shape):
    text = 'type: "Permute" permute_param { ' + " ".join(f"order: {o}" for o in order) + " }"
    x = RNG.standard_normal(shape)
    layer, bottom, top = build_layer(text, [x])
    full = list(order) + [a for a in range(len(shape)) if a not in order]
    np.testing.assert_array_equal(forward(layer, bottom, top)[0], x.transpose(full))
    check_gradient(text, [x])


def test_permute_matches_opencv():
    x = RNG.standard_normal((2, 3, 4, 5)).astype(np.float32)
    text = inputs_text(data=x.shape) + ('layer { name: "p" type: "Permute" bottom: "data" top: "p" '
                                        'permute_param { order: 0 order: 2 order: 3 order: 1 } }')
    layer, bottom, top = build_layer('type: "Permute" permute_param { order: 0 order: 2 order: 3 order: 1 }', [x],
                                     dtype=np.float32)
    np.testing.assert_array_equal(forward(layer, bottom, top)[0], opencv(text, {"data": x}, "p"))


@pytest.mark.parametrize("param, message", [("order: 4", "less than the input dimension"),
                                            ("order: 1 order: 1", "duplicate orders")])
def test_permute_errors(param, message):
    with pytest.raises(LayerError, match=message):
        build_layer(f'type: "Permute" permute_param {{ {param} }}', [np.zeros((1, 2, 3, 4))])


# -- Normalize -------------------------------------------------------------------------------

def normalize_text(across, shared, extra=""):
    return (f'type: "Normalize" norm_param {{ across_spatial: {str(across).lower()} '
            f'channel_shared: {str(shared).lower()} {extra} }}')


def reference_normalize(x, across, scale, eps=1e-10):
    axes = (1, 2, 3) if across else (1,)
    norm = np.sqrt((x * x).sum(axis=axes, keepdims=True) + eps)
    return x / norm * np.reshape(scale, (1, -1, 1, 1) if np.size(scale) > 1 else ())


@pytest.mark.parametrize("across", [True, False])
@pytest.mark.parametrize("shared", [True, False])
def test_normalize_forward_by_hand_and_gradient(across, shared):
    x = RNG.standard_normal((2, 3, 4, 5))
    text = normalize_text(across, shared, "scale_filler { type: 'constant' value: 2.5 }")
    layer, bottom, top = build_layer(text, [x])
    assert layer.blobs[0].shape == (() if shared else (3,))
    np.testing.assert_allclose(forward(layer, bottom, top)[0], reference_normalize(x, across, 2.5), rtol=1e-12)
    # Equal scales (as SSD initializes them): SSD's bottom gradient is exact.
    check_gradient(text, [x])


def test_normalize_scale_gradient_with_unequal_scales_and_ssds_bottom_rule():
    x = RNG.standard_normal((2, 3, 2, 2))
    text = normalize_text(False, False, "scale_filler { type: 'uniform' min: 1 max: 3 }")
    layer = check_gradient(text, [x], bottoms_checked=[])  # the scale's gradient is exact
    scale = layer.blobs[0].data.copy()
    layer, bottom, top = build_layer(text, [x])
    layer.blobs[0].data[...] = scale
    forward(layer, bottom, top)
    g = RNG.standard_normal(x.shape)
    top[0].diff[...] = g
    layer.backward(top, [True], bottom)
    # SSD (normalize_layer.cpp): diff = scale_c * (g - x * sum_c(x g) / norm^2) / norm.
    norm = np.sqrt((x * x).sum(axis=1, keepdims=True) + 1e-10)
    expected = scale.reshape(1, -1, 1, 1) * (g - x * (x * g).sum(axis=1, keepdims=True) / norm ** 2) / norm
    np.testing.assert_allclose(bottom[0].diff, expected, rtol=1e-12)


# OpenCV refuses per-channel scales with across_spatial (the hand-computed test covers it).
@pytest.mark.parametrize("across, shared", [(True, True), (False, True), (False, False)])
def test_normalize_matches_opencv(across, shared):
    x = RNG.standard_normal((2, 4, 3, 5)).astype(np.float32)
    scale = np.float32([1.5]) if shared else RNG.uniform(1, 20, 4).astype(np.float32)
    text = inputs_text(data=x.shape) + ('layer { name: "norm" type: "Normalize" bottom: "data" top: "norm" '
                                        + normalize_text(across, shared)[len('type: "Normalize" '):] + " }")
    layer, bottom, top = build_layer(normalize_text(across, shared), [x], dtype=np.float32)
    layer.blobs[0].data[...] = scale.reshape(layer.blobs[0].shape)
    expected = opencv(text, {"data": x}, "norm", {"norm": [scale.reshape(layer.blobs[0].shape or (1,))]})
    np.testing.assert_allclose(forward(layer, bottom, top)[0], expected, rtol=1e-5, atol=1e-6)


def test_normalize_errors():
    with pytest.raises(LayerError, match="Number of axes"):
        build_layer(normalize_text(True, True), [np.zeros(3)])


# -- PriorBox --------------------------------------------------------------------------------

def prior_text(params):
    return f'type: "PriorBox" prior_box_param {{ {params} }}'


def test_prior_box_order_and_values_by_hand():
    # One 1 x 2 cell row of a 20 x 40 image: step 20, centres (10, 10) and (30, 10).
    params = "min_size: 10.9 max_size: 20 aspect_ratio: 2 flip: true variance: 0.1 variance: 0.1 " \
             "variance: 0.2 variance: 0.2"
    layer, bottom, top = build_layer(prior_text(params), [np.zeros((1, 1, 1, 2)), np.zeros((1, 3, 20, 40))])
    out = forward(layer, bottom, top)[0]
    assert out.shape == (1, 2, 2 * 4 * 4)
    # SSD truncates min_size to 10: boxes 10 x 10, sqrt(200), 10 sqrt(2) x 10 / sqrt(2), then the flip.
    side = np.sqrt(200.0)
    sizes = [(10, 10), (side, side), (10 * np.sqrt(2), 10 / np.sqrt(2)), (10 / np.sqrt(2), 10 * np.sqrt(2))]
    expected = [[(cx - w / 2) / 40, (10 - h / 2) / 20, (cx + w / 2) / 40, (10 + h / 2) / 20]
                for cx in (10, 30) for w, h in sizes]
    np.testing.assert_allclose(out[0, 0].reshape(-1, 4), expected, rtol=1e-6)
    np.testing.assert_allclose(out[0, 1].reshape(-1, 4), [[.1, .1, .2, .2]] * 8, rtol=1e-6)


def test_prior_box_clip_img_size_step_offset_and_one_bottom():
    params = "min_size: 30 clip: true img_size: 60 step: 16 offset: 0 aspect_ratio: 1"
    layer, bottom, top = build_layer(prior_text(params), [np.zeros((2, 1, 2, 2))])
    out = forward(layer, bottom, top)[0][0].reshape(2, -1, 4)
    centres = [(0, 0), (16, 0), (0, 16), (16, 16)]
    expected = [[max((cx - 15) / 60, 0), max((cy - 15) / 60, 0), (cx + 15) / 60, (cy + 15) / 60]
                for cx, cy in centres]
    np.testing.assert_allclose(out[0], expected, rtol=1e-6)
    np.testing.assert_allclose(out[1], 0.1, rtol=1e-6)


@pytest.mark.parametrize("params", [
    "min_size: 30 max_size: 60 aspect_ratio: 2 aspect_ratio: 3 flip: true clip: false "
    "variance: 0.1 variance: 0.1 variance: 0.2 variance: 0.2",
    "min_size: 20 min_size: 45 max_size: 45 max_size: 90 aspect_ratio: 2 flip: false clip: true variance: 0.1",
    "min_size: 16 img_h: 90 img_w: 120 step_h: 10 step_w: 12 offset: 0.25 aspect_ratio: 3 variance: 0.1 "
    "clip: false",  # OpenCV clips unless told not to; SSD does not
])
def test_prior_box_matches_opencv(params):
    feat = np.zeros((1, 8, 5, 7), np.float32)
    image = np.zeros((1, 3, 90, 120), np.float32)
    text = inputs_text(feat=feat.shape, data=image.shape) + (
        'layer { name: "prior" type: "PriorBox" bottom: "feat" bottom: "data" top: "prior" '
        f"prior_box_param {{ {params} }} }}")
    layer, bottom, top = build_layer(prior_text(params), [feat, image], dtype=np.float32)
    expected = opencv(text, {"feat": feat, "data": image}, "prior")
    np.testing.assert_allclose(forward(layer, bottom, top)[0], expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("params, message", [
    ("max_size: 3", "must provide min_size"),
    ("min_size: 10 max_size: 5", "max_size must be greater than min_size"),
    ("min_size: 10 variance: 0.1 variance: 0.2", "give 1 or 4 variances"),
    ("min_size: 10 img_size: 10 img_h: 10 img_w: 10", "Either img_size or img_h/img_w"),
    ("min_size: 10 step: 4 step_h: 2 step_w: 2", "Either step or step_h/step_w"),
    ("min_size: 10 aspect_ratio: 2 aspect_ratio: -1", r"aspect_ratio must be positive and finite, got \[2.0, -1.0\]"),
    ("min_size: 10 aspect_ratio: 0", "aspect_ratio must be positive"),
    ("min_size: 10 aspect_ratio: nan", "aspect_ratio must be positive"),
])
def test_prior_box_errors(params, message):
    with pytest.raises(LayerError, match=message):
        build_layer(prior_text(params), [np.zeros((1, 1, 2, 2)), np.zeros((1, 3, 8, 8))])


def test_prior_box_needs_the_image_without_img_size():
    with pytest.raises(LayerError, match="needs the image as bottom"):
        build_layer(prior_text("min_size: 10"), [np.zeros((1, 1, 2, 2))])


@pytest.mark.parametrize("text, shapes", [
    ('type: "Permute" permute_param { order: 0 order: 2 order: 3 order: 1 }', [(2, 3, 4, 5)]),
    (normalize_text(True, True, "scale_filler { type: 'constant' value: 3 }"), [(2, 3, 4, 5)]),
    (normalize_text(False, False, "scale_filler { type: 'constant' value: 3 }"), [(2, 3, 4, 5)]),
    (prior_text("min_size: 10 max_size: 20 aspect_ratio: 2 clip: true"), [(1, 2, 3, 4), (1, 3, 30, 40)]),
])
def test_heads_on_both_devices(mode, text, shapes):
    from engine.backend import array_module, to_host

    inputs = [RNG.standard_normal(shape) for shape in shapes]
    results = []
    for xp in (np, array_module()):
        layer, bottom, top = build_layer(text, inputs, xp=xp)
        out = to_host(forward(layer, bottom, top)[0])
        top[0].diff[...] = xp.asarray(np.linspace(-1, 1, top[0].count).reshape(top[0].shape))
        layer.backward(top, [True] * len(bottom), bottom)
        results.append((out, to_host(bottom[0].diff)))
    for (out_cpu, diff_cpu), (out, diff) in zip(results[:1], results[1:]):
        np.testing.assert_allclose(out, out_cpu, rtol=1e-12)
        np.testing.assert_allclose(diff, diff_cpu, rtol=1e-12)
