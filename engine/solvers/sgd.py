"""Caffe's SGDSolver: the update pipeline every rule shares, and momentum SGD.

ApplyUpdate = learning rate → ClipGradients (global L2 norm, before anything
else) → per parameter: Normalize (1/iter_size) → Regularize (L2 or L1 decay,
times decay_mult) → ComputeUpdateValue (the rule; times lr_mult) → Net::Update
(data -= diff). The other rules override only `compute_update_value`.

History is one array per learnable parameter (`history_per_param` of them for
rules that keep two moments), in Caffe's order, so state files interchange.

On the CPU the per-parameter steps run fused, UPDATE_CHUNK elements at a time:
Normalize, Regularize, the rule and Net::Update's subtraction each act on a
slice that is still in cache, instead of each streaming whole parameters
through memory. Every element sees the same float operations in the same
order as the step-by-step pipeline, so the numbers are the same bit for bit.
Rules implement `update_values(param_id, diff, histories, rate, scratch)` on
such slices (flat views of the diff and of the history arrays). On the GPU,
momentum SGD runs the same steps as one CUDA kernel (engine/cuda/sgd.py), and on
the CPU as one multi-threaded kernel (engine/cpu/sgd.py), bit for bit the same.
"""

import logging

import numpy as np

from .. import backend, cpu
from ..cuda import sgd as gpu_sgd
from ..errors import SolverError
from ..log import at, number
from ..net import Net
from . import lr_policy
from .base import Solver

log = logging.getLogger("engine.solver")

# Elements per step of the fused CPU update: a few float32 arrays of this size stay in L2 cache.
UPDATE_CHUNK = 1 << 14


class SGDSolver(Solver):
    type = "SGD"
    history_per_param = 1

    def check_param(self):
        p = self.param
        if p.weight_decay and p.regularization_type not in ("L1", "L2"):
            raise SolverError(f"Unknown regularization type: {p.regularization_type} (use L2 or L1)")

    def presolve(self):
        params = self.net.learnable_params
        self.history = [backend.get_array_module(b.data).zeros_like(b.data)
                        for _ in range(self.history_per_param) for b in params]

    def moment(self, which, param_id):
        """History array `which` (0 or 1) of parameter `param_id`, in Caffe's layout."""
        return self.history[which * len(self.net.learnable_params) + param_id]

    # -- ApplyUpdate ---------------------------------------------------------------------
    def get_learning_rate(self):
        rate, self.current_step = lr_policy.learning_rate(self.param, self.iter, self.current_step)
        return rate

    def apply_update(self):
        rate = self.get_learning_rate()
        if self.param.display and self.iter % self.param.display == 0:
            log.info("Iteration %d, lr = %s", self.iter, number(rate), extra=at("sgd_solver.cpp:112"))
        self.clip_gradients()
        # Net::Update folds into the loop unless the diffs must be seen first (debug info) or the
        # net's update is not Net.update.
        fold = not self.net.debug_info and getattr(self.net.update, "__func__", None) is Net.update
        for param_id in range(len(self.net.learnable_params)):
            self.update_param(param_id, rate, subtract=fold)
        if self.net.debug_info:
            self._update_debug_info()
        if not fold:
            self.net.update()

    def clip_gradients(self):
        clip = self.param.clip_gradients
        if clip < 0:
            return
        params = self.net.learnable_params
        sumsq = np.float32(0)
        for blob in params:
            xp = backend.get_array_module(blob.diff)
            sumsq += np.float32(float(xp.vdot(blob.diff.ravel(), blob.diff.ravel())))
        norm = np.sqrt(sumsq)
        if norm > clip:
            scale = np.float32(clip) / norm
            log.info("Gradient clipping: scaling down gradients (L2 norm %s > %s) by scale factor %s",
                     number(norm), number(clip), number(scale), extra=at("sgd_solver.cpp:99"))
            for blob in params:
                blob.diff[...] *= scale

    def update_param(self, param_id, rate, subtract=False):
        """Normalize, Regularize and ComputeUpdateValue for one parameter, then data -= diff if `subtract`."""
        blob = self.net.learnable_params[param_id]
        xp = backend.get_array_module(blob.diff)
        data, diff = blob.data.reshape(-1), blob.diff.reshape(-1)
        histories = [self.moment(which, param_id).reshape(-1) for which in range(self.history_per_param)]
        scale = None if self.param.iter_size == 1 else np.float32(1.0 / self.param.iter_size)
        decay = np.float32(self.param.weight_decay) * np.float32(self.net.params_weight_decay[param_id])
        regularization = self.param.regularization_type if decay else None
        if regularization not in (None, "L1", "L2"):
            raise SolverError(f"Unknown regularization type: {regularization}")
        local_rate = self.local_rate(param_id, rate)
        if xp is not np and type(self).update_values is SGDSolver.update_values:
            kind = {None: gpu_sgd.NO_DECAY, "L2": gpu_sgd.L2, "L1": gpu_sgd.L1}[regularization]
            gpu_sgd.update(diff, data, histories[0], scale, decay, kind, local_rate,
                           np.float32(self.param.momentum), subtract)
            return
        if type(self).update_values is SGDSolver.update_values and cpu.usable(diff, data, histories[0]):
            kind = diff.dtype.type
            code = {None: 0, "L2": 1, "L1": 2}[regularization]
            cpu.kernels("sgd").update(diff, data, histories[0], kind(scale if scale is not None else 1),
                                      kind(decay), code, kind(local_rate), kind(np.float32(self.param.momentum)),
                                      scale is not None, bool(subtract))
            return
        count = diff.size
        step = count if xp is not np else min(count, UPDATE_CHUNK)
        scratch = [xp.empty(step, dtype=diff.dtype) for _ in range(2)]
        for start in range(0, count, max(step, 1)):
            end = min(start + step, count)
            d, w = diff[start:end], data[start:end]
            tmp = [array[:end - start] for array in scratch]
            if scale is not None:  # Normalize
                d *= scale
            if regularization == "L2":
                xp.multiply(w, decay, out=tmp[0])
                d += tmp[0]
            elif regularization == "L1":
                xp.sign(w, out=tmp[0])
                tmp[0] *= decay
                d += tmp[0]
            self.update_values(param_id, d, [h[start:end] for h in histories], local_rate, tmp)
            if subtract:  # Net::Update
                w -= d

    def local_rate(self, param_id, rate):
        return np.float32(rate) * np.float32(self.net.params_lr[param_id])

    def update_values(self, param_id, diff, histories, rate, scratch):
        """Momentum SGD: history = lr * diff + momentum * history; the update is the history."""
        history = histories[0]
        history *= np.float32(self.param.momentum)
        diff *= rate
        history += diff
        diff[...] = history

    def _update_debug_info(self):
        """Caffe's [Update] lines: mean |data| and |diff| of each parameter about to be updated."""
        net = self.net
        names, owners, layer_of = net.param_display_names, net.param_owners, net.param_layer_indices
        params = net.all_params
        layer_names = list(net.layer_dict)
        for param_id, blob in enumerate(params):
            xp = backend.get_array_module(blob.diff)
            count = max(blob.count, 1)
            diff = float(xp.abs(blob.diff).sum()) / count
            layer = layer_names[layer_of[param_id][0]]
            if owners[param_id] < 0:
                data = float(xp.abs(blob.data).sum()) / count
                log.info("    [Update] Layer %s, param %s data: %s; diff: %s", layer, names[param_id], number(data),
                         number(diff), extra=at("net.cpp:636"))
            else:
                owner = owners[param_id]
                log.info("    [Update] Layer %s, param blob %s (owned by layer %s, param %s) diff: %s", layer,
                         names[param_id], layer_names[layer_of[owner][0]], names[owner], number(diff),
                         extra=at("net.cpp:645"))
