"""CPU-only code: multi-threaded kernels compiled with Numba, the counterpart of engine/cuda/.

NumPy runs each array operation on one core (only BLAS uses them all), so a
layer's elementwise passes (im2col/col2im, pooling, LRN, BatchNorm and Scale,
ReLU, the solver's update) would leave the other cores idle. Where speed
needs it, a layer calls into this package when its arrays are NumPy arrays of
float32 or float64, and the tests (tests/engine/cpu/) compare each kernel
with the NumPy path. Kernels follow Caffe's arithmetic as the NumPy path
does: same operations per element, in the same order wherever the result
must be bit for bit the same (ReLU, MAX pooling, the SGD update).

Kernels are compiled on first use, one per dtype, and cached on disk
(`cache=True`, in __pycache__), so a later process loads them in a few
milliseconds each. Numba is imported only when a kernel is first asked for.

Threads: OMP_NUM_THREADS when set (the benchmarks and tests set it), else
every core. ENGINE_CPU_KERNELS=0 turns the kernels off (the NumPy path runs).
"""

import importlib
import os

import numpy as np

_STATE = {"numba": None, "enabled": os.environ.get("ENGINE_CPU_KERNELS", "1") != "0"}
_MODULES = {}
_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _numba():
    """numba, imported once, with its thread count set from OMP_NUM_THREADS; False when missing."""
    if _STATE["numba"] is None:
        # Idle kernel threads sleep at once instead of spinning: between two kernels the cores
        # belong to BLAS's threads (spinning OpenMP workers slow a 2-core GEMM several times).
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        try:
            import numba
        except ImportError:
            numba = False
        if numba:
            wanted = os.environ.get("OMP_NUM_THREADS", "")
            if wanted.isdigit() and int(wanted) > 0:
                numba.set_num_threads(min(int(wanted), numba.config.NUMBA_NUM_THREADS))
        _STATE["numba"] = numba
    return _STATE["numba"]


def set_enabled(flag):
    """Turn the kernels on or off (tests compare both paths); returns the previous setting."""
    previous = _STATE["enabled"]
    _STATE["enabled"] = bool(flag)
    return previous


def set_num_threads(count):
    """Threads the kernels use (at most the cores numba saw at import)."""
    numba = _numba()
    if numba:
        numba.set_num_threads(max(1, min(int(count), numba.config.NUMBA_NUM_THREADS)))


def usable(*arrays):
    """Whether the kernels serve these arrays: NumPy float32/float64, kernels on, numba present."""
    if not _STATE["enabled"]:
        return False
    for array in arrays:
        if type(array) is not np.ndarray or array.dtype not in _DTYPES:
            return False
    return bool(_numba())


def kernels(name):
    """The kernel module engine.cpu.<name> (imports numba on first use)."""
    module = _MODULES.get(name)
    if module is None:
        _numba()
        module = _MODULES[name] = importlib.import_module(f"{__name__}.{name}")
    return module


# Options of every kernel: threads over the outer loop (prange), compiled code cached on disk,
# no reassociation or fused multiply-adds (the NumPy path's roundings).
OPTIONS = {"parallel": True, "cache": True, "fastmath": False}
