"""Concat, Slice, Flatten, Reshape, Tile: Caffe's shapes, values, gradients and errors."""

import numpy as np
import pytest
from layer_check import build_layer, check_gradient, forward, layer_param

from engine.blob import Blob
from engine.errors import LayerError
from engine.layers import layer_class

RNG = np.random.default_rng(11)
A = RNG.standard_normal((2, 3, 2, 3))
B = RNG.standard_normal((2, 4, 2, 3))
C = RNG.standard_normal((2, 3, 2, 3))


def tops(text, bottoms, num_tops=1):
    layer, bottom, top = build_layer(text, bottoms, num_tops)
    return forward(layer, bottom, top)


# -- Concat -------------------------------------------------------------------------------------
@pytest.mark.parametrize("text,bottoms,axis", [
    ('type: "Concat"', [A, B], 1),
    ('type: "Concat" concat_param { axis: 0 }', [A, C, A], 0),
    ('type: "Concat" concat_param { axis: -1 }', [A, C], 3),
    ('type: "Concat" concat_param { concat_dim: 2 }', [A, C], 2),
])
def test_concat_forward(text, bottoms, axis):
    np.testing.assert_array_equal(tops(text, bottoms)[0], np.concatenate(bottoms, axis=axis))


@pytest.mark.parametrize("text,bottoms", [
    ('type: "Concat"', [A, B]),
    ('type: "Concat" concat_param { axis: 0 }', [A, C, A]),
    ('type: "Concat" concat_param { axis: -1 }', [A, C]),
    ('type: "Concat"', [A]),
])
def test_concat_gradient(text, bottoms):
    check_gradient(text, bottoms)


def test_concat_single_bottom_shares_storage():
    layer, bottom, top = build_layer('type: "Concat"', [A])
    bottom[0].data[0, 0, 0, 0] = 42
    assert top[0].data[0, 0, 0, 0] == 42


@pytest.mark.parametrize("text,bottoms,message", [
    ('type: "Concat"', [A, B[:, :, :1]], "same shape"),
    ('type: "Concat"', [A, A[0]], "#axes"),
    ('type: "Concat" concat_param { axis: 1 concat_dim: 1 }', [A, B], "not both"),
    ('type: "Concat" concat_param { axis: 4 }', [A, B], "out of range"),
])
def test_concat_errors(text, bottoms, message):
    with pytest.raises(LayerError, match=message):
        build_layer(text, bottoms)


# -- Slice --------------------------------------------------------------------------------------
X = RNG.standard_normal((2, 6, 3))


@pytest.mark.parametrize("text,num_tops,expected", [
    ('type: "Slice" slice_param { slice_point: 1 slice_point: 4 }', 3, [X[:, :1], X[:, 1:4], X[:, 4:]]),
    ('type: "Slice"', 3, [X[:, :2], X[:, 2:4], X[:, 4:]]),
    ('type: "Slice" slice_param { axis: 0 }', 2, [X[:1], X[1:]]),
    ('type: "Slice" slice_param { slice_dim: 2 slice_point: 2 }', 2, [X[:, :, :2], X[:, :, 2:]]),
    ('type: "Slice" slice_param { axis: -1 }', 3, [X[:, :, :1], X[:, :, 1:2], X[:, :, 2:]]),
    ('type: "Slice"', 1, [X]),
])
def test_slice_forward(text, num_tops, expected):
    for got, want in zip(tops(text, [X], num_tops), expected, strict=True):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("text,num_tops", [
    ('type: "Slice" slice_param { slice_point: 1 slice_point: 4 }', 3),
    ('type: "Slice" slice_param { axis: 2 }', 3),
    ('type: "Slice"', 1),
])
def test_slice_gradient(text, num_tops):
    check_gradient(text, [X], num_tops=num_tops)


@pytest.mark.parametrize("text,num_tops,message", [
    ('type: "Slice"', 4, "evenly divide"),
    ('type: "Slice" slice_param { slice_point: 2 }', 3, "slice_point"),
    ('type: "Slice" slice_param { slice_point: 4 slice_point: 2 }', 3, "increase"),
    ('type: "Slice" slice_param { slice_point: 6 }', 2, "increase"),
    ('type: "Slice" slice_param { axis: 1 slice_dim: 1 }', 2, "not both"),
])
def test_slice_errors(text, num_tops, message):
    with pytest.raises(LayerError, match=message):
        build_layer(text, [X], num_tops)


# -- Flatten and Reshape ------------------------------------------------------------------------
Y = RNG.standard_normal((2, 3, 6, 5))


@pytest.mark.parametrize("text,shape", [
    ('type: "Flatten"', (2, 90)),
    ('type: "Flatten" flatten_param { axis: 2 }', (2, 3, 30)),
    ('type: "Flatten" flatten_param { axis: 1 end_axis: 2 }', (2, 18, 5)),
    ('type: "Flatten" flatten_param { axis: 0 end_axis: -2 }', (36, 5)),
    ('type: "Flatten" flatten_param { axis: -1 }', (2, 3, 6, 5)),
    ('type: "Reshape" reshape_param { shape { dim: 0 dim: -1 dim: 2 } }', (2, 45, 2)),
    ('type: "Reshape" reshape_param { shape { dim: 6 dim: 5 dim: 0 dim: -1 } }', (6, 5, 6, 1)),
    ('type: "Reshape" reshape_param { shape { dim: 0 dim: 0 dim: 0 dim: 0 } }', (2, 3, 6, 5)),
    ('type: "Reshape" reshape_param { shape { dim: 1 } axis: 1 num_axes: 0 }', (2, 1, 3, 6, 5)),
    ('type: "Reshape" reshape_param { shape { dim: 1 dim: 1 } axis: -1 num_axes: 0 }', (2, 3, 6, 5, 1, 1)),
    ('type: "Reshape" reshape_param { shape { dim: -1 } axis: 1 num_axes: 2 }', (2, 18, 5)),
    ('type: "Reshape" reshape_param { shape { dim: 3 dim: -1 } axis: -3 num_axes: 1 }', (2, 3, 3, 2, 5)),
    ('type: "Reshape" reshape_param { shape { dim: 0 dim: 2 dim: -1 } axis: 1 }', (2, 3, 2, 15)),
    ('type: "Reshape" reshape_param { shape { dim: -1 } }', (180,)),
])
def test_flatten_reshape_shapes(text, shape):
    layer, bottom, top = build_layer(text, [Y])
    y = forward(layer, bottom, top)[0]
    assert y.shape == shape
    np.testing.assert_array_equal(y.ravel(), Y.ravel())
    check_gradient(text, [Y], max_checks=20)


def test_reshape_shares_data_and_diff():
    layer, bottom, top = build_layer('type: "Reshape" reshape_param { shape { dim: -1 } }', [Y])
    top[0].diff[...] = 3.0
    np.testing.assert_array_equal(bottom[0].diff, 3.0)
    bottom[0].data[1, 2, 5, 4] = 7.0
    assert top[0].data[-1] == 7.0


@pytest.mark.parametrize("text,message", [
    ('type: "Reshape" reshape_param { shape { dim: -1 dim: -1 } }', "multiple -1"),
    ('type: "Reshape" reshape_param { shape { dim: 7 dim: -1 } }', "divisible"),
    ('type: "Reshape" reshape_param { shape { dim: 2 dim: 3 } }', "count must match"),
    ('type: "Reshape" reshape_param { shape { } }', "count must match"),
    ('type: "Reshape" reshape_param { shape { dim: 0 dim: 0 } axis: 3 }', "no corresponding bottom axis"),
    ('type: "Reshape" reshape_param { shape { dim: 1 } axis: 5 }', "out of range"),
    ('type: "Reshape" reshape_param { shape { dim: 1 } axis: 3 num_axes: 2 }', "end_axis"),
    ('type: "Reshape" reshape_param { shape { dim: -1 } num_axes: -2 }', "num_axes"),
    ('type: "Flatten" flatten_param { axis: 4 }', "axis"),
])
def test_reshape_errors(text, message):
    with pytest.raises(LayerError, match=message):
        build_layer(text, [Y])


@pytest.mark.parametrize("text", ['type: "Flatten"', 'type: "Reshape" reshape_param { shape { dim: -1 } }',
                                  'type: "Tile" tile_param { tiles: 2 }'])
def test_refuse_in_place(text):
    layer = layer_class(layer_param(text).type)(layer_param(text))
    blob = Blob(Y.shape, dtype=np.float64)
    with pytest.raises(LayerError, match="in-place"):
        layer.set_up([blob], [blob])


# -- Tile ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("axis,tiles", [(1, 2), (0, 3), (-1, 2), (2, 1)])
def test_tile(axis, tiles):
    text = f'type: "Tile" tile_param {{ axis: {axis} tiles: {tiles} }}'
    reps = [1] * A.ndim
    reps[axis] = tiles
    np.testing.assert_array_equal(tops(text, [A])[0], np.tile(A, reps))
    check_gradient(text, [A])


@pytest.mark.parametrize("text,message", [('type: "Tile"', "specified"),
                                          ('type: "Tile" tile_param { tiles: 0 }', "positive")])
def test_tile_errors(text, message):
    with pytest.raises(LayerError, match=message):
        build_layer(text, [A])
