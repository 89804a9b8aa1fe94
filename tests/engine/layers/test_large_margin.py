"""LargeMarginInnerProduct (L-Softmax): forward and backward against a transcription of
the fork's CPU loops, the lambda schedule and counter, exact gradients in float64, errors."""

import numpy as np
import pytest
from layer_check import build_layer, check_gradient, forward

from engine.errors import LayerError

RNG = np.random.default_rng(21)
TYPES = ["SINGLE", "DOUBLE", "TRIPLE", "QUADRUPLE"]


def text(kind, base=10, gamma=1, power=1, lambda_min=0.5, iteration=0, num_output=4):
    return (f'type: "LargeMarginInnerProduct" largemargin_inner_product_param {{ num_output: {num_output} '
            f'type: {kind} base: {base} gamma: {gamma} power: {power} lambda_min: {lambda_min} '
            f'iteration: {iteration} weight_filler {{ type: "gaussian" std: 0.5 }} }}')


def sgn(v):
    return float(int(0 < v) - int(v < 0))


def fork_label_terms(kind, c):
    """The fork's per-type sign variables, margin value psi and the two backward factors."""
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


def fork_lsoftmax(x, w, labels, kind, lam, dy):
    """Forward_cpu and Backward_cpu of the fork, loop by loop."""
    m, n = len(x), len(w)
    xn = np.sqrt((x * x).sum(1))
    wn = np.sqrt((w * w).sum(1))
    xw = np.outer(xn, wn) + 1e-9
    cos = (x @ w.T) / xw
    top = x @ w.T
    dw, dx = dy.T @ x, dy @ w
    if kind == 0:
        return top, dw, dx
    for i in range(m):
        y = int(labels[i])
        top[i, y] = xw[i, y] * fork_label_terms(kind, cos[i, y])[0]
    top = (top + lam * (x @ w.T)) / (1 + lam)
    ratio = np.outer(xn, 1 / (wn + 1e-9))
    dw = np.zeros_like(w)
    for i in range(n):
        for j in range(m):
            if int(labels[j]) != i:
                dw[i] += dy[j, i] / (1 + lam) * x[j]
            else:
                _, a, b = fork_label_terms(kind, cos[j, i])
                dw[i] += dy[j, i] / (1 + lam) * a * x[j]
                dw[i] += dy[j, i] / (1 + lam) * (-ratio[j, i]) * b * w[i]
    dw += lam / (1 + lam) * dy.T @ x
    dx = np.zeros_like(x)
    for i in range(m):
        y = int(labels[i])
        for j in range(n):
            if y != j:
                dx[i] += dy[i, j] / (1 + lam) * w[j]
            else:
                _, a, b = fork_label_terms(kind, cos[i, j])
                dx[i] += dy[i, j] / (1 + lam) * a * w[j]
                dx[i] += dy[i, j] / (-ratio[i, j]) / (1 + lam) * b * x[i]
    dx += lam / (1 + lam) * dy @ w
    return top, dw, dx


@pytest.mark.parametrize("kind", range(4))
def test_large_margin_matches_the_fork(kind):
    x, labels = RNG.standard_normal((6, 5)), RNG.integers(0, 4, 6).astype(float)
    layer, bottom, top = build_layer(text(TYPES[kind]), [x, labels], num_tops=2)
    for step, lam in ((1, 5.0), (2, 10 / 3)):  # lambda = max(10 / (1 + iter), 0.5)
        out, lam_top = forward(layer, bottom, top)
        np.testing.assert_allclose(lam_top, [lam])
        dy = RNG.standard_normal(out.shape)
        layer.blobs[0].diff[...] = 0
        top[0].diff[...] = dy
        layer.run_backward(top, [True, False], bottom)
        want_top, want_dw, want_dx = fork_lsoftmax(x, layer.blobs[0].data, labels, kind, lam, dy)
        np.testing.assert_allclose(out, want_top, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(layer.blobs[0].diff, want_dw, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(bottom[0].diff, want_dx, rtol=1e-10, atol=1e-12)


def test_lambda_schedule_counts_from_iteration_and_floors_at_lambda_min():
    x, labels = RNG.standard_normal((2, 3)), np.array([0.0, 1.0])
    layer, bottom, top = build_layer(text("DOUBLE", base=1000, gamma=0.12, power=1, lambda_min=5,
                                          iteration=100), [x, labels], num_tops=2)
    seen = [forward(layer, bottom, top)[1][0] for _ in range(3)]
    expected = [max(1000 * (1 + 0.12 * it) ** -1, 5) for it in (101, 102, 103)]
    np.testing.assert_allclose(seen, expected)
    layer, bottom, top = build_layer(text("DOUBLE", base=1000, gamma=0.12, power=1, lambda_min=5,
                                          iteration=10000), [x, labels], num_tops=1)
    forward(layer, bottom, top)
    assert layer.lambda_ == 5 and layer.iteration == 10001


@pytest.mark.parametrize("kind", TYPES)
def test_large_margin_gradient(kind):
    x = RNG.standard_normal((5, 2, 3))
    labels = RNG.integers(0, 4, 5).astype(float)
    # gamma 0 keeps lambda fixed while the check runs many forwards.
    check_gradient(text(kind, base=0.3, gamma=0, lambda_min=0), [x, labels], bottoms_checked=[0])


def test_large_margin_errors():
    x, labels = np.zeros((2, 3)), np.zeros(2)
    with pytest.raises(LayerError, match="largemargin_inner_product_param.num_output is required"):
        build_layer('type: "LargeMarginInnerProduct"', [x, labels])
    with pytest.raises(LayerError, match="Number of labels must match"):
        build_layer(text("DOUBLE"), [x, np.zeros(3)])
    with pytest.raises(LayerError, match=r"label values must lie in \[0, 3\]"):
        layer, bottom, top = build_layer(text("DOUBLE"), [x, np.array([0.0, 4.0])])
        forward(layer, bottom, top)
    with pytest.raises(LayerError, match="takes exactly 2 bottom"):
        build_layer(text("DOUBLE"), [x])
