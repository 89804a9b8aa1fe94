"""Scale and Bias: broadcasting geometry, fillers, the bottom[1] form, gradients."""

import numpy as np
import pytest
from layer_check import build_layer, check_gradient, forward

from engine import caffe_pb2
from engine.errors import LayerError
from engine.formats import parse_text
from engine.net import Net

RNG = np.random.default_rng(11)
X_SHAPE = (2, 3, 4, 2)


def broadcast(operand, axis, ndim):
    """`operand` reshaped to line up with axes axis.. of an ndim-axis blob."""
    operand = np.asarray(operand)
    return operand.reshape((1,) * axis + operand.shape + (1,) * (ndim - axis - operand.ndim))


# -- Scale -----------------------------------------------------------------------------

@pytest.mark.parametrize("params, axis, shape", [
    ("", 1, (3,)),
    ("axis: 1 num_axes: 2", 1, (3, 4)),
    ("axis: -2 num_axes: -1", 2, (4, 2)),
    ("axis: 0 num_axes: 1", 0, (2,)),
    ("num_axes: 0", 0, ()),
])
def test_scale_learned_forward(params, axis, shape):
    x = RNG.standard_normal(X_SHAPE)
    text = f'type: "Scale" scale_param {{ {params} filler {{ type: "uniform" min: 0.5 max: 2 }} }}'
    layer, bottom, top = build_layer(text, [x])
    assert layer.blobs[0].shape == shape
    (y,) = forward(layer, bottom, top)
    np.testing.assert_allclose(y, x * broadcast(layer.blobs[0].data, axis, x.ndim))


def test_scale_default_filler_is_one_and_bias_zero():
    x = RNG.standard_normal(X_SHAPE)
    layer, bottom, top = build_layer('type: "Scale" scale_param { bias_term: true }', [x])
    assert len(layer.blobs) == 2
    np.testing.assert_array_equal(layer.blobs[0].data, 1)
    np.testing.assert_array_equal(layer.blobs[1].data, 0)
    np.testing.assert_allclose(forward(layer, bottom, top)[0], x)


def test_scale_second_bottom_with_bias():
    x, s = RNG.standard_normal(X_SHAPE), RNG.standard_normal((3, 4))
    text = 'type: "Scale" scale_param { axis: 1 bias_term: true bias_filler { type: "uniform" } }'
    layer, bottom, top = build_layer(text, [x, s])
    assert [b.shape for b in layer.blobs] == [(3, 4)]  # only the bias is learned
    (y,) = forward(layer, bottom, top)
    np.testing.assert_allclose(y, x * broadcast(s, 1, 4) + broadcast(layer.blobs[0].data, 1, 4))


SCALE_CASES = [
    ('scale_param { filler { type: "gaussian" } }', [X_SHAPE]),
    ('scale_param { axis: 0 num_axes: 2 filler { type: "gaussian" } bias_term: true '
     'bias_filler { type: "gaussian" } }', [X_SHAPE]),
    ('scale_param { num_axes: 0 filler { type: "gaussian" } bias_term: true }', [X_SHAPE]),
    ('scale_param { axis: 0 num_axes: -1 filler { type: "gaussian" } }', [X_SHAPE]),  # elementwise
    ('scale_param { axis: 1 }', [X_SHAPE, (3, 4)]),
    ('scale_param { axis: 1 bias_term: true }', [X_SHAPE, (3,)]),
    ('scale_param { axis: 0 }', [X_SHAPE, ()]),
    ('scale_param { axis: 0 }', [X_SHAPE, X_SHAPE]),
]


@pytest.mark.parametrize("params, shapes", SCALE_CASES)
def test_scale_gradient(params, shapes):
    bottoms = [RNG.standard_normal(s) for s in shapes]
    check_gradient(f'type: "Scale" {params}', bottoms)


def test_scale_param_diff_accumulates():
    x = RNG.standard_normal(X_SHAPE)
    layer, bottom, top = build_layer('type: "Scale" scale_param { bias_term: true }', [x])
    forward(layer, bottom, top)
    top[0].diff[...] = 1
    for blob in layer.blobs:
        blob.diff[...] = 0
    layer.run_backward(top, [True], bottom)
    once = [b.diff.copy() for b in layer.blobs]
    layer.run_backward(top, [True], bottom)
    for blob, first in zip(layer.blobs, once):
        np.testing.assert_allclose(blob.diff, 2 * first)
    np.testing.assert_allclose(once[1], np.full(3, 16.0))


@pytest.mark.parametrize("text, shapes, message", [
    ('type: "Scale" scale_param { axis: 1 }', [X_SHAPE, (4,)], "dimension mismatch"),
    ('type: "Scale" scale_param { axis: 2 }', [X_SHAPE, (4, 2, 2)], "extends past"),
    ('type: "Scale" scale_param { axis: 3 num_axes: 2 }', [X_SHAPE], "extends past"),
    ('type: "Scale" scale_param { num_axes: -2 }', [X_SHAPE], "num_axes must be non-negative"),
    ('type: "Bias" bias_param { axis: 5 }', [X_SHAPE], "axis"),
])
def test_shape_errors_name_the_layer(text, shapes, message):
    with pytest.raises(LayerError, match=message) as info:
        build_layer(text, [np.zeros(s) for s in shapes])
    assert "layer 'layer'" in str(info.value)


def test_scale_in_place_in_a_net():
    text = """
    force_backward: true
    layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 dim: 2 } } }
    layer { name: "s1" type: "Scale" bottom: "x" top: "y" scale_param { filler { type: "gaussian" } bias_term: true } }
    layer { name: "s2" type: "Scale" bottom: "y" top: "y" scale_param { filler { type: "gaussian" } } }
    """
    net = Net(parse_text(text, caffe_pb2.NetParameter()), "TEST")
    x = RNG.standard_normal((2, 3, 2)).astype(np.float32)
    net.blobs["x"].data[...] = x
    net.forward()
    s1, b1 = (net.params["s1"][i].data.reshape(1, 3, 1) for i in range(2))
    s2 = net.params["s2"][0].data.reshape(1, 3, 1)
    np.testing.assert_allclose(net.blobs["y"].data, (x * s1 + b1) * s2, rtol=1e-6)
    dy = RNG.standard_normal(x.shape).astype(np.float32)
    net.blobs["y"].diff[...] = dy
    net.backward()
    np.testing.assert_allclose(net.blobs["x"].diff, dy * s2 * s1, rtol=1e-5)
    # The in-place layer's scale gradient uses its input (x*s1+b1), saved before overwriting.
    np.testing.assert_allclose(net.params["s2"][0].diff, (dy * (x * s1 + b1)).sum(axis=(0, 2)), rtol=1e-5)


# -- Bias ------------------------------------------------------------------------------

def test_bias_learned_and_second_bottom_forward():
    x = RNG.standard_normal(X_SHAPE)
    layer, bottom, top = build_layer('type: "Bias" bias_param { axis: 1 num_axes: 2 filler { type: "gaussian" } }',
                                     [x])
    assert layer.blobs[0].shape == (3, 4)
    np.testing.assert_allclose(forward(layer, bottom, top)[0], x + broadcast(layer.blobs[0].data, 1, 4))
    b = RNG.standard_normal((4, 2))
    layer, bottom, top = build_layer('type: "Bias" bias_param { axis: -2 }', [x, b])
    assert len(layer.blobs) == 0
    np.testing.assert_allclose(forward(layer, bottom, top)[0], x + broadcast(b, 2, 4))


def test_bias_default_filler_is_zero():
    layer, _, _ = build_layer('type: "Bias"', [np.ones(X_SHAPE)])
    np.testing.assert_array_equal(layer.blobs[0].data, 0)


@pytest.mark.parametrize("params, shapes", [
    ('bias_param { filler { type: "gaussian" } }', [X_SHAPE]),
    ('bias_param { num_axes: 0 filler { type: "gaussian" } }', [X_SHAPE]),
    ('bias_param { axis: 0 num_axes: -1 }', [X_SHAPE]),
    ('bias_param { axis: 1 }', [X_SHAPE, (3, 4, 2)]),
    ('bias_param { axis: 0 }', [X_SHAPE, ()]),
])
def test_bias_gradient(params, shapes):
    check_gradient(f'type: "Bias" {params}', [RNG.standard_normal(s) for s in shapes])


# -- one code path: CuPy gives NumPy's numbers ---------------------------------------------

@pytest.mark.gpu
@pytest.mark.parametrize("text, shapes", [
    ('type: "Scale" scale_param { bias_term: true filler { type: "gaussian" } }', [X_SHAPE]),
    ('type: "Scale" scale_param { axis: 1 }', [X_SHAPE, (3, 4)]),
    ('type: "Bias" bias_param { axis: 0 num_axes: 0 }', [X_SHAPE]),
    ('type: "Bias"', [X_SHAPE, (3,)]),
    ('type: "Scale" scale_param { bias_term: true filler { type: "gaussian" } }', [(7, 33, 5, 6)]),
])
def test_gpu_matches_cpu(text, shapes):
    import cupy

    import engine

    arrays = [RNG.standard_normal(s) for s in shapes]
    dy = RNG.standard_normal(shapes[0])
    host = engine.backend.to_host
    results = []
    for xp in (np, cupy):
        if xp is cupy:
            engine.set_mode_gpu()
        layer, bottom, top = build_layer(text, arrays, xp=xp)
        for blob in layer.blobs:
            blob.data[...] = xp.asarray(np.linspace(0.5, 1.5, blob.count).reshape(blob.shape))
            blob.diff[...] = 0
        forward(layer, bottom, top)
        top[0].diff[...] = xp.asarray(dy)
        layer.run_backward(top, [True] * len(bottom), bottom)
        results.append([host(top[0].data)] + [host(b.diff) for b in bottom] + [host(b.diff) for b in layer.blobs])
    for cpu, gpu in zip(*results, strict=True):
        np.testing.assert_allclose(gpu, cpu, rtol=1e-10, atol=1e-12)
