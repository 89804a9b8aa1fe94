"""Neuron layers (neuron.py, neuron_math.py, prelu.py): Caffe's formulas, gradients, in-place use."""

import numpy as np
import pytest
from layer_check import build_layer, check_gradient, forward, layer_param

from engine import caffe_pb2
from engine.blob import Blob
from engine.errors import LayerError
from engine.layers import layer_class

RNG = np.random.default_rng(3)
X = RNG.standard_normal((2, 3, 4, 3))
POSITIVE = RNG.uniform(0.2, 2.0, (2, 3, 4))


def run(text, x, phase=caffe_pb2.TEST):
    layer, bottom, top = build_layer(text, [x], phase=phase)
    return forward(layer, bottom, top)[0]


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


FORWARD_CASES = [
    ('type: "ReLU" relu_param { negative_slope: 0.1 }', lambda x: np.where(x > 0, x, 0.1 * x)),
    ('type: "ELU" elu_param { alpha: 0.5 }', lambda x: np.where(x > 0, x, 0.5 * (np.exp(x) - 1))),
    ('type: "ELU"', lambda x: np.where(x > 0, x, np.exp(x) - 1)),
    ('type: "Sigmoid"', sigmoid),
    ('type: "TanH"', np.tanh),
    ('type: "AbsVal"', np.abs),
    ('type: "BNLL"', lambda x: np.log(1 + np.exp(x))),
    ('type: "Clip" clip_param { min: -0.5 max: 0.7 }', lambda x: np.clip(x, -0.5, 0.7)),
    ('type: "Swish"', lambda x: x * sigmoid(x)),
    ('type: "Swish" swish_param { beta: 1.5 }', lambda x: x * sigmoid(1.5 * x)),
    ('type: "Threshold" threshold_param { threshold: 0.3 }', lambda x: (x > 0.3).astype(float)),
    ('type: "Power" power_param { power: 2 scale: 0.5 shift: 1 }', lambda x: (1 + 0.5 * x) ** 2),
    ('type: "Power" power_param { power: 3 scale: -2 }', lambda x: (-2 * x) ** 3),
    ('type: "Power" power_param { power: 0 scale: 3 shift: 2 }', lambda x: np.ones_like(x)),
    ('type: "Power" power_param { power: 2 scale: 0 shift: 3 }', lambda x: np.full_like(x, 9.0)),
    ('type: "Power" power_param { scale: 2 shift: -1 }', lambda x: 2 * x - 1),
    ('type: "Exp"', np.exp),
    ('type: "Exp" exp_param { base: 2 scale: 0.5 shift: 0.1 }', lambda x: 2 ** (0.1 + 0.5 * x)),
    ('type: "Exp" exp_param { scale: -1 shift: 1 }', lambda x: np.exp(1 - x)),
    ('type: "Dropout" dropout_param { dropout_ratio: 0.3 }', lambda x: x),  # TEST phase: identity
]


@pytest.mark.parametrize("text,expected", FORWARD_CASES, ids=[c[0] for c in FORWARD_CASES])
def test_forward_matches_formula(text, expected):
    # Parameters are float32 in the schema (0.1 is 0.1 + 1.5e-9), hence rtol 1e-6.
    np.testing.assert_allclose(run(text, X), expected(X), rtol=1e-6, atol=1e-7)


LOG_CASES = [
    ('type: "Log"', np.log),
    ('type: "Log" log_param { base: 10 scale: 2 shift: 0.5 }', lambda x: np.log10(2 * x + 0.5)),
    ('type: "Log" log_param { base: 2 shift: 1 }', lambda x: np.log2(x + 1)),
]


@pytest.mark.parametrize("text,expected", LOG_CASES, ids=[c[0] for c in LOG_CASES])
def test_log_forward(text, expected):
    np.testing.assert_allclose(run(text, POSITIVE), expected(POSITIVE), rtol=1e-6)


GRADIENT_CASES = [
    ('type: "ReLU"', 0.0),
    ('type: "ReLU" relu_param { negative_slope: 0.1 }', 0.0),
    ('type: "ELU" elu_param { alpha: 0.5 }', 0.0),
    ('type: "ELU" elu_param { alpha: 2 }', 0.0),
    ('type: "Sigmoid"', None),
    ('type: "TanH"', None),
    ('type: "AbsVal"', 0.0),
    ('type: "BNLL"', None),
    ('type: "Clip" clip_param { min: -0.5 max: 0.7 }', (-0.5, 0.7)),
    ('type: "Swish"', None),
    ('type: "Swish" swish_param { beta: 1.5 }', None),
    ('type: "Swish" swish_param { beta: -0.7 }', None),
    ('type: "Power" power_param { power: 2 scale: 0.5 shift: 1 }', None),
    ('type: "Power" power_param { power: 3 scale: -2 }', None),
    ('type: "Power" power_param { power: 3 scale: 0.5 shift: 0.3 }', None),
    ('type: "Power" power_param { scale: 2 shift: -1 }', None),
    ('type: "Power" power_param { power: 0 scale: 3 }', None),
    ('type: "Power" power_param { power: 2 scale: 0 shift: 3 }', None),
    ('type: "Exp"', None),
    ('type: "Exp" exp_param { base: 2 scale: 0.5 shift: 0.1 }', None),
    ('type: "Exp" exp_param { base: 0.5 scale: -1 }', None),
    ('type: "Dropout" dropout_param { dropout_ratio: 0.3 }', None),
    ('type: "PReLU"', 0.0),
    ('type: "PReLU" prelu_param { channel_shared: true }', 0.0),
    ('type: "PReLU" prelu_param { filler { type: "uniform" min: -0.5 max: 0.5 } }', 0.0),
]


def _check(text, x, kink, phase=caffe_pb2.TEST):
    if isinstance(kink, tuple):  # two kinks: keep inputs away from both
        x = np.where(np.min([abs(x - k) for k in kink], axis=0) < 1e-3, x + 0.01, x)
        kink = None
    check_gradient(text, [x], kink=kink, kink_range=1e-3 if kink is not None else None, phase=phase)


@pytest.mark.parametrize("text,kink", GRADIENT_CASES, ids=[c[0] for c in GRADIENT_CASES])
def test_gradient(text, kink):
    _check(text, X, kink)


@pytest.mark.parametrize("text", [c[0] for c in LOG_CASES] + ['type: "Power" power_param { power: -1.5 scale: 2 }',
                                                              'type: "Power" power_param { power: 0.5 }'])
def test_gradient_positive_inputs(text):
    check_gradient(text, [POSITIVE])


def test_prelu_gradient_two_axes():
    check_gradient('type: "PReLU"', [RNG.standard_normal((4, 3))], kink=0.0, kink_range=1e-3)


@pytest.mark.parametrize("ratio", [0.3, 0.5])
def test_dropout_train_gradient(ratio):
    _check(f'type: "Dropout" dropout_param {{ dropout_ratio: {ratio} }}', X, None, phase=caffe_pb2.TRAIN)


def test_dropout_train_masks_and_scales():
    x = np.ones((200, 50))
    y = run('type: "Dropout" dropout_param { dropout_ratio: 0.3 }', x, phase=caffe_pb2.TRAIN)
    kept = y != 0
    np.testing.assert_allclose(y[kept], 1 / 0.7)
    assert abs(kept.mean() - 0.7) < 0.02


def test_dropout_rejects_ratio_one():
    with pytest.raises(LayerError, match="dropout_ratio"):
        build_layer('type: "Dropout" dropout_param { dropout_ratio: 1 }', [X])


def test_threshold_has_no_backward():
    layer, bottom, top = build_layer('type: "Threshold"', [X])
    forward(layer, bottom, top)
    with pytest.raises(LayerError, match="not implemented"):
        layer.run_backward(top, [True], bottom)


def test_absval_refuses_in_place():
    layer = layer_class("AbsVal")(layer_param('type: "AbsVal"'))
    blob = Blob(X.shape, dtype=np.float64)
    with pytest.raises(LayerError, match="in-place"):
        layer.set_up([blob], [blob])


@pytest.mark.parametrize("text,base", [('type: "Log" log_param { base: 1 }', "log"),
                                       ('type: "Log" log_param { base: -2 }', "positive"),
                                       ('type: "Exp" exp_param { base: 0 }', "positive")])
def test_bad_base(text, base):
    with pytest.raises(LayerError, match=base):
        build_layer(text, [POSITIVE])


def _results(text, x, in_place, phase=caffe_pb2.TEST, dy=None):
    """Forward and backward with the layer's top separate from, or equal to, its bottom."""
    param = layer_param(text, phase)
    layer = layer_class(param.type)(param)
    bottom = Blob(x.shape, dtype=np.float64)
    bottom.data[...] = x
    top = bottom if in_place else Blob((), dtype=np.float64)
    layer.set_up([bottom], [top])
    for blob in layer.blobs:
        blob.diff[...] = 0
    forward(layer, [bottom], [top], seed=5)
    y = top.data.copy()
    top.diff[...] = dy
    layer.run_backward([top], [True], [bottom])
    return y, bottom.diff.copy(), [b.diff.copy() for b in layer.blobs]


IN_PLACE = ['type: "ReLU" relu_param { negative_slope: 0.2 }', 'type: "ELU"', 'type: "Sigmoid"', 'type: "TanH"',
            'type: "BNLL"', 'type: "Clip" clip_param { min: -0.5 max: 0.7 }', 'type: "Swish" swish_param { beta: 2 }',
            'type: "Power" power_param { power: 3 scale: 0.5 shift: 0.2 }', 'type: "Exp" exp_param { base: 3 }',
            'type: "Dropout"', 'type: "PReLU" prelu_param { filler { type: "constant" value: 0.3 } }',
            'type: "PReLU" prelu_param { channel_shared: true }']


@pytest.mark.parametrize("text", IN_PLACE)
@pytest.mark.parametrize("phase", [caffe_pb2.TRAIN, caffe_pb2.TEST])
def test_in_place_equals_separate(text, phase):
    dy = RNG.standard_normal(X.shape)
    separate = _results(text, X, False, phase, dy)
    together = _results(text, X, True, phase, dy)
    for a, b in zip(separate[:2], together[:2]):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    for a, b in zip(separate[2], together[2]):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_log_in_place_equals_separate():
    dy = RNG.standard_normal(POSITIVE.shape)
    separate = _results('type: "Log" log_param { scale: 2 }', POSITIVE, False, dy=dy)
    together = _results('type: "Log" log_param { scale: 2 }', POSITIVE, True, dy=dy)
    np.testing.assert_allclose(separate[1], together[1], rtol=1e-12)


def test_prelu_parameters():
    layer, _, _ = build_layer('type: "PReLU"', [X])
    assert layer.blobs[0].shape == (3,)
    np.testing.assert_array_equal(layer.blobs[0].data, 0.25)
    layer, _, _ = build_layer('type: "PReLU" prelu_param { channel_shared: true }', [X])
    assert layer.blobs[0].shape == ()
    with pytest.raises(LayerError, match="axes"):
        build_layer('type: "PReLU"', [np.zeros(4)])


def test_prelu_forward_per_channel():
    layer, bottom, top = build_layer('type: "PReLU"', [X])
    layer.blobs[0].data[...] = [0.1, -0.2, 0.3]
    y = forward(layer, bottom, top)[0]
    slope = np.array([0.1, -0.2, 0.3]).reshape(1, 3, 1, 1)
    np.testing.assert_allclose(y, np.where(X > 0, X, X * slope), rtol=1e-12)


def test_prelu_slope_gradient_accumulates():
    layer, bottom, top = build_layer('type: "PReLU"', [X])
    forward(layer, bottom, top)
    top[0].diff[...] = 1
    layer.blobs[0].diff[...] = 10
    layer.run_backward(top, [False], bottom)
    expected = 10 + np.where(X <= 0, X, 0).sum(axis=(0, 2, 3))
    np.testing.assert_allclose(layer.blobs[0].diff, expected, rtol=1e-12)


def test_float32_stays_float32():
    x = X.astype(np.float32)
    for text in ['type: "ELU"', 'type: "BNLL"', 'type: "Swish"', 'type: "Power" power_param { power: 2 }',
                 'type: "PReLU"']:
        layer, bottom, top = build_layer(text, [x], dtype=np.float32)
        forward(layer, bottom, top)
        top[0].diff[...] = 1
        layer.run_backward(top, [True], bottom)
        assert top[0].data.dtype == np.float32 and bottom[0].diff.dtype == np.float32


@pytest.mark.parametrize("phase", [caffe_pb2.TRAIN, caffe_pb2.TEST])
def test_dropout_without_train_scaling(phase):
    """scale_train: false (a fork's option, honoured when the schema has it): TEST scales by 1 - ratio."""
    layer, bottom, top = build_layer('type: "Dropout" dropout_param { dropout_ratio: 0.25 }', [np.ones((40, 40))],
                                     phase=phase)
    layer.scale_train = False
    y = forward(layer, bottom, top)[0]
    if phase == caffe_pb2.TRAIN:
        assert set(np.unique(y)) == {0.0, 1.0}
    else:
        np.testing.assert_allclose(y, 0.75)
    top[0].diff[...] = 1
    layer.run_backward(top, [True], bottom)
    np.testing.assert_allclose(bottom[0].diff, y)


@pytest.mark.gpu
@pytest.mark.parametrize("slope", [0.0, 0.1])
def test_relu_on_gpu_matches_cpu(slope):
    import cupy

    from engine import backend

    text = f'type: "ReLU" relu_param {{ negative_slope: {slope} }}'
    x = RNG.standard_normal((3, 4, 5))
    dy = RNG.standard_normal(x.shape)
    results = []
    for xp in (np, cupy):
        backend.set_mode_gpu() if xp is cupy else backend.set_mode_cpu()
        layer, bottom, top = build_layer(text, [x], xp=xp)
        layer.run_forward(bottom, top)
        top[0].diff[...] = xp.asarray(dy)
        layer.backward(top, [True], bottom)
        results.append([backend.to_host(a) for a in (top[0].data, bottom[0].diff)])
    for mine, theirs in zip(*results[::-1]):
        np.testing.assert_array_equal(mine, theirs)


@pytest.mark.gpu
def test_dropout_on_gpu_masks_and_scales():
    import cupy

    from engine import backend

    backend.set_mode_gpu()
    x = np.abs(RNG.standard_normal((64, 1000))) + 0.1
    layer, bottom, top = build_layer('type: "Dropout" dropout_param { dropout_ratio: 0.3 }', [x],
                                     phase=caffe_pb2.TRAIN, xp=cupy)
    layer.run_forward(bottom, top)
    y = top[0].data.get()
    kept = y != 0
    assert abs(kept.mean() - 0.7) < 0.01
    np.testing.assert_allclose(y[kept], x[kept] / 0.7)
    top[0].diff[...] = 1.0
    layer.backward(top, [True], bottom)
    np.testing.assert_allclose(bottom[0].diff.get(), kept / 0.7)
