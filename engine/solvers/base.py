"""The solver loop, as Caffe's Solver: nets, Step, Solve, testing, display, snapshots.

The update rule (ApplyUpdate and the per-parameter history) belongs to the
subclasses in sgd.py and adaptive.py; this class only drives the nets, in the
order of Caffe's Solver::Step, which iter_size, average_loss, resuming and a
data-parallel driver (through the callbacks) all depend on.
"""

import logging
import time
from types import SimpleNamespace

import numpy as np

from .. import backend
from ..errors import SolverError
from ..log import at, number
from . import finite, lr_policy, signals
from .detection_test import DetectionTestMixin, check_eval_param
from .netsetup import build_test_nets, build_train_net, read_solver_param
from .snapshot import SnapshotMixin

log = logging.getLogger("engine.solver")


class Solver(SnapshotMixin, DetectionTestMixin):
    """Caffe's Solver: `Solver(path_or_SolverParameter)`, with pycaffe's interface."""

    type = None

    def __init__(self, param):
        param = read_solver_param(param)
        log.info("Initializing solver from parameters: \n%s", str(param).rstrip("\n"), extra=at("solver.cpp:45"))
        self.param = param
        self.iter = 0
        self.current_step = 0
        self._check_param()
        self.check_snapshot_write_permissions(probe=bool(param.snapshot))
        if param.random_seed >= 0:
            # Caffe offsets the seed by the data-parallel rank, so workers draw differently.
            rank = backend.solver_rank() if hasattr(backend, "solver_rank") else 0
            backend.set_random_seed(param.random_seed + rank)
        self.callbacks = []
        self.action_function = None
        self.requested_early_exit = False
        self.net = build_train_net(param)
        self.test_nets = build_test_nets(param)
        self.mean_scores = [[] for _ in self.test_nets]
        log.info("Solver scaffolding done.", extra=at("solver.cpp:57"))
        self._losses = []
        self.smoothed_loss = 0.0
        self._iterations_last = 0
        self.progress = None
        self.presolve()

    # -- checks (Caffe's CHECKs, raised before anything runs) -------------------------
    def _check_param(self):
        p = self.param
        if p.average_loss < 1:
            raise SolverError(f"average_loss should be at least 1 (got {p.average_loss})")
        if p.iter_size < 1:
            raise SolverError(f"iter_size must be positive (got {p.iter_size})")
        if p.display < 0 or p.snapshot < 0 or p.test_interval < 0:
            raise SolverError("display, snapshot and test_interval must not be negative")
        if any(n < 0 for n in p.test_iter):
            raise SolverError(f"test_iter must not be negative (got {list(p.test_iter)})")
        for field, value in p.ListFields():
            if field.cpp_type in (field.CPPTYPE_FLOAT, field.CPPTYPE_DOUBLE) and not field.is_repeated \
                    and not np.isfinite(value):
                raise SolverError(f"{field.name} must be a finite number (got {value})")
        lr_policy.check(p)
        check_eval_param(p)
        self.check_param()

    def check_param(self):
        """Rule-specific checks (Caffe's constructor sanity checks); subclasses extend."""

    def presolve(self):
        """Create the update history (SGDSolver::PreSolve); subclasses implement."""

    # -- pycaffe's interface -----------------------------------------------------------
    @property
    def max_iter(self):
        return self.param.max_iter

    def add_callback(self, on_start, on_gradients_ready=None):
        """pycaffe's add_callback(on_start, on_gradients_ready), or one object with both methods."""
        if on_gradients_ready is None and hasattr(on_start, "on_gradients_ready"):
            callback = on_start
        else:
            callback = SimpleNamespace(on_start=on_start or (lambda: None),
                                       on_gradients_ready=on_gradients_ready or (lambda: None))
        self.callbacks.append(callback)

    def set_action_function(self, function):
        """A function returning signals.NONE, STOP or SNAPSHOT, polled each iteration (Caffe's)."""
        self.action_function = function

    def requested_action(self):
        return self.action_function() if self.action_function else signals.NONE

    def share_weights(self, net):
        """pycaffe's share_weights: `net` uses this solver's trained parameters."""
        net.share_with(self.net)

    # -- the loop ------------------------------------------------------------------------
    def step(self, iters):
        """Caffe's Step. NumPy's floating-point warnings are off: a loss or weights that stop
        being finite stop the run with one message (finite.py) instead."""
        with np.errstate(all="ignore"):
            self._step(iters)

    def _step(self, iters):
        p = self.param
        start_iter, stop_iter = self.iter, self.iter + int(iters)
        self._losses = []
        self.smoothed_loss = 0.0
        self._iterations_last = self.iter
        timer = time.monotonic()
        while self.iter < stop_iter:
            self.net.clear_param_diffs()
            if p.test_interval and self.iter % p.test_interval == 0 and (self.iter > 0 or p.test_initialization):
                self.test_all()
                if self.requested_early_exit:
                    break
            for callback in self.callbacks:
                callback.on_start()
            display = bool(p.display) and self.iter % p.display == 0
            self.net.debug_info = display and p.debug_info
            loss = np.float32(0)
            for _ in range(p.iter_size):
                loss += np.float32(self.net.forward_backward())
                if self.net.debug_info:
                    self._backward_debug_info()
            loss /= np.float32(p.iter_size)
            finite.check_loss(self, loss)
            self._update_smoothed_loss(loss, start_iter, p.average_loss)
            if display:
                timer = self._display(timer)
            for callback in self.callbacks:
                callback.on_gradients_ready()
            self.apply_update()
            self.iter += 1
            request = self.requested_action()
            if (p.snapshot and self.iter % p.snapshot == 0) or request == signals.SNAPSHOT:
                self.snapshot()
            if request == signals.STOP:
                self.requested_early_exit = True
                break
            if self.progress is not None:
                self.progress.update(self.iter)

    def _update_smoothed_loss(self, loss, start_iter, average_loss):
        loss = np.float32(loss)
        if len(self._losses) < average_loss:
            self._losses.append(loss)
            size = len(self._losses)
            self.smoothed_loss = (np.float32(self.smoothed_loss) * (size - 1) + loss) / np.float32(size)
        else:
            index = (self.iter - start_iter) % average_loss
            change = (loss - self._losses[index]) / np.float32(average_loss)
            self.smoothed_loss = np.float32(self.smoothed_loss) + change
            self._losses[index] = loss

    def _display(self, timer):
        now = time.monotonic()
        lapse = now - timer
        per_s = (self.iter - self._iterations_last) / (lapse if lapse else 1.0)
        log.info("Iteration %d (%s iter/s, %ss/%d iters), loss = %s", self.iter, number(per_s), number(lapse),
                 self.param.display, number(self.smoothed_loss), extra=at("solver.cpp:239"))
        self._iterations_last = self.iter
        self._log_outputs(self.net, "Train", None, "solver.cpp:258")
        return now

    def _log_outputs(self, net, kind, values, where):
        """`    Train net output #k: name = v (* w = v*w loss)`, one line per output element."""
        weights = net.blob_loss_weights
        index = 0
        for name in net.outputs:
            data = backend.to_host(net.blobs[name].data).ravel() if values is None else values[name]
            weight = np.float32(weights[name])
            for value in np.asarray(data, dtype=np.float32).ravel():
                suffix = f" (* {number(weight)} = {number(weight * value)} loss)" if weight else ""
                log.info("    %s net output #%d: %s = %s%s", kind, index, name, number(value), suffix, extra=at(where))
                index += 1

    def _backward_debug_info(self):
        xp = backend.get_array_module
        sums = np.zeros(4)
        for blob in self.net.learnable_params:
            m = xp(blob.data)
            sums += [float(m.abs(blob.data).sum()), float(m.abs(blob.diff).sum()),
                     float(m.vdot(blob.data.ravel(), blob.data.ravel())),
                     float(m.vdot(blob.diff.ravel(), blob.diff.ravel()))]
        log.error("    [Backward] All net params (data, diff): L1 norm = (%s, %s); L2 norm = (%s, %s)",
                  number(sums[0]), number(sums[1]), number(np.sqrt(sums[2])), number(np.sqrt(sums[3])),
                  extra=at("net.cpp:591"))

    def solve(self, resume_file=None):
        """Caffe's Solve: (restore,) step to max_iter, final snapshot, final display and test."""
        with np.errstate(all="ignore"):
            self._solve(resume_file)

    def _solve(self, resume_file):
        p = self.param
        log.info("Solving %s", self.net.name, extra=at("solver.cpp:289"))
        log.info("Learning Rate Policy: %s", p.lr_policy, extra=at("solver.cpp:290"))
        self.requested_early_exit = False
        if resume_file:
            log.info("Restoring previous solver status from %s", resume_file, extra=at("solver.cpp:295"))
            self.restore(resume_file)
        if p.snapshot_after_train:
            self.check_snapshot_write_permissions(probe=True)
        start_iter = self.iter
        self.step(p.max_iter - self.iter)
        if p.snapshot_after_train and (not p.snapshot or self.iter % p.snapshot != 0):
            self.snapshot()
        if self.requested_early_exit:
            log.info("Optimization stopped early.", extra=at("solver.cpp:307"))
            return
        if p.display and self.iter % p.display == 0:
            loss = self.net.forward_from_to()
            finite.check_loss(self, loss)
            self._update_smoothed_loss(loss, start_iter, p.average_loss)
            log.info("Iteration %d, loss = %s", self.iter, number(self.smoothed_loss), extra=at("solver.cpp:327"))
        if p.test_interval and self.iter % p.test_interval == 0:
            self.test_all()
        log.info("Optimization Done.", extra=at("solver.cpp:332"))

    # -- testing -------------------------------------------------------------------------
    def test_all(self):
        for test_net_id in range(len(self.test_nets)):
            if self.requested_early_exit:
                break
            if self.param.eval_type == "detection":
                self.test_detection(test_net_id)
            else:
                self.test(test_net_id)

    def test(self, test_net_id=0):
        """Run test_iter forward passes; log and keep the mean of every output element."""
        p = self.param
        log.info("Iteration %d, Testing net (#%d)", self.iter, test_net_id, extra=at("solver.cpp:351"))
        net = self.test_nets[test_net_id]
        net.share_with(self.net)
        iterations = p.test_iter[test_net_id]
        loss = np.float32(0)
        scores = None
        for _ in range(iterations):
            if self._poll_requests():
                break
            iter_loss = net.forward_from_to()
            if p.test_compute_loss:
                loss += np.float32(iter_loss)
            values = {name: np.asarray(backend.to_host(net.blobs[name].data), dtype=np.float32).ravel()
                      for name in net.outputs}
            if scores is None:
                scores = values
            else:
                for name in scores:
                    scores[name] = scores[name] + values[name]
        if self.requested_early_exit:
            log.info("Test interrupted.", extra=at("solver.cpp:408"))
            return
        if p.test_compute_loss and iterations:
            log.info("Test loss: %s", number(loss / np.float32(iterations)), extra=at("solver.cpp:414"))
        scores = scores or {name: np.zeros(0, np.float32) for name in net.outputs}
        means = {name: values / np.float32(max(iterations, 1)) for name, values in scores.items()}
        self.mean_scores[test_net_id] = [float(v) for name in net.outputs for v in means[name]]
        self._log_outputs(net, "Test", means, "solver.cpp:418")

    def _poll_requests(self):
        """Serve snapshot/stop requests during a test pass; True when testing must stop."""
        request = self.requested_action()
        while request != signals.NONE:
            if request == signals.SNAPSHOT:
                self.snapshot()
            elif request == signals.STOP:
                self.requested_early_exit = True
            request = self.requested_action()
        return self.requested_early_exit

    def test_scores(self, test_net_id=0):
        """{output name: mean value} of the last test of a test net (first element of each output)."""
        net = self.test_nets[test_net_id]
        if self.param.eval_type == "detection":
            return dict(zip(net.outputs, self.mean_scores[test_net_id]))
        values, index = {}, 0
        for name in net.outputs:
            count = net.blobs[name].count
            chunk = self.mean_scores[test_net_id][index:index + count]
            values[name] = chunk[0] if count == 1 and chunk else chunk
            index += count
        return values

