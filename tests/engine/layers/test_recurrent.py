"""LSTMUnit, LSTM and RNN: step formulas, Caffe's parameter layout, state carrying,
expose_hidden, and gradients through time."""

import numpy as np
import pytest
from layer_check import build_layer, check_gradient, forward

from engine.errors import LayerError

RNG = np.random.default_rng(17)
T, N, I, S, H = 4, 3, 2, 3, 2
FILLERS = 'weight_filler { type: "gaussian" std: 0.5 } bias_filler { type: "uniform" min: -0.5 max: 0.5 }'
CONT = np.array([[0, 0, 0], [1, 1, 0], [1, 0, 1], [1, 1, 1]], dtype=float)


def sig(x):
    return 1 / (1 + np.exp(-x))


def text(kind, expose=False, hidden=H):
    return (f'type: "{kind}" recurrent_param {{ num_output: {hidden} {FILLERS} '
            f'expose_hidden: {str(expose).lower()} }}')


def reference_lstm(x, cont, w, static=None, h=None, c=None):
    """Caffe's unrolled LSTM, written out plainly. w: W_xc, b_c, [W_xc_static], W_hc."""
    w_xc, b_c, w_hc = w[0], w[1], w[-1]
    h = np.zeros((x.shape[1], H)) if h is None else h
    c = np.zeros((x.shape[1], H)) if c is None else c
    out = []
    for t in range(x.shape[0]):
        gates = (cont[t][:, None] * h) @ w_hc.T + x[t].reshape(x.shape[1], -1) @ w_xc.T + b_c
        if static is not None:
            gates = gates + static.reshape(x.shape[1], -1) @ w[2].T
        i, f, o, g = sig(gates[:, :H]), sig(gates[:, H:2 * H]), sig(gates[:, 2 * H:3 * H]), np.tanh(gates[:, 3 * H:])
        c = cont[t][:, None] * f * c + i * g
        h = o * np.tanh(c)
        out.append(h)
    return np.stack(out), h, c


def reference_rnn(x, cont, w, static=None, h=None):
    """Caffe's unrolled RNN. w: W_xh, b_h, [W_xh_static], W_hh, W_ho, b_o."""
    w_xh, b_h, w_hh, w_ho, b_o = w[0], w[1], w[-3], w[-2], w[-1]
    h = np.zeros((x.shape[1], H)) if h is None else h
    out = []
    for t in range(x.shape[0]):
        pre = (cont[t][:, None] * h) @ w_hh.T + x[t].reshape(x.shape[1], -1) @ w_xh.T + b_h
        if static is not None:
            pre = pre + static.reshape(x.shape[1], -1) @ w[2].T
        h = np.tanh(pre)
        out.append(np.tanh(h @ w_ho.T + b_o))
    return np.stack(out), h


def weights(layer):
    return [b.data.copy() for b in layer.blobs]


# -- LSTMUnit ---------------------------------------------------------------------------

def test_lstm_unit_forward_by_hand():
    c_prev = RNG.standard_normal((1, N, H))
    gates = RNG.standard_normal((1, N, 4 * H))
    cont = np.array([[1.0, 0.0, 1.0]])
    layer, bottom, top = build_layer('type: "LSTMUnit"', [c_prev, gates, cont], num_tops=2)
    c, h = forward(layer, bottom, top)
    x = gates[0]
    i, f, o, g = sig(x[:, :H]), sig(x[:, H:2 * H]), sig(x[:, 2 * H:3 * H]), np.tanh(x[:, 3 * H:])
    f = f * cont[0][:, None]
    np.testing.assert_allclose(c[0], f * c_prev[0] + i * g)
    np.testing.assert_allclose(h[0], o * np.tanh(f * c_prev[0] + i * g))
    assert not layer.allow_force_backward(2)


def test_lstm_unit_gradient_and_cont_refused():
    bottoms = [RNG.standard_normal((1, N, H)), RNG.standard_normal((1, N, 4 * H)), np.array([[1.0, 0.0, 1.0]])]
    check_gradient('type: "LSTMUnit"', bottoms, num_tops=2, bottoms_checked=[0, 1])
    layer, bottom, top = build_layer('type: "LSTMUnit"', bottoms, num_tops=2)
    with pytest.raises(LayerError, match="sequence indicators"):
        layer.run_backward(top, [True, True, True], bottom)


def test_lstm_unit_shape_checks():
    with pytest.raises(LayerError, match="4 \\* 2 gate inputs"):
        build_layer('type: "LSTMUnit"', [np.zeros((1, N, H)), np.zeros((1, N, 3 * H)), np.zeros((1, N))], num_tops=2)
    with pytest.raises(LayerError, match="bottom\\[2\\]"):
        build_layer('type: "LSTMUnit"', [np.zeros((1, N, H)), np.zeros((1, N, 4 * H)), np.zeros((1, 2))], num_tops=2)


# -- parameter layout -------------------------------------------------------------------

@pytest.mark.parametrize("kind, static, shapes", [
    ("LSTM", False, [(4 * H, I), (4 * H,), (4 * H, H)]),
    ("LSTM", True, [(4 * H, I), (4 * H,), (4 * H, S), (4 * H, H)]),
    ("RNN", False, [(H, I), (H,), (H, H), (H, H), (H,)]),
    ("RNN", True, [(H, I), (H,), (H, S), (H, H), (H, H), (H,)]),
])
def test_parameter_blobs_in_caffe_order(kind, static, shapes):
    bottoms = [np.zeros((T, N, I)), CONT] + ([np.zeros((N, S))] if static else [])
    layer, _, top = build_layer(text(kind), bottoms)
    assert [b.shape for b in layer.blobs] == shapes
    assert top[0].shape == (T, N, H)


# -- forward against the plain formulas -------------------------------------------------

@pytest.mark.parametrize("static", [False, True])
def test_lstm_forward(static):
    x = RNG.standard_normal((T, N, 1, I))
    xs = RNG.standard_normal((N, S)) if static else None
    layer, bottom, top = build_layer(text("LSTM"), [x, CONT] + ([xs] if static else []))
    (h,) = forward(layer, bottom, top)
    expected, _, _ = reference_lstm(x, CONT, weights(layer), xs)
    np.testing.assert_allclose(h, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("static", [False, True])
def test_rnn_forward(static):
    x = RNG.standard_normal((T, N, I))
    xs = RNG.standard_normal((N, 1, S)) if static else None
    layer, bottom, top = build_layer(text("RNN"), [x, CONT] + ([xs] if static else []))
    (o,) = forward(layer, bottom, top)
    expected, _ = reference_rnn(x, CONT, weights(layer), xs)
    np.testing.assert_allclose(o, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kind", ["LSTM", "RNN"])
def test_state_carries_over_between_batches(kind):
    x = RNG.standard_normal((2 * T, N, I))
    cont = np.ones((2 * T, N))
    cont[0] = 0
    whole, bottom, top = build_layer(text(kind), [x, cont])
    (expected,) = forward(whole, bottom, top)
    halves, bottom, top = build_layer(text(kind), [x[:T], cont[:T]])
    for src, dst in zip(whole.blobs, halves.blobs):
        dst.data[...] = src.data
    (first,) = forward(halves, bottom, top)
    bottom[0].data[...], bottom[1].data[...] = x[T:], cont[T:]
    (second,) = forward(halves, bottom, top)
    np.testing.assert_allclose(np.concatenate([first, second]), expected, rtol=1e-12)
    # A 0 in cont starts afresh: the carried state no longer matters.
    restart = cont[T:].copy()
    restart[0] = 0
    bottom[1].data[...] = restart
    (after_restart,) = forward(halves, bottom, top)
    fresh, fresh_bottom, fresh_top = build_layer(text(kind), [x[T:], restart])
    for src, dst in zip(whole.blobs, fresh.blobs):
        dst.data[...] = src.data
    np.testing.assert_allclose(after_restart, forward(fresh, fresh_bottom, fresh_top)[0], rtol=1e-12)


# -- expose_hidden ----------------------------------------------------------------------

def test_lstm_expose_hidden_forward_and_final_states():
    x, xs = RNG.standard_normal((T, N, I)), RNG.standard_normal((N, S))
    h0, c0 = RNG.standard_normal((1, N, H)), RNG.standard_normal((1, N, H))
    cont = np.ones((T, N))
    layer, bottom, top = build_layer(text("LSTM", expose=True), [x, cont, xs, h0, c0], num_tops=3)
    h, h_last, c_last = forward(layer, bottom, top)
    expected, h_end, c_end = reference_lstm(x, cont, weights(layer), xs, h0[0], c0[0])
    np.testing.assert_allclose(h, expected, rtol=1e-10)
    np.testing.assert_allclose(h_last[0], h_end, rtol=1e-10)
    np.testing.assert_allclose(c_last[0], c_end, rtol=1e-10)


def test_rnn_expose_hidden_takes_no_gradient_through_the_states():
    x, h0 = RNG.standard_normal((T, N, I)), RNG.standard_normal((1, N, H))
    layer, bottom, top = build_layer(text("RNN", expose=True), [x, CONT, h0], num_tops=2)
    forward(layer, bottom, top)
    top[0].diff[...] = 1
    top[1].diff[...] = 0
    bottom[2].diff[...] = 7
    layer.run_backward(top, [True, False, True], bottom)
    reference = bottom[0].diff.copy()
    np.testing.assert_array_equal(bottom[2].diff, 0)  # Caffe shares only the data of h_0
    top[1].diff[...] = 5  # ... and never reads the diff of h_T
    layer.run_backward(top, [True, False, True], bottom)
    np.testing.assert_allclose(bottom[0].diff, reference)


# -- gradients --------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["LSTM", "RNN"])
@pytest.mark.parametrize("static", [False, True])
@pytest.mark.parametrize("expose", [False, True])
def test_gradient(kind, static, expose):
    bottoms = [RNG.standard_normal((T, N, I)), CONT]
    if static:
        bottoms.append(RNG.standard_normal((N, S)))
    states = (2 if kind == "LSTM" else 1) if expose else 0
    bottoms += [RNG.standard_normal((1, N, H)) for _ in range(states)]
    top_weights = [RNG.standard_normal((T, N, H))] + [np.zeros((1, N, H))] * states
    check_gradient(text(kind, expose), bottoms, num_tops=1 + states, top_weights=top_weights,
                   bottoms_checked=[0, 2] if static else [0], max_checks=40)


# -- debug_info -------------------------------------------------------------------------

def test_debug_info_logs_every_step_as_the_unrolled_net(caplog):
    layer_text = text("LSTM").replace("expose_hidden", "debug_info: true expose_hidden")
    layer, bottom, top = build_layer(layer_text, [RNG.standard_normal((T, N, I)), CONT])
    with caplog.at_level("INFO", logger="engine"):
        forward(layer, bottom, top)
        top[0].diff[...] = 1
        layer.run_backward(top, [True, False], bottom)
    lines = [r.getMessage() for r in caplog.records]
    assert f"    [Forward] Layer layer_unit_{T}, top blob h_{T} data: {np.abs(top[0].data[-1]).mean():g}" in lines
    assert sum("[Backward] Layer layer_unit_" in line for line in lines) == T
    caplog.clear()
    quiet, bottom, top = build_layer(text("RNN"), [RNG.standard_normal((T, N, I)), CONT])
    with caplog.at_level("INFO", logger="engine"):
        forward(quiet, bottom, top)
    assert not caplog.records


# -- errors -----------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["LSTM", "RNN"])
def test_errors(kind):
    x = np.zeros((T, N, I))
    with pytest.raises(LayerError, match="num_output must be positive"):
        build_layer(f'type: "{kind}"', [x, CONT])
    with pytest.raises(LayerError, match="exactly 2 axes"):
        build_layer(text(kind), [x, CONT[:, :, None]])
    with pytest.raises(LayerError, match="at most 3 bottom"):
        build_layer(text(kind), [x, CONT, np.zeros((N, S)), np.zeros((N, S))])
    layer, bottom, top = build_layer(text(kind), [x, CONT])
    assert not layer.allow_force_backward(1)
    forward(layer, bottom, top)
    with pytest.raises(LayerError, match="sequence indicators"):
        layer.run_backward(top, [True, True], bottom)
    bottom[0].reshape(T + 1, N, I)
    bottom[1].reshape(T + 1, N)
    with pytest.raises(LayerError, match="number of timesteps changed"):
        layer.run_forward(bottom, top)


# -- one code path: CuPy gives NumPy's numbers ---------------------------------------------

@pytest.mark.gpu
@pytest.mark.parametrize("kind", ["LSTM", "RNN"])
def test_gpu_matches_cpu(kind):
    import cupy

    import engine

    arrays = [RNG.standard_normal((T, N, I)), CONT, RNG.standard_normal((N, S))]
    dy = RNG.standard_normal((T, N, H))
    host = engine.backend.to_host
    results = []
    for xp in (np, cupy):
        if xp is cupy:
            engine.set_mode_gpu()
        layer, bottom, top = build_layer(text(kind), arrays, xp=xp)
        for blob in layer.blobs:
            blob.data[...] = xp.asarray(np.linspace(-0.7, 0.7, blob.count).reshape(blob.shape))
            blob.diff[...] = 0
        forward(layer, bottom, top)
        top[0].diff[...] = xp.asarray(dy)
        layer.run_backward(top, [True, False, True], bottom)
        results.append([host(top[0].data), host(bottom[0].diff), host(bottom[2].diff)]
                       + [host(b.diff) for b in layer.blobs])
    for cpu, gpu in zip(*results, strict=True):
        np.testing.assert_allclose(gpu, cpu, rtol=1e-10, atol=1e-12)
