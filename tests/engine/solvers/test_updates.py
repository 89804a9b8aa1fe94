"""Each update rule against closed-form steps computed here in float64, on a tiny net,
and the order of Caffe's Solver::Step (iter_size, smoothing, testing, callbacks)."""

import logging

import numpy as np
import pytest

import engine
from engine import caffe_pb2
from engine.errors import CaffeError, SolverError
from engine.formats import parse_text
from engine.solvers import get_solver

NET = """
name: "tiny"
layer { name: "data" type: "Input" top: "data" top: "label"
        input_param { shape { dim: 2 dim: 3 } shape { dim: 2 } } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
        param { lr_mult: 1 decay_mult: 1 } param { lr_mult: 2 decay_mult: 0 }
        inner_product_param { num_output: 2 weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
"""

W0 = np.array([[0.5, -0.3, 0.2], [-0.1, 0.4, -0.6]])
B0 = np.array([0.05, -0.02])
GRADS = [
    (np.array([[0.1, -0.2, 0.3], [0.0, 0.5, -0.4]]), np.array([0.2, -0.1])),
    (np.array([[-0.3, 0.1, 0.0], [0.2, -0.2, 0.1]]), np.array([-0.05, 0.3])),
    (np.array([[0.05, 0.05, -0.1], [0.3, 0.0, 0.2]]), np.array([0.1, 0.1])),
]


def solver_param(text, net=NET):
    p = parse_text(text, caffe_pb2.SolverParameter())
    parse_text(net, p.net_param)
    return p


def make(text, net=NET):
    return get_solver(solver_param(text, net))


def run_updates(text, grads=GRADS):
    solver = make(text)
    w, b = solver.net.learnable_params
    w.data[...] = W0
    b.data[...] = B0
    for t, (gw, gb) in enumerate(grads):
        solver.iter = t
        w.diff[...] = gw
        b.diff[...] = gb
        solver.apply_update()
    return w.data.astype(np.float64), b.data.astype(np.float64)


# -- closed forms (float64), one state dict per parameter ---------------------------------
def reference(rule, grads, lr=0.1, momentum=0.0, decay=0.0, reg="L2", delta=1e-8, rms=0.99, beta2=0.999,
              iter_size=1, clip=-1.0, rate_at=None):
    params = [W0.copy(), B0.copy()]
    lr_mult, decay_mult = [1.0, 2.0], [1.0, 0.0]
    state = [dict(h=np.zeros_like(p), u=np.zeros_like(p)) for p in params]
    for t, raw in enumerate(grads):
        rate = rate_at(t) if rate_at else lr
        grads_t = [np.array(g, dtype=np.float64) for g in raw]
        norm = np.sqrt(sum((g ** 2).sum() for g in grads_t))
        if clip >= 0 and norm > clip:
            grads_t = [g * clip / norm for g in grads_t]
        for i, (p, g) in enumerate(zip(params, grads_t)):
            g = g / iter_size
            local_decay = decay * decay_mult[i]
            g = g + local_decay * (p if reg == "L2" else np.sign(p))
            lr_i = rate * lr_mult[i]
            s = state[i]
            if rule == "SGD":
                s["h"] = momentum * s["h"] + lr_i * g
                step = s["h"]
            elif rule == "Nesterov":
                old = s["h"]
                s["h"] = momentum * old + lr_i * g
                step = (1 + momentum) * s["h"] - momentum * old
            elif rule == "AdaGrad":
                s["h"] = s["h"] + g * g
                step = lr_i * g / (np.sqrt(s["h"]) + delta)
            elif rule == "RMSProp":
                s["h"] = rms * s["h"] + (1 - rms) * g * g
                step = lr_i * g / (np.sqrt(s["h"]) + delta)
            elif rule == "AdaDelta":
                s["h"] = momentum * s["h"] + (1 - momentum) * g * g
                raw_step = g * np.sqrt((s["u"] + delta) / (s["h"] + delta))
                s["u"] = momentum * s["u"] + (1 - momentum) * raw_step ** 2
                step = lr_i * raw_step
            elif rule == "Adam":
                s["h"] = momentum * s["h"] + (1 - momentum) * g
                s["u"] = beta2 * s["u"] + (1 - beta2) * g * g
                k = t + 1
                corr = np.sqrt(1 - beta2 ** k) / (1 - momentum ** k)
                step = lr_i * corr * s["h"] / (np.sqrt(s["u"]) + delta)
            params[i] = p - step
    return params


UPDATE_CASES = [
    ("sgd_momentum_l2", 'type: "SGD" base_lr: 0.1 lr_policy: "fixed" momentum: 0.9 weight_decay: 0.01',
     dict(rule="SGD", momentum=0.9, decay=0.01)),
    ("sgd_l1", 'type: "SGD" base_lr: 0.1 lr_policy: "fixed" momentum: 0.5 weight_decay: 0.02 '
               'regularization_type: "L1"', dict(rule="SGD", momentum=0.5, decay=0.02, reg="L1")),
    ("sgd_iter_size", 'type: "SGD" base_lr: 0.1 lr_policy: "fixed" momentum: 0.9 iter_size: 2',
     dict(rule="SGD", momentum=0.9, iter_size=2)),
    ("sgd_clip", 'type: "SGD" base_lr: 0.1 lr_policy: "fixed" clip_gradients: 0.3 weight_decay: 0.01',
     dict(rule="SGD", clip=0.3, decay=0.01)),
    ("sgd_step_policy", 'type: "SGD" base_lr: 0.1 lr_policy: "step" gamma: 0.5 stepsize: 1 momentum: 0.9',
     dict(rule="SGD", momentum=0.9, rate_at=lambda t: 0.1 * 0.5 ** t)),
    ("nesterov", 'type: "Nesterov" base_lr: 0.05 lr_policy: "fixed" momentum: 0.9 weight_decay: 0.001',
     dict(rule="Nesterov", lr=0.05, momentum=0.9, decay=0.001)),
    ("adagrad", 'type: "AdaGrad" base_lr: 0.1 lr_policy: "fixed" delta: 1e-6 weight_decay: 0.001',
     dict(rule="AdaGrad", delta=1e-6, decay=0.001)),
    ("rmsprop", 'type: "RMSProp" base_lr: 0.01 lr_policy: "fixed" rms_decay: 0.95 delta: 1e-6',
     dict(rule="RMSProp", lr=0.01, rms=0.95, delta=1e-6)),
    ("adadelta", 'type: "AdaDelta" base_lr: 1 lr_policy: "fixed" momentum: 0.95 delta: 1e-6 weight_decay: 0.001',
     dict(rule="AdaDelta", lr=1.0, momentum=0.95, delta=1e-6, decay=0.001)),
    ("adam", 'type: "Adam" base_lr: 0.01 lr_policy: "fixed" momentum: 0.9 momentum2: 0.999 delta: 1e-8',
     dict(rule="Adam", lr=0.01, momentum=0.9, beta2=0.999)),
]


@pytest.mark.parametrize("name,text,ref", UPDATE_CASES, ids=[c[0] for c in UPDATE_CASES])
def test_update_matches_closed_form(name, text, ref):
    w, b = run_updates(text)
    ew, eb = reference(grads=GRADS, **ref)
    np.testing.assert_allclose(w, ew, rtol=2e-5, atol=1e-7)
    np.testing.assert_allclose(b, eb, rtol=2e-5, atol=1e-7)


def test_history_layout_is_caffes():
    assert len(make('type: "SGD" base_lr: 0.1 lr_policy: "fixed"').history) == 2
    assert len(make('type: "Adam" base_lr: 0.1 lr_policy: "fixed"').history) == 4
    assert len(make('type: "AdaDelta" base_lr: 0.1 lr_policy: "fixed"').history) == 4


def test_clipping_logs_caffes_line(caplog):
    with caplog.at_level(logging.INFO, logger="engine"):
        run_updates('type: "SGD" base_lr: 0.1 lr_policy: "fixed" clip_gradients: 0.3', GRADS[:1])
    norm = np.sqrt(sum((g ** 2).sum() for g in GRADS[0]))
    assert (f"Gradient clipping: scaling down gradients (L2 norm {np.float32(norm):g} > 0.3) by scale factor "
            f"{np.float32(0.3 / norm):g}") in caplog.text


# -- the loop --------------------------------------------------------------------------
def feed(solver, seed=0):
    rng = np.random.default_rng(seed)
    for net in [solver.net] + solver.test_nets:
        net.blobs["data"].data[...] = rng.standard_normal((2, 3))
        net.blobs["label"].data[...] = [0, 1]


def test_iter_size_averages_gradients_and_loss():
    base = 'type: "SGD" base_lr: 0.1 lr_policy: "fixed" momentum: 0.9 random_seed: 3'
    one, two = make(base), make(base + " iter_size: 3")
    for solver in (one, two):
        feed(solver)
        solver.step(3)
    for a, b in zip(one.net.learnable_params, two.net.learnable_params):
        np.testing.assert_allclose(a.data, b.data, rtol=1e-5)
    assert two.smoothed_loss == pytest.approx(one.smoothed_loss, rel=1e-5)


def test_average_loss_smooths_over_the_last_n():
    solver = make('type: "SGD" base_lr: 0.5 lr_policy: "fixed" average_loss: 3 random_seed: 1')
    feed(solver)
    losses = []
    solver.add_callback(lambda: None, lambda: losses.append(float(solver.net.blobs["loss"].data)))
    solver.step(5)
    assert solver.smoothed_loss == pytest.approx(np.mean(losses[-3:]), rel=1e-5)
    assert losses[0] > losses[-1]


def test_callbacks_run_between_backward_and_update():
    solver = make('type: "SGD" base_lr: 0.1 lr_policy: "fixed" random_seed: 1')
    feed(solver)
    seen = []
    w = solver.net.learnable_params[0]

    class Recorder:
        def on_start(self):
            seen.append(("start", float(np.abs(w.diff).sum())))

        def on_gradients_ready(self):
            seen.append(("ready", float(np.abs(w.diff).sum()), w.data.copy()))

    solver.add_callback(Recorder())
    before = w.data.copy()
    solver.step(1)
    assert seen[0] == ("start", 0.0)  # diffs cleared before on_start
    assert seen[1][0] == "ready" and seen[1][1] > 0
    np.testing.assert_array_equal(seen[1][2], before)  # not yet updated
    assert not np.array_equal(w.data, before)
    assert solver.iter == 1


def test_testing_schedule_and_initialization():
    text = 'type: "SGD" base_lr: 0.1 lr_policy: "fixed" test_iter: 2 test_interval: 2 random_seed: 1'
    for init, expected in ((True, [0, 2, 4]), (False, [2, 4])):
        solver = make(text + f" test_initialization: {'true' if init else 'false'}")
        feed(solver)
        tested = []
        original = solver.test
        solver.test = lambda i=0: (tested.append(solver.iter), original(i))
        solver.step(5)
        assert tested == expected


def test_each_test_net_averages_its_outputs(caplog):
    net = NET + """
layer { name: "accuracy" type: "Accuracy" bottom: "ip" bottom: "label" top: "accuracy"
        include { phase: TEST stage: "acc" } }"""
    p = solver_param('type: "SGD" base_lr: 0.1 lr_policy: "fixed" test_iter: 3 test_iter: 2 test_interval: 1 '
                     'test_state { stage: "acc" } test_state { } test_compute_loss: true random_seed: 1', net)
    solver = get_solver(p)
    assert len(solver.test_nets) == 2
    assert solver.test_nets[0].outputs == ["loss", "accuracy"]
    assert solver.test_nets[1].outputs == ["loss"]
    feed(solver)
    with caplog.at_level(logging.INFO, logger="engine"):
        solver.test_all()
    loss = float(solver.test_nets[1].forward_from_to())
    assert solver.test_scores(1)["loss"] == pytest.approx(loss, rel=1e-6)
    assert "Test net output #1: accuracy = " in caplog.text and "Test net output #0: loss = " in caplog.text
    assert "(* 1 = " in caplog.text
    assert "Test loss: " in caplog.text
    assert "Iteration 0, Testing net (#1)" in caplog.text


def test_display_lines_are_caffes(caplog):
    solver = make('type: "SGD" base_lr: 0.1 lr_policy: "fixed" display: 2 random_seed: 1')
    feed(solver)
    with caplog.at_level(logging.INFO, logger="engine"):
        solver.step(3)
    text = caplog.text
    assert "Iteration 0 (0 iter/s, " in text and "s/2 iters), loss = " in text
    assert "    Train net output #0: loss = " in text
    assert "Iteration 0, lr = 0.1" in text and "Iteration 2, lr = 0.1" in text
    assert "Iteration 1, lr" not in text


def test_debug_info_prints_update_lines(caplog):
    solver = make('type: "SGD" base_lr: 0.1 lr_policy: "fixed" display: 1 debug_info: true random_seed: 1')
    feed(solver)
    with caplog.at_level(logging.INFO, logger="engine"):
        solver.step(1)
    assert "[Forward] Layer ip, top blob ip data:" in caplog.text
    assert "[Backward] All net params (data, diff): L1 norm = (" in caplog.text
    assert "[Update] Layer ip, param 0 data: " in caplog.text and "; diff: " in caplog.text


@pytest.mark.parametrize("text,words", [
    ('type: "AdaGrad" base_lr: 0.1 lr_policy: "fixed" momentum: 0.9', ["Momentum cannot be used with AdaGrad"]),
    ('type: "RMSProp" base_lr: 0.1 lr_policy: "fixed" rms_decay: 1', ["rms_decay"]),
    ('type: "SGD" base_lr: 0.1 lr_policy: "fixed" weight_decay: 0.1 regularization_type: "L3"',
     ["Unknown regularization type: L3"]),
    ('type: "Foo" base_lr: 0.1 lr_policy: "fixed"', ["Unknown solver type: Foo", "Adam"]),
    ('type: "SGD" base_lr: 0.1 lr_policy: "fixed" average_loss: 0', ["average_loss"]),
    ('type: "SGD" base_lr: 0.1 lr_policy: "fixed" iter_size: 0', ["iter_size"]),
    ('type: "SGD" base_lr: 0.1 lr_policy: "fixed" test_iter: 5', ["test_interval"]),
    ('type: "SGD" base_lr: 0.1 lr_policy: "fixed" test_iter: 5 test_interval: 1 test_state { } test_state { }',
     ["test_state"]),
    ('type: "SGD" base_lr: 0.1 lr_policy: "triangle"', ["Unknown learning rate policy", "triangle"]),
])
def test_bad_solver_definitions_are_refused(text, words):
    with pytest.raises(SolverError) as info:
        make(text)
    for word in words:
        assert word in str(info.value)


def test_train_net_must_be_given_once():
    with pytest.raises(SolverError, match="must specify a train net"):
        get_solver(parse_text('base_lr: 0.1 lr_policy: "fixed"', caffe_pb2.SolverParameter()))
    p = solver_param('base_lr: 0.1 lr_policy: "fixed" net: "x.prototxt"')
    with pytest.raises(CaffeError, match="more than one"):
        get_solver(p)


def test_net_state_precedence():
    net = NET + """
layer { name: "extra" type: "ReLU" bottom: "ip" top: "relu_out" include { phase: TRAIN stage: "deep" min_level: 2 } }"""
    p = solver_param('base_lr: 0.1 lr_policy: "fixed" train_state { stage: "deep" level: 2 }', net)
    assert "extra" in get_solver(p).net.layer_dict
    p = solver_param('base_lr: 0.1 lr_policy: "fixed" train_state { stage: "deep" level: 1 }', net)
    assert "extra" not in get_solver(p).net.layer_dict


def test_pycaffe_names():
    for name in ("SGDSolver", "NesterovSolver", "AdaGradSolver", "RMSPropSolver", "AdaDeltaSolver", "AdamSolver",
                 "get_solver", "Solver"):
        assert getattr(engine, name)
    solver = engine.AdamSolver(solver_param('base_lr: 0.1 lr_policy: "fixed"'))
    assert solver.type == "Adam" and solver.max_iter == 0 and solver.iter == 0
    other = engine.Net(solver.net.param, engine.TEST)
    solver.share_weights(other)
    solver.net.learnable_params[0].data[...] = 7
    assert float(other.params["ip"][0].data[0, 0]) == 7


def test_train_net_and_test_net_fields(tmp_path, monkeypatch):
    """train_net/test_net files and train_net_param/test_net_param, each test net with its own test_iter."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a.prototxt").write_text(NET)
    (tmp_path / "b.prototxt").write_text(NET.replace('name: "tiny"', 'name: "tiny_b"'))
    p = parse_text('train_net: "a.prototxt" test_net: "a.prototxt" test_net: "b.prototxt" test_iter: 1 '
                   'test_iter: 2 test_interval: 5 base_lr: 0.1 lr_policy: "fixed"', caffe_pb2.SolverParameter())
    solver = get_solver(p)
    assert [net.name for net in solver.test_nets] == ["tiny", "tiny_b"]
    assert all(net.phase == engine.TEST for net in solver.test_nets) and solver.net.phase == engine.TRAIN
    p = parse_text('test_iter: 1 test_interval: 5 base_lr: 0.1 lr_policy: "fixed"', caffe_pb2.SolverParameter())
    parse_text(NET, p.train_net_param)
    parse_text(NET.replace('name: "tiny"', 'name: "tiny_p"'), p.test_net_param.add())
    solver = get_solver(p)
    assert [net.name for net in solver.test_nets] == ["tiny_p"]
    p.test_iter.append(3)  # test_net_param given: exactly one test_iter each
    with pytest.raises(SolverError, match="test_iter must be specified for each test network"):
        get_solver(p)
