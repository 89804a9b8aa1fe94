"""The other update rules of Caffe, each only its ComputeUpdateValue over SGD's pipeline.

Each follows Caffe's order of float operations (sgd_solvers.hpp and the
*_solver.cpp files), so that runs agree with Caffe's to float32 rounding.
`g` is the parameter's diff after clipping, normalization and regularization;
what is left in the diff is the step Net::Update subtracts.
"""

import numpy as np

from .. import backend
from ..errors import SolverError
from .sgd import SGDSolver

f32 = np.float32


class NesterovSolver(SGDSolver):
    """Nesterov momentum: step back from the old velocity, then over-step with the new."""

    type = "Nesterov"

    def compute_update_value(self, param_id, rate):
        blob = self.net.learnable_params[param_id]
        momentum = f32(self.param.momentum)
        history = self.moment(0, param_id)
        previous = history.copy()
        history *= momentum
        history += blob.diff * self.local_rate(param_id, rate)
        blob.diff[...] = history * f32(1 + momentum) - previous * momentum


class AdaGradSolver(SGDSolver):
    """AdaGrad: divide by the root of the running sum of squared gradients."""

    type = "AdaGrad"

    def check_param(self):
        super().check_param()
        if self.param.momentum != 0:
            raise SolverError(f"Momentum cannot be used with AdaGrad (momentum: {self.param.momentum:g})")

    def compute_update_value(self, param_id, rate):
        blob = self.net.learnable_params[param_id]
        xp = backend.get_array_module(blob.diff)
        history = self.moment(0, param_id)
        history += blob.diff * blob.diff
        scaled = blob.diff / (xp.sqrt(history) + f32(self.param.delta))
        blob.diff[...] = scaled * self.local_rate(param_id, rate)


class RMSPropSolver(SGDSolver):
    """RMSProp: divide by the root of a decaying average of squared gradients (rms_decay)."""

    type = "RMSProp"

    def check_param(self):
        super().check_param()
        if self.param.momentum != 0:
            raise SolverError(f"Momentum cannot be used with RMSProp (momentum: {self.param.momentum:g})")
        if not 0 <= self.param.rms_decay < 1:
            raise SolverError(f"rms_decay should lie between 0 and 1 (got {self.param.rms_decay:g})")

    def compute_update_value(self, param_id, rate):
        blob = self.net.learnable_params[param_id]
        xp = backend.get_array_module(blob.diff)
        decay = f32(self.param.rms_decay)
        history = self.moment(0, param_id)
        history *= decay
        history += (blob.diff * blob.diff) * f32(1 - decay)
        scaled = blob.diff / (xp.sqrt(history) + f32(self.param.delta))
        blob.diff[...] = scaled * self.local_rate(param_id, rate)


class AdaDeltaSolver(SGDSolver):
    """AdaDelta: decaying averages (decay = momentum) of squared gradients and of squared
    updates; the step is the gradient times the ratio of their roots, times the lr."""

    type = "AdaDelta"
    history_per_param = 2

    def compute_update_value(self, param_id, rate):
        blob = self.net.learnable_params[param_id]
        xp = backend.get_array_module(blob.diff)
        momentum = f32(self.param.momentum)
        delta = f32(self.param.delta)
        grads = self.moment(0, param_id)
        updates = self.moment(1, param_id)
        grads *= momentum
        grads += (blob.diff * blob.diff) * f32(1 - momentum)
        ratio = xp.sqrt((updates + delta) / (grads + delta))
        blob.diff[...] *= ratio
        updates *= momentum
        updates += (blob.diff * blob.diff) * f32(1 - momentum)
        blob.diff[...] *= self.local_rate(param_id, rate)


class AdamSolver(SGDSolver):
    """Adam: first and second moment estimates (momentum, momentum2) with the bias
    correction folded into the rate: lr * sqrt(1 - b2^t) / (1 - b1^t), t = iter + 1."""

    type = "Adam"
    history_per_param = 2

    def compute_update_value(self, param_id, rate):
        blob = self.net.learnable_params[param_id]
        xp = backend.get_array_module(blob.diff)
        beta1, beta2 = f32(self.param.momentum), f32(self.param.momentum2)
        t = self.iter + 1
        correction = f32(np.sqrt(1.0 - float(beta2) ** t) / (1.0 - float(beta1) ** t))
        first = self.moment(0, param_id)
        second = self.moment(1, param_id)
        first *= beta1
        first += blob.diff * f32(1 - beta1)
        second *= beta2
        second += (blob.diff * blob.diff) * f32(1 - beta2)
        step = first / (xp.sqrt(second) + f32(self.param.delta))
        blob.diff[...] = step * (self.local_rate(param_id, rate) * correction)
