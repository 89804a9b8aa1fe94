"""Resuming is exact: a run stopped at k and restored from its snapshot ends with the same
losses and weights, bit for bit on the CPU, as the run that never stopped."""

import numpy as np
import pytest

from engine import caffe_pb2
from engine.formats import parse_text
from engine.solvers import get_solver, signals

NET = """
name: "resume"
layer { name: "data" type: "Input" top: "data" top: "label"
        input_param { shape { dim: 4 dim: 5 } shape { dim: 4 } } }
layer { name: "ip1" type: "InnerProduct" bottom: "data" top: "ip1"
        param { lr_mult: 1 decay_mult: 1 } param { lr_mult: 2 decay_mult: 0 }
        inner_product_param { num_output: 6 weight_filler { type: "xavier" } } }
layer { name: "relu" type: "ReLU" bottom: "ip1" top: "ip1" }
layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2"
        inner_product_param { num_output: 3 weight_filler { type: "xavier" } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "loss" }
"""

SOLVERS = {
    "sgd_multistep": 'type: "SGD" base_lr: 0.1 momentum: 0.9 weight_decay: 0.01 lr_policy: "multistep" '
                     'gamma: 0.5 stepvalue: 2 stepvalue: 5',
    "nesterov_itersize": 'type: "Nesterov" base_lr: 0.05 momentum: 0.9 lr_policy: "inv" gamma: 0.1 power: 0.75 '
                         'iter_size: 2',
    "adam": 'type: "Adam" base_lr: 0.01 momentum: 0.9 lr_policy: "step" gamma: 0.5 stepsize: 3',
    "adadelta": 'type: "AdaDelta" base_lr: 1 momentum: 0.95 delta: 1e-6 lr_policy: "fixed" clip_gradients: 1',
    "rmsprop": 'type: "RMSProp" base_lr: 0.01 rms_decay: 0.9 lr_policy: "exp" gamma: 0.9 average_loss: 3',
}
TOTAL, STOP = 7, 3


def make(text, tmp_path, fmt, extra=""):
    p = parse_text(f'{text} random_seed: 5 max_iter: {TOTAL} snapshot_prefix: "{tmp_path}/snap" '
                   f'snapshot_format: {fmt} {extra}', caffe_pb2.SolverParameter())
    parse_text(NET, p.net_param)
    solver = get_solver(p)
    losses = {}

    def feed():
        # Each iteration's batch depends only on the iteration, like a data layer restarted in order.
        rng = np.random.default_rng(100 + solver.iter)
        solver.net.blobs["data"].data[...] = rng.standard_normal((4, 5))
        solver.net.blobs["label"].data[...] = rng.integers(0, 3, 4)

    solver.add_callback(feed, lambda: losses.__setitem__(solver.iter, solver.net.blobs["loss"].data.copy()))
    return solver, losses


def weights(solver):
    return [b.data.copy() for b in solver.net.learnable_params]


@pytest.mark.parametrize("fmt", ["BINARYPROTO", "HDF5"])
@pytest.mark.parametrize("name", sorted(SOLVERS))
def test_step_snapshot_restore_is_bit_exact(name, fmt, tmp_path):
    (tmp_path / "a").mkdir()
    whole, whole_losses = make(SOLVERS[name], tmp_path / "a", fmt)
    whole.step(TOTAL)
    first, _ = make(SOLVERS[name], tmp_path, fmt)
    first.step(STOP)
    _, state = first.snapshot()
    second, second_losses = make(SOLVERS[name], tmp_path, fmt)
    second.restore(state)
    assert second.iter == STOP and second.current_step == first.current_step
    second.step(TOTAL - STOP)
    for it in range(STOP, TOTAL):
        assert np.array_equal(second_losses[it], whole_losses[it]), f"loss at iteration {it}"
    for a, b in zip(weights(second), weights(whole)):
        assert np.array_equal(a, b)
    for a, b in zip(second.history, whole.history):
        assert np.array_equal(a, b)


def test_requested_stop_snapshots_and_solve_resumes(tmp_path):
    """The Ctrl-C path: a stop request ends Solve with a snapshot; solve(resume_file) finishes the run."""
    (tmp_path / "a").mkdir()
    whole, _ = make(SOLVERS["sgd_multistep"], tmp_path / "a", "BINARYPROTO")
    whole.solve()
    stopped, _ = make(SOLVERS["sgd_multistep"], tmp_path, "BINARYPROTO")
    stopped.set_action_function(lambda: signals.STOP if stopped.iter == STOP else signals.NONE)
    stopped.solve()
    assert stopped.iter == STOP and stopped.requested_early_exit
    state = tmp_path / f"snap_iter_{STOP}.solverstate"
    assert state.is_file() and (tmp_path / f"snap_iter_{STOP}.caffemodel").is_file()
    resumed, _ = make(SOLVERS["sgd_multistep"], tmp_path, "BINARYPROTO")
    resumed.solve(resume_file=str(state))
    assert resumed.iter == TOTAL
    for a, b in zip(weights(resumed), weights(whole)):
        assert np.array_equal(a, b)


def test_snapshot_request_keeps_training(tmp_path):
    solver, _ = make(SOLVERS["adam"], tmp_path, "BINARYPROTO", "snapshot_after_train: false")
    solver.set_action_function(lambda: signals.SNAPSHOT if solver.iter == 2 else signals.NONE)
    solver.solve()
    assert solver.iter == TOTAL
    assert sorted(p.name for p in tmp_path.iterdir()) == ["snap_iter_2.caffemodel", "snap_iter_2.solverstate",
                                                             "snap_iter_2.solverstate.resume"]
