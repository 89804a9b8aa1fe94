"""Who this worker is: the MPI launcher's environment (Open MPI, MPICH/Intel MPI, PMIx)."""

import os
from dataclasses import dataclass

from ..errors import CaffeError


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
