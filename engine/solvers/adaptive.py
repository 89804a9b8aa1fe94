"""The other update rules of Caffe, each only its ComputeUpdateValue over SGD's pipeline.

Each follows Caffe's order of float operations (sgd_solvers.hpp and the
*_solver.cpp files), so that runs agree with Caffe's to float32 rounding.
`g` is the parameter's diff after clipping, normalization and regularization;
what is left in the diff is the step Net::Update subtracts. The rules run on
slices (sgd.py's fused update) with two scratch slices for temporaries, in
place, with the float operations of the whole-array formulas.
"""

import numpy as np

from .. import backend
from ..errors import SolverError
from .sgd import SGDSolver

f32 = np.float32
_xp = backend.get_array_module


class NesterovSolver(SGDSolver):
    """Nesterov momentum: step back from the old velocity, then over-step with the new."""

    type = "Nesterov"

    def update_values(self, param_id, diff, histories, rate, scratch):
        momentum = f32(self.param.momentum)
        history, previous = histories[0], scratch[0]
        history *= momentum
        previous[...] = history  # previous * momentum: the same product
        diff *= rate
        history += diff
        _xp(diff).multiply(history, f32(1 + momentum), out=diff)
        diff -= previous


class AdaGradSolver(SGDSolver):
    """AdaGrad: divide by the root of the running sum of squared gradients."""

    type = "AdaGrad"

    def check_param(self):
        super().check_param()
        if self.param.momentum != 0:
            raise SolverError(f"Momentum cannot be used with AdaGrad (momentum: {self.param.momentum:g})")

    def update_values(self, param_id, diff, histories, rate, scratch):
        xp = _xp(diff)
        history, tmp = histories[0], scratch[0]
        xp.multiply(diff, diff, out=tmp)
        history += tmp
        xp.sqrt(history, out=tmp)
        tmp += f32(self.param.delta)
        diff /= tmp
        diff *= rate


class RMSPropSolver(SGDSolver):
    """RMSProp: divide by the root of a decaying average of squared gradients (rms_decay)."""

    type = "RMSProp"

    def check_param(self):
        super().check_param()
        if self.param.momentum != 0:
            raise SolverError(f"Momentum cannot be used with RMSProp (momentum: {self.param.momentum:g})")
        if not 0 <= self.param.rms_decay < 1:
            raise SolverError(f"rms_decay should lie between 0 and 1 (got {self.param.rms_decay:g})")

    def update_values(self, param_id, diff, histories, rate, scratch):
        xp = _xp(diff)
        decay = f32(self.param.rms_decay)
        history, tmp = histories[0], scratch[0]
        history *= decay
        xp.multiply(diff, diff, out=tmp)
        tmp *= f32(1 - decay)
        history += tmp
        xp.sqrt(history, out=tmp)
        tmp += f32(self.param.delta)
        diff /= tmp
        diff *= rate


class AdaDeltaSolver(SGDSolver):
    """AdaDelta: decaying averages (decay = momentum) of squared gradients and of squared
    updates; the step is the gradient times the ratio of their roots, times the lr."""

    type = "AdaDelta"
    history_per_param = 2

    def update_values(self, param_id, diff, histories, rate, scratch):
        xp = _xp(diff)
        momentum = f32(self.param.momentum)
        delta = f32(self.param.delta)
        grads, updates = histories
        tmp, other = scratch
        grads *= momentum
        xp.multiply(diff, diff, out=tmp)
        tmp *= f32(1 - momentum)
        grads += tmp
        xp.add(updates, delta, out=tmp)
        xp.add(grads, delta, out=other)
        tmp /= other
        xp.sqrt(tmp, out=tmp)
        diff *= tmp
        updates *= momentum
        xp.multiply(diff, diff, out=tmp)
        tmp *= f32(1 - momentum)
        updates += tmp
        diff *= rate


class AdamSolver(SGDSolver):
    """Adam: first and second moment estimates (momentum, momentum2) with the bias
    correction folded into the rate: lr * sqrt(1 - b2^t) / (1 - b1^t), t = iter + 1."""

    type = "Adam"
    history_per_param = 2

    def update_values(self, param_id, diff, histories, rate, scratch):
        xp = _xp(diff)
        beta1, beta2 = f32(self.param.momentum), f32(self.param.momentum2)
        t = self.iter + 1
        correction = f32(np.sqrt(1.0 - float(beta2) ** t) / (1.0 - float(beta1) ** t))
        first, second = histories
        tmp = scratch[0]
        first *= beta1
        xp.multiply(diff, f32(1 - beta1), out=tmp)
        first += tmp
        second *= beta2
        xp.multiply(diff, diff, out=tmp)
        tmp *= f32(1 - beta2)
        second += tmp
        xp.sqrt(second, out=tmp)
        tmp += f32(self.param.delta)
        xp.divide(first, tmp, out=diff)
        diff *= rate * correction
