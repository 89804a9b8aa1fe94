"""MarginInnerProduct (SphereFace): forward and backward against a transcription of the
fork's CPU loops, weights normalized in place, the fork's normalized label gradient
checked against the exact one, float64 gradients where the fork's are exact, errors."""

import numpy as np
import pytest
from layer_check import build_layer, check_gradient, forward

from engine.errors import LayerError

RNG = np.random.default_rng(8)
TYPES = ["SINGLE", "DOUBLE", "TRIPLE", "QUADRUPLE"]


def text(kind, base=10, gamma=1, power=1, lambda_min=0.5, iteration=0, num_output=4):
    return (f'type: "MarginInnerProduct" margin_inner_product_param {{ num_output: {num_output} '
            f'type: {kind} base: {base} gamma: {gamma} power: {power} lambda_min: {lambda_min} '
            f'iteration: {iteration} weight_filler {{ type: "xavier" }} }}')


def sgn(v):
    return float(int(0 < v) - int(v < 0))


def fork_terms(kind, c):
    """psi and the backward's coeff_w and -|x| coeff_x, per the fork's sign variables."""
    s0 = sgn(c)
    if kind == 1:
        return 2 * s0 * c ** 2 - 1, 4 * s0 * c, 2 * s0 * c ** 2 + 1
    if kind == 2:
        s1 = sgn(abs(c) - 0.5)
        s2 = s0 * (1 + s1) - 2
        return s1 * (4 * c ** 3 - 3 * c) + s2, s1 * (12 * c ** 2 - 3), 8 * s1 * c ** 3 - s2
    s3 = s0 * sgn(2 * c ** 2 - 1)
    s4 = 2 * s0 + s3 - 3
    return (s3 * (8 * c ** 4 - 8 * c ** 2 + 1) + s4, s3 * (32 * c ** 3 - 16 * c),
            s3 * (24 * c ** 4 - 8 * c ** 2 - 1) - s4)


def fork_sphereface(x, raw_w, labels, kind, lam, dy):
    """Forward_cpu (weights normalized first) and Backward_cpu of the fork, loop by loop."""
    w = raw_w / np.sqrt((raw_w * raw_w).sum(1, keepdims=True))
    xn = np.sqrt((x * x).sum(1))
    cos = (x @ w.T) / xn[:, None]
    top = x @ w.T
    dw = dy.T @ x
    if kind == 0:
        return w, top, dw, dy @ w
    for i in range(len(x)):
        y = int(labels[i])
        top[i, y] = xn[i] * fork_terms(kind, cos[i, y])[0]
    top = (top + lam * (x @ w.T)) / (1 + lam)
    dx = np.zeros_like(x)
    for i in range(len(x)):
        y = int(labels[i])
        for j in range(len(w)):
            if y != j:
                dx[i] += 1 / (1 + lam) * dy[i, j] * w[j]
            else:
                _, coeff_w, rest = fork_terms(kind, cos[i, j])
                coeff_x = 1 / -xn[i] * rest
                norm = np.sqrt(coeff_w ** 2 + coeff_x ** 2)
                dx[i] += 1 / (1 + lam) * dy[i, j] * coeff_w / norm * w[j]
                dx[i] += 1 / (1 + lam) * dy[i, j] * coeff_x / norm * x[i]
    dx += lam / (1 + lam) * dy @ w
    return w, top, dw, dx


@pytest.mark.parametrize("kind", range(4))
def test_sphereface_matches_the_fork(kind):
    x, labels = RNG.standard_normal((6, 5)), RNG.integers(0, 4, 6).astype(float)
    layer, bottom, top = build_layer(text(TYPES[kind]), [x, labels], num_tops=2)
    raw = layer.blobs[0].data.copy()
    for lam in (5.0, 10 / 3):  # lambda = max(10 / (1 + iter), 0.5) at iterations 1 and 2
        out, lam_top = forward(layer, bottom, top)
        np.testing.assert_allclose(lam_top, [lam])
        dy = RNG.standard_normal(out.shape)
        layer.blobs[0].diff[...] = 0
        top[0].diff[...] = dy
        layer.run_backward(top, [True, False], bottom)
        w, want_top, want_dw, want_dx = fork_sphereface(x, raw, labels, kind, lam, dy)
        np.testing.assert_allclose(layer.blobs[0].data, w, rtol=1e-12)  # normalized in place
        np.testing.assert_allclose(out, want_top, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(layer.blobs[0].diff, want_dw, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(bottom[0].diff, want_dx, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kind", [1, 2, 3])
def test_label_gradient_is_the_exact_one_divided_by_its_coefficient_length(kind):
    """With lambda 0 and a gradient on the label scores only, the fork's input gradient times
    sqrt(coeff_w^2 + coeff_x^2) is the central-difference derivative of |x| psi(theta)."""
    x, labels = RNG.standard_normal((4, 3)), np.array([0.0, 3.0, 1.0, 1.0])
    layer, bottom, top = build_layer(text(TYPES[kind], base=0, lambda_min=0), [x, labels])
    forward(layer, bottom, top)
    dy = np.zeros((4, 4))
    dy[np.arange(4), labels.astype(int)] = 1
    top[0].diff[...] = dy
    layer.run_backward(top, [True, False], bottom)
    w = layer.blobs[0].data
    for i, y in enumerate(labels.astype(int)):
        c = x[i] @ w[y] / np.linalg.norm(x[i])
        _, coeff_w, rest = fork_terms(kind, c)
        length = np.hypot(coeff_w, rest / np.linalg.norm(x[i]))
        numeric = np.zeros(3)
        for k in range(3):
            for sign in (1, -1):
                bottom[0].data[...] = x
                bottom[0].data[i, k] += sign * 1e-6
                numeric[k] += sign * forward(layer, bottom, top)[0][i, y] / 2e-6
        np.testing.assert_allclose(bottom[0].diff[i] * length, numeric, rtol=1e-6, atol=1e-8)


def test_single_margin_input_gradient():
    check_gradient(text("SINGLE"), [RNG.standard_normal((5, 6)), RNG.integers(0, 4, 5).astype(float)],
                   bottoms_checked=[0], params_checked=[])


def test_counter_starts_at_iteration_and_one_top_is_enough():
    x, labels = RNG.standard_normal((2, 3)), np.array([2.0, 1.0])
    layer, bottom, top = build_layer(text("QUADRUPLE", base=1000, gamma=0.12, lambda_min=5, iteration=20),
                                     [x, labels], num_tops=1)
    forward(layer, bottom, top)
    forward(layer, bottom, top)
    assert layer.iteration == 22
    assert layer.lambda_ == pytest.approx(max(1000 / (1 + 0.12 * 22), 5))


def test_sphereface_errors():
    x, labels = np.zeros((2, 3)), np.zeros(2)
    with pytest.raises(LayerError, match="margin_inner_product_param.num_output is required"):
        build_layer('type: "MarginInnerProduct"', [x, labels])
    with pytest.raises(LayerError, match="takes at most 2 top"):
        build_layer(text("DOUBLE"), [x, labels], num_tops=3)
    layer, bottom, top = build_layer(text("DOUBLE"), [np.ones((2, 3)), labels])
    bottom[0].reshape((2, 4))
    with pytest.raises(LayerError, match="Input size incompatible"):
        forward(layer, bottom, top)
