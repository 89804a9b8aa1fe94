"""The solver callback that keeps one worker's solver in step with its peers (Caffe's NCCL callback)."""

import hashlib

import numpy as np

from ..solvers import signals
from .world import ParallelError


def _digest(value):
    return hashlib.sha256(repr(value).encode()).hexdigest()[:12]


class DataParallel:
    """Caffe's NCCL callback over a Communicator: keeps one solver in step with its peers."""

    def __init__(self, solver, comm, local_action=None):
        self.solver, self.comm = solver, comm
        self.local_action = local_action or (lambda: signals.NONE)
        self._agreed = signals.NONE

    def fingerprint(self):
        """What must be equal on every worker: a worker with another net or state cannot join."""
        s = self.solver
        shapes = [tuple(b.shape) for b in s.net.learnable_params]
        return {"solver type": s.type, "net": s.net.name, "learnable parameters": len(shapes),
                "parameter values": int(sum(int(np.prod(shape)) for shape in shapes)),
                "parameter shapes": _digest(shapes), "iteration": s.iter, "max_iter": s.param.max_iter,
                "iter_size": s.param.iter_size,
                "blob shapes": _digest([(n, tuple(b.shape)) for n, b in s.net.blobs.items()])}

    def agree_start(self, problem=None):
        """Every rank learns whether every rank is ready and the same; raises on all ranks if not."""
        mine = ("failed", problem) if problem is not None else ("ready", self.fingerprint())
        peers = self.comm.allgather(mine)
        failed = [(rank, what) for rank, (state, what) in enumerate(peers) if state == "failed"]
        if failed:
            if len(failed) == len(peers) and len({what for _, what in failed}) == 1:
                raise ParallelError(f"{failed[0][1]} (on every worker)" if len(peers) > 1 else failed[0][1])
            raise ParallelError("; ".join(f"worker rank {rank} of {len(peers)} failed to start: {what}"
                                          for rank, what in failed))
        reference = peers[0][1]
        for rank, (_, theirs) in enumerate(peers[1:], start=1):
            differ = [f"{key} {theirs.get(key)} (rank 0: {reference[key]})" for key in reference
                      if theirs.get(key) != reference[key]]
            if differ:
                raise ParallelError(f"worker rank {rank} does not match rank 0, so they cannot train together: "
                                    + ", ".join(differ) + " (every worker must use the same solver, net and "
                                    "snapshot)")

    def broadcast_weights(self):
        self.comm.broadcast([b.data for b in self.solver.net.learnable_params], root=0)

    def attach(self):
        self.solver.add_callback(self)
        self.solver.set_action_function(self.action)

    def on_start(self):
        """Nothing to do: weights stay equal through equal updates."""

    def on_gradients_ready(self):
        diffs = [b.diff for b in self.solver.net.learnable_params]
        if self.comm.size > 1:
            self.comm.allreduce_sum(diffs)
            scale = np.float32(1.0 / self.comm.size)
            for diff in diffs:
                diff *= scale
        votes = self.comm.allgather(self.local_action())
        self._agreed = next((a for a in (signals.STOP, signals.SNAPSHOT) if a in votes), signals.NONE)

    def action(self):
        """The solver's action function: the agreed vote, once, after the update (snapshots: rank 0)."""
        agreed, self._agreed = self._agreed, signals.NONE
        return signals.NONE if agreed == signals.SNAPSHOT and self.comm.rank != 0 else agreed
