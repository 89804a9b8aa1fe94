"""Data-parallel training over MPI, as Caffe 1.0's multi-GPU training (its NCCL solver callback).

Each worker is a process started by a launcher (`mpirun -np N tools/train ...`) with its own
solver and nets; its data layers read every N-th training record (backend.keeps_record). As in
Caffe, rank 0's weights are broadcast at start (initialisation is seeded with seed + rank), and
after each backward pass the gradients are summed over the workers and scaled by 1/N, so all
apply the same update and N workers with batch B train like one with batch N*B. Only rank 0
logs, tests and snapshots. Processes, not threads: the engine's mode, RNG and solver rank are
per process, and mpirun spans machines.

A Communicator has a control plane (small objects: start-up agreement, per-iteration signal
votes, abort) that is always MPI, and a data plane of two in-place methods, `broadcast(arrays,
root)` and `allreduce_sum(arrays)`: all an NCCL communicator for GPU arrays must override. It is
not written (untestable without GPUs), so several workers on GPUs are refused with a message.

Nothing hangs: a set-up error on any rank (missing file, absent GPU, different nets) is agreed
and raised on every rank, naming it; a later error ends the job with MPI_Abort (peers would wait
in the next all-reduce); mpirun reports a killed worker and ends the rest, as it ends all on
Ctrl-C (snapshots are atomic, never half-written). A SIGINT/SIGHUP sent to one worker is voted
on, so all workers stop, or rank 0 snapshots, after the same iteration.
"""

import hashlib
import importlib
import logging
import os
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import backend, caffe_pb2
from .errors import CaffeError
from .log import Progress, at
from .solvers import signals, solver_class
from .solvers.netsetup import read_solver_param

log = logging.getLogger("engine.parallel")


class ParallelError(CaffeError):
    """Workers that cannot train together: a bad launch, a failed or mismatched worker."""


# -- who am I: the launcher's environment ------------------------------------------------------
_LAUNCHERS = (  # (size variable, rank variable, local-rank variable, launcher)
    ("OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_LOCAL_RANK", "Open MPI"),
    ("PMI_SIZE", "PMI_RANK", "MPI_LOCALRANKID", "PMI (MPICH, Intel MPI)"),
)


@dataclass(frozen=True)
class World:
    rank: int
    size: int  # 0: the launcher does not say; MPI will
    local_rank: int  # index among the workers on this machine (picks the GPU)
    launcher: str


def world_from_environment(environ=None):
    """The World a launcher describes in the environment, or None in a plain single process."""
    env = os.environ if environ is None else environ
    for size_key, rank_key, local_key, launcher in _LAUNCHERS:
        if size_key in env:
            try:
                size, rank = int(env[size_key]), int(env[rank_key])
                local = int(env.get(local_key, rank))
            except (KeyError, ValueError):
                raise ParallelError(f"{launcher} launch with unreadable {size_key}/{rank_key} "
                                    f"({env.get(size_key)!r}/{env.get(rank_key)!r})") from None
            if not 0 <= rank < size:
                raise ParallelError(f"{launcher} says this is rank {rank} of {size} workers")
            return World(rank, size, local, launcher)
    if "PMIX_RANK" in env:  # PMIx launchers (srun --mpi=pmix, prterun) give no size variable
        try:
            rank = int(env["PMIX_RANK"])
            return World(rank, 0, int(env.get("SLURM_LOCALID", rank)), "PMIx")
        except ValueError:
            raise ParallelError(f"PMIx launch with unreadable PMIX_RANK {env['PMIX_RANK']!r}") from None
    return None


def launched_by_mpi(environ=None):
    """True when an MPI launcher started this process (the hook tools/train uses)."""
    return world_from_environment(environ) is not None


# -- communicators ----------------------------------------------------------------------------
class Communicator:
    """One worker alone: every exchange is the identity. Subclasses talk to the others."""

    rank, size = 0, 1

    def allgather(self, obj):
        """Control plane: the list of every rank's `obj`, in rank order."""
        return [obj]

    def broadcast(self, arrays, root=0):
        """Data plane: every array takes `root`'s values, in place."""

    def allreduce_sum(self, arrays):
        """Data plane: every array becomes the element-wise sum over the workers, in place."""

    def abort(self, code=1):
        """End every worker now (only used with peers that could otherwise wait forever)."""
        os._exit(code)


class MPICommunicator(Communicator):
    """MPI_COMM_WORLD through mpi4py; arrays must be NumPy (GPU arrays are the NCCL path's)."""

    def __init__(self, world=None):
        try:
            from mpi4py import MPI
        except ImportError:
            raise ParallelError("started by an MPI launcher, but mpi4py is not installed (pip install "
                                "mpi4py, built against the MPI whose mpirun you use)") from None
        self.mpi, self.comm = MPI, MPI.COMM_WORLD
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        if world is not None and world.size and world.size != self.size:
            raise ParallelError(
                f"{world.launcher} started {world.size} workers but MPI sees {self.size} (this is rank "
                f"{world.rank}); mpi4py is probably built against another MPI than this mpirun: use the "
                "mpirun of the MPI that `python3 -c 'from mpi4py import MPI; print(MPI.Get_library_version())'` "
                "names")
        self._buffer = np.zeros(0, np.float32)

    def allgather(self, obj):
        return self.comm.allgather(obj)

    @staticmethod
    def _host(array):
        if not isinstance(array, np.ndarray):
            raise ParallelError("the MPI communicator exchanges NumPy arrays only; GPU arrays need the "
                                "NCCL communicator, which is not available yet")
        return array

    def broadcast(self, arrays, root=0):
        if self.size == 1:
            return
        for array in arrays:
            buffer = np.ascontiguousarray(self._host(array))
            self.comm.Bcast(buffer, root=root)
            if buffer is not array:
                array[...] = buffer

    def allreduce_sum(self, arrays):
        """One Allreduce over all arrays packed into one reused buffer (few large messages are fastest)."""
        if self.size == 1:
            return
        arrays = [self._host(a) for a in arrays]
        total = sum(a.size for a in arrays)
        dtype = np.result_type(*arrays) if arrays else np.float32
        if self._buffer.size != total or self._buffer.dtype != dtype:
            self._buffer = np.empty(total, dtype)
        np.concatenate([a.ravel() for a in arrays] or [self._buffer[:0]], out=self._buffer)
        self.comm.Allreduce(self.mpi.IN_PLACE, self._buffer, op=self.mpi.SUM)
        start = 0
        for array in arrays:
            array[...] = self._buffer[start:start + array.size].reshape(array.shape)
            start += array.size

    def abort(self, code=1):
        sys.stdout.flush()
        sys.stderr.flush()
        self.comm.Abort(code)


def make_communicator(world=None):
    """MPI when a launcher started this process, else a lone worker."""
    world = world if world is not None else world_from_environment()
    return Communicator() if world is None else MPICommunicator(world)


# -- the solver callback ----------------------------------------------------------------------
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


# -- devices ------------------------------------------------------------------------------------
def device_for_worker(gpus, rank, local_rank, device_count):
    """The GPU of one worker: entry `local_rank` of `gpus` (one ID per worker on each machine)."""
    if not gpus:
        return None
    if local_rank >= len(gpus):
        raise ParallelError(f"rank {rank} (worker {local_rank} on its machine) has no GPU: --gpu lists "
                            f"{len(gpus)} device(s) ({','.join(map(str, gpus))}); give one device ID per "
                            "worker started on each machine")
    device = gpus[local_rank]
    if not 0 <= device < device_count:
        have = f"devices 0 to {device_count - 1}" if device_count else "no GPU"
        raise ParallelError(f"rank {rank}: GPU {device} does not exist (this machine has {have})")
    return device


def _set_device(gpus, comm, world):
    """CPU, or the one GPU of a lone worker; `gpus` is cli's --gpu text or a list of IDs."""
    reason = backend.gpu_unavailable_reason()
    count = 0 if reason else importlib.import_module("cupy").cuda.runtime.getDeviceCount()
    if isinstance(gpus, str):
        try:
            everything = list(range(count)) or [0]  # no GPU: device 0, so that the warning says why
            gpus = everything if gpus.strip() == "all" else [int(g) for g in gpus.split(",") if g.strip()]
        except ValueError:
            raise CaffeError(f"--gpu must be device IDs separated by ',' or 'all', got '{gpus}'") from None
    ids = list(gpus or [])
    if ids and reason:
        log.warning("GPU %s requested but %s; running on the CPU instead", ",".join(map(str, ids)), reason)
        ids = []
    local = world.local_rank if world is not None else 0
    device = device_for_worker(ids, comm.rank, local, count)
    if device is None:
        backend.set_mode_cpu()
        return
    if comm.size > 1:
        raise ParallelError(f"rank {comm.rank}: training on several GPUs needs the NCCL communicator, which is "
                            "not available yet; run the workers on the CPU (leave out --gpu) or train on one "
                            "GPU without mpirun")
    backend.set_device(device)
    backend.set_mode_gpu()


# -- the run ------------------------------------------------------------------------------------
def _build_solver(solver_path, weights, snapshot, iterations, gpus, level, stages, comm, world):
    """As `caffe train` builds its solver; workers other than rank 0 get no test nets nor snapshots."""
    if not solver_path:
        raise CaffeError("Need a solver definition to train.")
    if snapshot and weights:
        raise CaffeError("Give a snapshot to resume training or weights to finetune but not both.")
    param = read_solver_param(solver_path)
    param.train_state.level = level
    param.train_state.stage.extend(stages)
    cls = solver_class(param.type)
    if not gpus and param.HasField("solver_mode") and param.solver_mode == caffe_pb2.SolverParameter.GPU:
        gpus = [param.device_id]
    _set_device(gpus, comm, world)
    if snapshot and not Path(snapshot).is_file():
        raise CaffeError(f"solver state not found: {snapshot}")
    if snapshot or weights:
        param.ClearField("weights")
        if weights:
            param.weights.append(weights)
    if iterations is not None:
        param.max_iter = iterations
    if comm.rank == 0:
        folder = Path(param.snapshot_prefix).parent
        if param.snapshot_prefix and not folder.exists():
            folder.mkdir(parents=True, exist_ok=True)
    else:  # Caffe builds test nets on the root solver only, and only it displays and snapshots
        for field in ("test_iter", "test_net", "test_net_param", "test_state"):
            param.ClearField(field)
        param.test_interval = param.snapshot = param.display = 0
        param.snapshot_after_train = False
    solver = cls(param)
    if snapshot:
        log.info("Resuming from %s", snapshot, extra=at("caffe.cpp:244"))
        solver.restore(snapshot)
    return solver


def run_distributed_training(solver_path, weights=None, snapshot=None, iterations=None, gpus=None,
                             sigint_effect=signals.STOP, sighup_effect=signals.SNAPSHOT, level=0, stages=(),
                             communicator=None, prepare=None):
    """`caffe train` as one worker of a data-parallel job; returns this worker's solver when done.

    `iterations` overrides max_iter; `prepare(solver)` runs on every worker before training starts.
    Without a launcher this is plain single-process training.
    """
    world = world_from_environment() if communicator is None else None
    comm = communicator or make_communicator(world)
    engine_log = logging.getLogger("engine")
    saved_level = engine_log.level
    if comm.rank != 0:
        engine_log.setLevel(logging.CRITICAL)
    try:
        backend.set_solver_rank(comm.rank, comm.size)  # before the nets: prefetching starts at set-up
        handler = signals.SignalHandler(sigint_effect, sighup_effect)
        with handler:
            solver, problem = None, None
            try:
                solver = _build_solver(solver_path, weights, snapshot, iterations, gpus, level, stages, comm, world)
                if prepare is not None:
                    prepare(solver)
            except Exception as exc:  # on one worker, it must not leave the others waiting
                if comm.size == 1:
                    raise
                if not isinstance(exc, (CaffeError, OSError)):
                    traceback.print_exc()
                problem = str(exc) if isinstance(exc, (CaffeError, OSError)) else f"{type(exc).__name__}: {exc}"
            parallel = DataParallel(solver, comm, handler.action)
            parallel.agree_start(problem)
            _train(solver, parallel, comm)
        return solver
    finally:
        engine_log.setLevel(saved_level)


def _train(solver, parallel, comm):
    if comm.size > 1:
        log.info("Data-parallel training on %d workers: rank 0 logs, tests and snapshots; worker r reads "
                 "training records r, r+%d, ...", comm.size, comm.size)
    try:
        parallel.broadcast_weights()
        parallel.attach()
        log.info("Starting Optimization", extra=at("caffe.cpp:248"))
        first = next(iter(solver.net.blobs.values()), None)
        images = first.shape[0] * solver.param.iter_size * comm.size if first is not None and first.shape else 0
        solver.progress = Progress(solver.iter, solver.param.max_iter, images) if comm.rank == 0 else None
        try:
            solver.solve()
        finally:
            if solver.progress is not None:
                solver.progress.close()
        log.info("Optimization Done.", extra=at("caffe.cpp:259"))
    except BaseException as exc:
        if comm.size == 1:
            raise
        if not isinstance(exc, (CaffeError, OSError, KeyboardInterrupt)):
            traceback.print_exc()
        print(f"rank {comm.rank} of {comm.size} stopped the job: {str(exc) or type(exc).__name__}",
              file=sys.stderr)
        comm.abort(1)


def train_tool(values, max_iter=None, program="train"):
    """Body of tools/train and `caffe train` under mpirun (values: cli's flags); returns the exit status.

    Errors all workers agree on are printed once, by rank 0.
    """
    from .log import glog_handler, remove, setup

    existing = glog_handler()
    handler = setup(stream=sys.stderr)
    try:
        comm = make_communicator()
    except CaffeError as exc:
        print(f"{program}: {exc}", file=sys.stderr)
        return 1
    try:
        run_distributed_training(values["solver"], weights=values["weights"] or None,
                                 snapshot=values["snapshot"] or None, iterations=max_iter, gpus=values["gpu"],
                                 sigint_effect=values["sigint_effect"], sighup_effect=values["sighup_effect"],
                                 level=values["level"], stages=[s for s in values["stage"].split(",") if s],
                                 communicator=comm)
    except CaffeError as exc:
        if comm.rank == 0:
            print(f"{program}: {exc}", file=sys.stderr)
        return 1
    finally:
        if existing is None:
            remove(handler)
    return 0
