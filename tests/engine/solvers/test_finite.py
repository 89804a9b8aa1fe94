"""A loss or weights that stop being finite stop training with one message naming the iteration
and the first layer whose output went bad, and no snapshot is written from them."""

import numpy as np
import pytest

from engine import caffe_pb2, formats
from engine.errors import DivergedError, SolverError
from engine.formats import parse_text
from engine.solvers import get_solver

NET = """
name: "finite"
layer { name: "data" type: "Input" top: "data" top: "label"
        input_param { shape { dim: 2 dim: 4 } shape { dim: 2 } } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
        inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.2 } } }
layer { name: "root" type: "Power" bottom: "ip" top: "root" power_param { power: 0.5 shift: SHIFT } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "root" bottom: "label" top: "loss" }
"""


def make(tmp_path, extra="", shift=10.0):
    p = parse_text(f'type: "SGD" base_lr: 0.1 lr_policy: "fixed" max_iter: 10 random_seed: 3 '
                   f'snapshot_prefix: "{tmp_path}/run" {extra}', caffe_pb2.SolverParameter())
    parse_text(NET.replace("SHIFT", str(shift)), p.net_param)
    solver = get_solver(p)
    solver.net.blobs["data"].data[...] = np.arange(8).reshape(2, 4) / 8.0
    return solver


def test_nan_loss_names_iteration_and_first_bad_layer(tmp_path):
    solver = make(tmp_path, "snapshot: 1", shift=10.0)
    solver.step(2)  # finite so far: sqrt of values near 10
    solver.net.blobs["data"].data[...] = -1e3  # the square root of negative numbers: NaN
    with pytest.raises(DivergedError) as info:
        solver.step(1)
    message = str(info.value)
    assert message.startswith("iteration 2: the loss is nan; the first layer whose output is not finite is "
                              "layer 'root' (Power) (top 'root'); stopped without writing a snapshot")
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        f"run_iter_{i}.{e}" for i in (1, 2) for e in ("caffemodel", "solverstate", "solverstate.resume")]


def test_weights_that_are_not_finite_are_never_snapshotted(tmp_path):
    solver = make(tmp_path)
    solver.step(1)
    solver.net.params["ip"][0].data[1, 2] = np.inf
    with pytest.raises(DivergedError, match=r"^iteration 1: the weights of layer 'ip' \(param 0\) are not finite; "
                                            r"stopped without writing a snapshot"):
        solver.snapshot()
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(DivergedError, match=r"^iteration 1: the loss is nan; the first layer whose output is not "
                                            r"finite is layer 'ip' \(InnerProduct\) \(top 'ip'\); the weights of "
                                            r"layer 'ip' \(param 0\) are not finite"):
        solver.step(1)


def test_diverging_learning_rate_stops_training(tmp_path):
    solver = make(tmp_path, "snapshot: 1", shift=1e4)
    solver.param.base_lr = 1e30
    with pytest.raises(DivergedError, match=r"^iteration \d+: the loss is (nan|inf)"):
        solver.step(10)
    for path in tmp_path.glob("*.caffemodel"):
        weights = formats.read_weights(path)
        for blob in weights["ip"]:
            assert np.isfinite(np.asarray(blob.data)).all(), path


@pytest.mark.parametrize("field", ["base_lr: nan", "momentum: -inf", "weight_decay: inf", "gamma: nan"])
def test_solver_numbers_must_be_finite(tmp_path, field):
    with pytest.raises(SolverError, match=rf"^{field.split(':')[0]} must be a finite number"):
        make(tmp_path, field)
