"""SENet's Axpy (senet.py): values from the fork's loops, gradients, shapes and errors."""

import numpy as np
import pytest
from layer_check import build_layer, check_gradient, forward

from engine.errors import LayerError

RNG = np.random.default_rng(8)
A = RNG.standard_normal((2, 3, 1, 1))
X = RNG.standard_normal((2, 3, 4, 5))
Y = RNG.standard_normal((2, 3, 4, 5))


def axpy_loop(a, x, y):
    """The fork's Forward_cpu: copy y, then caffe_axpy(spatial, a[n * C + c], x, top) per channel."""
    top = y.copy().reshape(x.shape[0], x.shape[1], -1)
    flat_a = a.reshape(-1)
    for n in range(x.shape[0]):
        for c in range(x.shape[1]):
            top[n, c] += flat_a[n * x.shape[1] + c] * x[n, c].reshape(-1)
    return top.reshape(x.shape)


@pytest.mark.parametrize("a_shape", [(2, 3, 1, 1), (2, 3)])
def test_forward_matches_the_fork(a_shape):
    a = A.reshape(a_shape)
    ours = forward(*build_layer('type: "Axpy"', [a, X, Y]))[0]
    np.testing.assert_allclose(ours, axpy_loop(a, X, Y), rtol=1e-14)


def test_backward_as_the_fork_writes_it():
    check_gradient('type: "Axpy"', [A, X, Y])
    layer, bottom, top = build_layer('type: "Axpy"', [A, X, Y])
    forward(layer, bottom, top)
    dy = RNG.standard_normal(X.shape)
    top[0].diff[...] = dy
    layer.run_backward(top, [True, True, True], bottom)
    # scale diff: gemv over spatial of top_diff * x; x diff: a * top_diff; y diff: top_diff.
    np.testing.assert_allclose(bottom[0].diff, (dy * X).sum(axis=(2, 3), keepdims=True), rtol=1e-13)
    np.testing.assert_allclose(bottom[1].diff, A * dy, rtol=1e-14)
    np.testing.assert_array_equal(bottom[2].diff, dy)


def test_any_number_of_trailing_axes():
    x, y = X.reshape(2, 3, 20), Y.reshape(2, 3, 20)
    ours = forward(*build_layer('type: "Axpy"', [A.reshape(2, 3), x, y]))[0]
    np.testing.assert_allclose(ours, axpy_loop(A, X, Y).reshape(2, 3, 20), rtol=1e-14)
    check_gradient('type: "Axpy"', [A.reshape(2, 3), x, y])


@pytest.mark.parametrize("shapes, message", [
    (((2, 3, 2, 1), (2, 3, 4, 5), (2, 3, 4, 5)), "must be num x channels"),
    (((2, 4, 1, 1), (2, 3, 4, 5), (2, 3, 4, 5)), "must be num x channels"),
    (((1, 3, 1, 1), (2, 3, 4, 5), (2, 3, 4, 5)), "must be num x channels"),
    (((2, 3, 1, 1), (2, 3, 4, 5), (2, 3, 5, 4)), "must have the same shape"),
])
def test_shapes_that_do_not_fit(shapes, message):
    with pytest.raises(LayerError, match=message):
        build_layer('type: "Axpy"', [np.zeros(s) for s in shapes])


def test_needs_three_bottoms():
    with pytest.raises(LayerError, match="exactly 3 bottom"):
        build_layer('type: "Axpy"', [X, Y])


def test_on_both_devices(mode):
    from engine.backend import array_module, to_host

    layer, bottom, top = build_layer('type: "Axpy"', [A, X, Y], xp=array_module())
    np.testing.assert_allclose(to_host(forward(layer, bottom, top)[0]), axpy_loop(A, X, Y), rtol=1e-14)
