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

from .comm import Communicator, MPICommunicator, make_communicator
from .run import device_for_worker, run_distributed_training, train_tool
from .sync import DataParallel
from .world import ParallelError, World, launched_by_mpi, world_from_environment

__all__ = ["Communicator", "DataParallel", "MPICommunicator", "ParallelError", "World", "device_for_worker",
           "launched_by_mpi", "make_communicator", "run_distributed_training", "train_tool",
           "world_from_environment"]
