"""Building a worker's solver and running data-parallel training; the hook tools/train calls."""

import importlib
import logging
import sys
import traceback
from pathlib import Path

from .. import backend, caffe_pb2
from ..errors import CaffeError
from ..log import Progress, at
from ..solvers import signals, solver_class
from ..solvers.netsetup import read_solver_param
from .comm import make_communicator
from .sync import DataParallel
from .world import ParallelError, world_from_environment

log = logging.getLogger("engine")


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
    from ..log import glog_handler, remove, setup

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
