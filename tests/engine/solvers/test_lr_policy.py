"""Learning-rate policies against hand-computed values and against the rates Caffe logged."""

import math
import re

import pytest

from engine import caffe_pb2
from engine.errors import SolverError
from engine.formats import parse_text
from engine.solvers import lr_policy

from paths import REFERENCE as _REFERENCE  # noqa: E402
REFERENCE = _REFERENCE / "solvers"


def param(text):
    return parse_text(text, caffe_pb2.SolverParameter())


def rates(p, iterations):
    step, out = 0, []
    for it in iterations:
        rate, step = lr_policy.learning_rate(p, it, step)
        out.append(rate)
    return out


CASES = [
    ('lr_policy: "fixed" base_lr: 0.5', [0, 7, 1000], [0.5, 0.5, 0.5]),
    ('lr_policy: "step" base_lr: 0.1 gamma: 0.5 stepsize: 3', [0, 2, 3, 5, 6, 9],
     [0.1, 0.1, 0.05, 0.05, 0.025, 0.0125]),
    ('lr_policy: "exp" base_lr: 2 gamma: 0.5', [0, 1, 2, 3], [2, 1, 0.5, 0.25]),
    ('lr_policy: "inv" base_lr: 0.01 gamma: 0.0001 power: 0.75', [0, 100, 10000],
     [0.01, 0.01 * 1.01 ** -0.75, 0.01 * 2 ** -0.75]),
    ('lr_policy: "multistep" base_lr: 1 gamma: 0.1 stepvalue: 2 stepvalue: 4', [0, 1, 2, 3, 4, 5],
     [1, 1, 0.1, 0.1, 0.01, 0.01]),
    ('lr_policy: "poly" base_lr: 1 power: 2 max_iter: 10', [0, 5, 10], [1, 0.25, 0]),
    ('lr_policy: "sigmoid" base_lr: 1 gamma: 0.5 stepsize: 4', [0, 4, 8],
     [1 / (1 + math.exp(2)), 0.5, 1 / (1 + math.exp(-2))]),
]


@pytest.mark.parametrize("text,iterations,expected", CASES, ids=[c[0].split('"')[1] for c in CASES])
def test_policy_values(text, iterations, expected):
    got = rates(param(text), iterations)
    assert got == pytest.approx(expected, rel=1e-6, abs=1e-12)


def test_step_sets_current_step_from_iteration():
    p = param('lr_policy: "step" base_lr: 1 gamma: 0.1 stepsize: 10')
    assert lr_policy.learning_rate(p, 35, 0)[1] == 3


def test_multistep_advances_one_stepvalue_per_call(caplog):
    p = param('lr_policy: "multistep" base_lr: 1 gamma: 0.5 stepvalue: 1 stepvalue: 2')
    # Jumping past both stepvalues advances one step per call, as Caffe's loop does.
    rate, step = lr_policy.learning_rate(p, 5, 0)
    assert (rate, step) == (0.5, 1)
    with caplog.at_level("INFO", logger="engine"):
        rate, step = lr_policy.learning_rate(p, 5, step)
    assert (rate, step) == (0.25, 2)
    assert "MultiStep Status: Iteration 5, step = 2" in caplog.text


def test_rate_is_float32():
    rate, _ = lr_policy.learning_rate(param('lr_policy: "fixed" base_lr: 0.1'), 0)
    assert rate == float(__import__("numpy").float32(0.1))


@pytest.mark.parametrize("text,words", [
    ('lr_policy: "cosine" base_lr: 1', ["Unknown learning rate policy", "cosine"]),
    ('base_lr: 1', ["Unknown learning rate policy"]),
    ('lr_policy: "step" base_lr: 1 gamma: 0.1', ["stepsize"]),
    ('lr_policy: "sigmoid" base_lr: 1 gamma: 0.1', ["stepsize"]),
    ('lr_policy: "exp" base_lr: 1 gamma: -1', ["gamma"]),
    ('lr_policy: "poly" base_lr: 1 power: 1', ["max_iter"]),
])
def test_bad_policies_are_refused(text, words):
    with pytest.raises(SolverError) as info:
        lr_policy.check(param(text))
    for word in words:
        assert word in str(info.value)


def test_poly_past_max_iter_is_nan_not_complex():
    rate, _ = lr_policy.learning_rate(param('lr_policy: "poly" base_lr: 1 power: 0.5 max_iter: 10'), 20)
    assert math.isnan(rate)


CAFFE_CASES = sorted(p for p in REFERENCE.glob("*") if (p / "caffe.log").exists())


@pytest.mark.parametrize("case", CAFFE_CASES, ids=[c.name for c in CAFFE_CASES])
def test_rates_match_caffe_log(case):
    """Every `Iteration N, lr = X` line Caffe printed, reproduced to its 6 printed digits."""
    from engine.formats import read_solver

    p = read_solver(str(case / "solver.prototxt"))
    logged = [(int(m.group(1)), m.group(2)) for m in
              re.finditer(r"\] Iteration (\d+), lr = (\S+)", (case / "caffe.log").read_text())]
    assert logged
    step = 0
    for iteration, text in logged:
        rate, step = lr_policy.learning_rate(p, iteration, step)
        assert f"{rate:g}" == text, f"iteration {iteration}: ours {rate:g}, Caffe {text}"
