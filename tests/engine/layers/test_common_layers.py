"""Eltwise, Reduction, ArgMax, Filter, BatchReindex, Parameter, Silence, Embed."""

import numpy as np
import pytest
from layer_check import build_layer, check_gradient, forward

import engine
from engine import caffe_pb2
from engine.errors import LayerError
from engine.formats import parse_text

RNG = np.random.default_rng(5)
A, B, C = (RNG.standard_normal((2, 3, 2)) for _ in range(3))
X = RNG.standard_normal((2, 3, 4))


def tops(text, bottoms, num_tops=1):
    layer, bottom, top = build_layer(text, bottoms, num_tops)
    return forward(layer, bottom, top)


# -- Eltwise ------------------------------------------------------------------------------------
@pytest.mark.parametrize("text,bottoms,expected", [
    ('type: "Eltwise"', [A, B], A + B),
    ('type: "Eltwise" eltwise_param { operation: SUM coeff: 1 coeff: -0.5 coeff: 2 }', [A, B, C],
     A - 0.5 * B + 2 * C),
    ('type: "Eltwise" eltwise_param { operation: PROD }', [A, B, C], A * B * C),
    ('type: "Eltwise" eltwise_param { operation: MAX }', [A, B, C], np.maximum(np.maximum(A, B), C)),
])
def test_eltwise_forward(text, bottoms, expected):
    np.testing.assert_allclose(tops(text, bottoms)[0], expected, rtol=1e-12)


@pytest.mark.parametrize("text", [
    'type: "Eltwise"',
    'type: "Eltwise" eltwise_param { operation: SUM coeff: 1 coeff: -0.5 coeff: 2 }',
    'type: "Eltwise" eltwise_param { operation: PROD }',
    'type: "Eltwise" eltwise_param { operation: PROD stable_prod_grad: false }',
    'type: "Eltwise" eltwise_param { operation: MAX }',
])
def test_eltwise_gradient(text):
    check_gradient(text, [A, B, C])


def test_eltwise_max_ties_follow_caffe():
    """Between bottoms 0 and 1 a tie goes to 1; a later bottom must be strictly larger."""
    a = np.array([1.0, 2.0, 3.0])
    b = np.array([1.0, 1.0, 3.0])
    c = np.array([1.0, 5.0, 3.0])
    layer, bottom, top = build_layer('type: "Eltwise" eltwise_param { operation: MAX }', [a, b, c])
    forward(layer, bottom, top)
    top[0].diff[...] = [10.0, 20.0, 30.0]
    layer.run_backward(top, [True, True, True], bottom)
    np.testing.assert_array_equal(bottom[0].diff, [0, 0, 0])
    np.testing.assert_array_equal(bottom[1].diff, [10, 0, 30])
    np.testing.assert_array_equal(bottom[2].diff, [0, 20, 0])


@pytest.mark.parametrize("text,bottoms,message", [
    ('type: "Eltwise" eltwise_param { coeff: 1 }', [A, B], "one coefficient per bottom"),
    ('type: "Eltwise" eltwise_param { operation: PROD coeff: 1 coeff: 2 }', [A, B], "only takes coefficients"),
    ('type: "Eltwise"', [A, X], "bottom\\[1\\]"),
    ('type: "Eltwise"', [A], "at least 2"),
])
def test_eltwise_errors(text, bottoms, message):
    with pytest.raises(LayerError, match=message):
        build_layer(text, bottoms)


# -- Reduction ----------------------------------------------------------------------------------
def _reduce(op, x, axis, coeff):
    rows = x.reshape(int(np.prod(x.shape[:axis])), -1)
    value = {"SUM": rows.sum(1), "ASUM": np.abs(rows).sum(1), "SUMSQ": (rows ** 2).sum(1),
             "MEAN": rows.mean(1)}[op]
    return (coeff * value).reshape(x.shape[:axis])


@pytest.mark.parametrize("op", ["SUM", "ASUM", "SUMSQ", "MEAN"])
@pytest.mark.parametrize("axis,coeff", [(0, 1.0), (1, 0.5), (2, -2.0), (-1, 1.0)])
def test_reduction(op, axis, coeff):
    text = f'type: "Reduction" reduction_param {{ operation: {op} axis: {axis} coeff: {coeff} }}'
    y = tops(text, [X])[0]
    canonical = axis % X.ndim
    assert y.shape == X.shape[:canonical]
    np.testing.assert_allclose(y, _reduce(op, X, canonical, coeff), rtol=1e-12)
    check_gradient(text, [X], kink=0.0 if op == "ASUM" else None, kink_range=1e-3 if op == "ASUM" else None)


def test_reduction_default_is_sum_of_everything():
    y = tops('type: "Reduction"', [X])[0]
    assert y.shape == ()
    np.testing.assert_allclose(y, X.sum(), rtol=1e-12)


# -- ArgMax -------------------------------------------------------------------------------------
V = np.array([[0.5, 2.0, 2.0, -1.0, 0.0, 3.0],
              [1.0, 1.0, 1.0, 1.0, 1.0, 1.0],
              [-3.0, -2.0, -5.0, 7.0, -2.0, 0.0]])


@pytest.mark.parametrize("text,expected", [
    ('type: "ArgMax"', [[[5]], [[5]], [[3]]]),
    # Ties: std::greater on (value, index) pairs puts the higher index first.
    ('type: "ArgMax" argmax_param { top_k: 3 }', [[[5, 2, 1]], [[5, 4, 3]], [[3, 5, 4]]]),
    ('type: "ArgMax" argmax_param { top_k: 2 out_max_val: true }',
     [[[5, 2], [3.0, 2.0]], [[5, 4], [1.0, 1.0]], [[3, 5], [7.0, 0.0]]]),
    ('type: "ArgMax" argmax_param { axis: 1 }', [[5], [5], [3]]),
    ('type: "ArgMax" argmax_param { axis: 1 top_k: 2 out_max_val: true }', [[3.0, 2.0], [1.0, 1.0], [7.0, 0.0]]),
    ('type: "ArgMax" argmax_param { axis: 0 }', [[1, 0, 0, 2, 1, 0]]),
    ('type: "ArgMax" argmax_param { axis: 0 top_k: 2 }', [[1, 0, 0, 2, 1, 0], [0, 1, 1, 1, 0, 1]]),
])
def test_argmax(text, expected):
    np.testing.assert_array_equal(tops(text, [V])[0], np.array(expected, dtype=float))


def test_argmax_shapes_of_4d_bottoms():
    x = RNG.standard_normal((2, 3, 4, 5))
    assert tops('type: "ArgMax" argmax_param { top_k: 3 out_max_val: true }', [x])[0].shape == (2, 2, 3, 1)
    y = tops('type: "ArgMax" argmax_param { axis: 2 top_k: 2 }', [x])[0]
    assert y.shape == (2, 3, 2, 5)
    np.testing.assert_array_equal(y, np.argsort(-x, axis=2, kind="stable")[:, :, :2])
    y = tops('type: "ArgMax"', [x])[0]
    np.testing.assert_array_equal(y.reshape(2), x.reshape(2, -1).argmax(axis=1))


@pytest.mark.parametrize("text,message", [
    ('type: "ArgMax" argmax_param { top_k: 7 }', "flattened"),
    ('type: "ArgMax" argmax_param { axis: 0 top_k: 4 }', "dimension of the axis"),
    ('type: "ArgMax" argmax_param { top_k: 0 }', "less than 1"),
])
def test_argmax_errors(text, message):
    with pytest.raises(LayerError, match=message):
        build_layer(text, [V])


# -- Filter and BatchReindex --------------------------------------------------------------------
H = RNG.standard_normal((4, 3))
SEL = np.array([1.0, 0.0, 1.0, 1.0])


def test_filter_forward_and_backward():
    layer, bottom, top = build_layer('type: "Filter"', [H, H * 2, SEL], num_tops=2)
    assert top[0].shape == (4, 3)  # before any data, the full batch, as Caffe's first reshape
    kept, doubled = forward(layer, bottom, top)
    np.testing.assert_array_equal(kept, H[[0, 2, 3]])
    np.testing.assert_array_equal(doubled, 2 * H[[0, 2, 3]])
    top[0].diff[...] = 1.0
    top[1].diff[...] = 2.0
    bottom[0].diff[...] = 9.0
    layer.run_backward(top, [True, True, False], bottom)
    np.testing.assert_array_equal(bottom[0].diff, [[1] * 3, [0] * 3, [1] * 3, [1] * 3])
    np.testing.assert_array_equal(bottom[1].diff, [[2] * 3, [0] * 3, [2] * 3, [2] * 3])
    with pytest.raises(LayerError, match="filter index"):
        layer.run_backward(top, [True, True, True], bottom)


def test_filter_gradient_and_empty_selection():
    check_gradient('type: "Filter"', [H, SEL], bottoms_checked=[0])
    assert tops('type: "Filter"', [H, np.zeros(4)])[0].shape == (0, 3)


@pytest.mark.parametrize("bottoms,num_tops,message", [
    ([H, SEL], 2, "minus one"),
    ([H, SEL[:3]], 1, "0th dimension"),
    ([H, np.ones((4, 2))], 1, "singletons"),
])
def test_filter_errors(bottoms, num_tops, message):
    with pytest.raises(LayerError, match=message):
        build_layer('type: "Filter"', bottoms, num_tops)


IDX = np.array([3.0, 0.0, 0.0, 2.0, 1.0, 0.0])


def test_batch_reindex():
    layer, bottom, top = build_layer('type: "BatchReindex"', [H, IDX])
    np.testing.assert_array_equal(forward(layer, bottom, top)[0], H[[3, 0, 0, 2, 1, 0]])
    top[0].diff[...] = np.arange(18).reshape(6, 3)
    layer.run_backward(top, [True, False], bottom)
    expected = np.zeros((4, 3))
    np.add.at(expected, [3, 0, 0, 2, 1, 0], np.arange(18).reshape(6, 3))
    np.testing.assert_array_equal(bottom[0].diff, expected)
    check_gradient('type: "BatchReindex"', [H, IDX], bottoms_checked=[0])
    with pytest.raises(LayerError, match="index"):
        layer.run_backward(top, [True, True], bottom)


@pytest.mark.parametrize("index,message", [([0.0, -1.0], "negative"), ([4.0], "greater than batch size")])
def test_batch_reindex_bad_index(index, message):
    with pytest.raises(LayerError, match=message):
        tops('type: "BatchReindex"', [H, np.array(index)])


# -- Embed --------------------------------------------------------------------------------------
EMBED = ('type: "Embed" embed_param { input_dim: 5 num_output: 3 '
         'weight_filler { type: "gaussian" std: 1 } bias_filler { type: "uniform" min: -1 max: 1 } }')
INDICES = np.array([[0.0, 4.0, 2.0], [2.0, 2.0, 1.0]])


def test_embed_forward():
    layer, bottom, top = build_layer(EMBED, [INDICES])
    y = forward(layer, bottom, top)[0]
    w, b = layer.blobs[0].data, layer.blobs[1].data
    assert layer.blobs[0].shape == (5, 3) and y.shape == (2, 3, 3)
    np.testing.assert_allclose(y, w[INDICES.astype(int)] + b, rtol=1e-12)


@pytest.mark.parametrize("text", [EMBED, EMBED.replace("num_output: 3", "num_output: 3 bias_term: false")])
def test_embed_gradient(text):
    check_gradient(text, [INDICES], bottoms_checked=[])


def test_embed_weight_gradient_adds_repeated_rows():
    layer, bottom, top = build_layer(EMBED, [INDICES])
    forward(layer, bottom, top)
    top[0].diff[...] = 1.0
    for blob in layer.blobs:
        blob.diff[...] = 1.0
    layer.run_backward(top, [False], bottom)
    np.testing.assert_array_equal(layer.blobs[0].diff[:, 0], [2, 2, 4, 1, 2])  # 1 + uses of each row
    np.testing.assert_array_equal(layer.blobs[1].diff, [7, 7, 7])
    with pytest.raises(LayerError, match="EmbedLayer input"):
        layer.run_backward(top, [True], bottom)


@pytest.mark.parametrize("values", [[5.0], [-1.0], [1.5]])
def test_embed_bad_indices(values):
    with pytest.raises(LayerError, match="integers"):
        tops(EMBED, [np.array(values)])


def test_embed_needs_sizes():
    with pytest.raises(LayerError, match="input_dim"):
        build_layer('type: "Embed" embed_param { num_output: 3 }', [INDICES])


# -- Parameter and Silence, in nets -------------------------------------------------------------
NET = """
force_backward: true
layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 } } }
layer { name: "p" type: "Parameter" top: "p" parameter_param { shape { dim: 2 dim: 3 } } }
layer { name: "sum" type: "Eltwise" bottom: "x" bottom: "p" top: "y" eltwise_param { coeff: 1 coeff: 3 } }
layer { name: "mute" type: "Silence" bottom: "x" }
"""


def test_parameter_and_silence_in_a_net():
    net = engine.Net(parse_text(NET, caffe_pb2.NetParameter(), "<test>"), engine.TEST)
    assert net.outputs == ["y"]
    assert net.params["p"][0].shape == (2, 3)
    net.params["p"][0].data[...] = 1.5
    x = RNG.standard_normal((2, 3))
    net.blobs["x"].data[...] = x
    net.forward()
    np.testing.assert_allclose(net.blobs["y"].data, x + 4.5, rtol=1e-6)
    net.blobs["y"].diff[...] = 2.0
    net.backward()
    np.testing.assert_array_equal(net.params["p"][0].diff, 6.0)  # gradient through the shared top
    np.testing.assert_array_equal(net.blobs["x"].diff, 2.0)  # Silence's branch adds zero


def test_silence_writes_zero_diffs():
    layer, bottom, top = build_layer('type: "Silence"', [A, B], num_tops=0)
    bottom[0].diff[...] = 5
    bottom[1].diff[...] = 5
    layer.run_backward(top, [True, False], bottom)
    np.testing.assert_array_equal(bottom[0].diff, 0)
    np.testing.assert_array_equal(bottom[1].diff, 5)


def test_parameter_gradient():
    check_gradient('type: "Parameter" parameter_param { shape { dim: 3 dim: 2 } }', [])


# -- GPU: the CuPy path gives the NumPy path's numbers ------------------------------------------
GPU_CASES = [
    ('type: "ELU"', [X], 1), ('type: "BNLL"', [X], 1), ('type: "Swish"', [X], 1), ('type: "AbsVal"', [X], 1),
    ('type: "Clip" clip_param { min: -0.5 max: 0.5 }', [X], 1), ('type: "Sigmoid"', [X], 1),
    ('type: "TanH"', [X], 1), ('type: "Dropout"', [X], 1),
    ('type: "Power" power_param { power: 3 scale: 2 shift: 0.5 }', [X], 1),
    ('type: "Exp" exp_param { base: 2 scale: 0.5 }', [X], 1),
    ('type: "Log" log_param { shift: 10 }', [X], 1), ('type: "PReLU"', [X], 1),
    ('type: "PReLU" prelu_param { channel_shared: true }', [X], 1),
    ('type: "Concat" concat_param { axis: 2 }', [A, B], 1), ('type: "Slice" slice_param { slice_point: 1 }', [X], 2),
    ('type: "Flatten"', [X], 1), ('type: "Reshape" reshape_param { shape { dim: -1 dim: 2 } }', [X], 1),
    ('type: "Tile" tile_param { tiles: 3 }', [X], 1),
    ('type: "Eltwise" eltwise_param { operation: MAX }', [A, B, C], 1),
    ('type: "Eltwise" eltwise_param { operation: PROD }', [A, B, C], 1),
    ('type: "Eltwise" eltwise_param { coeff: 2 coeff: -1 }', [A, B], 1),
    ('type: "Reduction" reduction_param { operation: ASUM axis: 1 }', [X], 1),
    ('type: "ArgMax" argmax_param { top_k: 2 out_max_val: true }', [V], 1),
    ('type: "ArgMax" argmax_param { axis: 0 top_k: 2 }', [V], 1),
    ('type: "Filter"', [H, SEL], 1), ('type: "BatchReindex"', [H, IDX], 1), (EMBED, [INDICES], 1),
]


def _run_on(xp, text, arrays, num_tops, params=None):
    """Forward and backward on module xp; returns host copies of tops, bottom diffs, param diffs, params."""
    from engine.backend import to_host

    layer, bottom, top = build_layer(text, arrays, num_tops, xp=xp)
    for blob, values in zip(layer.blobs, params or []):
        blob.data[...] = xp.asarray(values)
    forward(layer, bottom, top)
    rng = np.random.default_rng(0)
    for blob in top:
        blob.diff[...] = xp.asarray(rng.standard_normal(blob.shape))
    for blob in layer.blobs:
        blob.diff[...] = 0
    if layer.type != "ArgMax":
        down = [layer.type != "Embed"] * len(bottom)
        if layer.type in ("Filter", "BatchReindex"):
            down[-1] = False
        layer.run_backward(top, down, bottom)
    return ([to_host(t.data) for t in top], [to_host(b.diff) for b in bottom],
            [to_host(b.diff) for b in layer.blobs], [to_host(b.data) for b in layer.blobs])


@pytest.mark.gpu
@pytest.mark.parametrize("text,arrays,num_tops", GPU_CASES, ids=[c[0] for c in GPU_CASES])
def test_gpu_matches_cpu(text, arrays, num_tops):
    import cupy

    cpu = _run_on(np, text, arrays, num_tops)
    engine.set_mode_gpu()
    gpu = _run_on(cupy, text, arrays, num_tops, params=cpu[3])
    for ours, theirs in zip(cpu[:3], gpu[:3]):
        for a, b in zip(ours, theirs, strict=True):
            np.testing.assert_allclose(b, a, rtol=1e-10, atol=1e-12)


NO_GRADIENT_NET = """
force_backward: true
layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 } } }
layer { name: "th" type: "Threshold" bottom: "x" top: "t" }
layer { name: "am" type: "ArgMax" bottom: "x" top: "a" }
layer { name: "ip" type: "InnerProduct" bottom: "x" top: "y" inner_product_param { num_output: 2 } }
"""


def test_layers_without_gradient_under_force_backward():
    """Threshold and ArgMax take no gradient; a force_backward net still runs its backward."""
    net = engine.Net(parse_text(NO_GRADIENT_NET, caffe_pb2.NetParameter(), "<test>"), engine.TEST)
    net.params["ip"][0].data[...] = 1.0
    net.blobs["x"].data[...] = RNG.standard_normal((2, 3))
    net.forward()
    net.blobs["y"].diff[...] = 1.0
    net.blobs["t"].diff[...] = 5.0
    net.backward()
    np.testing.assert_array_equal(net.blobs["x"].diff, 2.0)  # only the InnerProduct's gradient
