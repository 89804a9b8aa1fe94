"""Caffe's learning-rate policies (SGDSolver::GetLearningRate), as pure functions.

`learning_rate(param, iteration, current_step)` returns the rate and the new
`current_step`: "step" recomputes it from the iteration, "multistep" advances
it by at most one stepvalue per call (as Caffe does), and the solver keeps it
in its snapshots so that a resumed run continues the same schedule.
"""

import logging
import math

import numpy as np

from ..errors import SolverError
from ..log import at

log = logging.getLogger("engine.solver")

POLICIES = ("fixed", "step", "exp", "inv", "multistep", "poly", "sigmoid")


def check(param):
    """Refuse, before training starts, a policy Caffe would abort on at the first update."""
    policy = param.lr_policy
    if policy not in POLICIES:
        raise SolverError(f"Unknown learning rate policy: {policy!r} (known policies: {', '.join(POLICIES)})")
    if policy in ("step", "sigmoid") and param.stepsize <= 0:
        raise SolverError(f"lr_policy \"{policy}\" needs a positive stepsize (got {param.stepsize})")
    if policy in ("step", "exp", "inv", "multistep", "sigmoid") and param.gamma < 0:
        raise SolverError(f"lr_policy \"{policy}\" needs gamma >= 0 (got {param.gamma:g})")
    if policy == "poly" and param.max_iter <= 0:
        raise SolverError(f"lr_policy \"poly\" needs a positive max_iter (got {param.max_iter})")
    values = list(param.stepvalue)
    if policy == "multistep" and values != sorted(values):
        raise SolverError(f"lr_policy \"multistep\" needs increasing stepvalue entries (got {values})")


def _pow(base, exponent):
    # C's pow: NaN for a negative base with a fractional exponent, inf on overflow.
    try:
        return math.pow(base, exponent)
    except ValueError:
        return math.nan
    except OverflowError:
        return math.inf


def _exp(value):
    try:
        return math.exp(value)
    except OverflowError:
        return math.inf


def learning_rate(param, iteration, current_step=0):
    """(rate, current_step) at `iteration`; the rate is a float32 value, as Caffe's Dtype."""
    policy = param.lr_policy
    base = param.base_lr
    if policy == "fixed":
        rate = base
    elif policy == "step":
        if param.stepsize <= 0:
            raise SolverError("lr_policy \"step\" needs a positive stepsize")
        current_step = iteration // param.stepsize
        rate = base * _pow(param.gamma, current_step)
    elif policy == "exp":
        rate = base * _pow(param.gamma, iteration)
    elif policy == "inv":
        rate = base * _pow(1.0 + param.gamma * iteration, -param.power)
    elif policy == "multistep":
        if current_step < len(param.stepvalue) and iteration >= param.stepvalue[current_step]:
            current_step += 1
            log.info("MultiStep Status: Iteration %d, step = %d", iteration, current_step,
                     extra=at("sgd_solver.cpp:50"))
        rate = base * _pow(param.gamma, current_step)
    elif policy == "poly":
        rate = base * _pow(1.0 - iteration / param.max_iter, param.power)
    elif policy == "sigmoid":
        rate = base / (1.0 + _exp(-param.gamma * (iteration - param.stepsize)))
    else:
        raise SolverError(f"Unknown learning rate policy: {policy!r} (known policies: {', '.join(POLICIES)})")
    with np.errstate(over="ignore"):
        return float(np.float32(rate)), current_step
