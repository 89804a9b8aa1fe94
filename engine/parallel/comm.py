"""Communicators: the control plane (always MPI) and the data plane (broadcast, allreduce_sum)."""

import logging
import os
import sys

import numpy as np

from .world import ParallelError, world_from_environment

log = logging.getLogger("engine")


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
