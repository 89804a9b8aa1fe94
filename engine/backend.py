"""The one place that knows whether arrays live on the CPU (NumPy) or GPU (CuPy).

Layers never import CuPy: they ask `get_array_module(array)` for `xp` and
write one body for both. The net and data layers ask `array_module()` for the
module of the current mode when they allocate.
"""

import numpy as np

from .errors import CaffeError

_state = {"mode": "cpu", "device": 0, "rng": np.random.default_rng(), "seed": None, "tf32": False}


_CUPY = []


def _cupy():
    """CuPy, or None; imported once (layers ask for their array module on every call)."""
    if not _CUPY:
        try:
            import cupy
        except ImportError:
            cupy = None
        _CUPY.append(cupy)
    return _CUPY[0]


def gpu_available():
    """True when CuPy imports and at least one CUDA device answers."""
    cp = _cupy()
    if cp is None:
        return False
    try:
        return cp.cuda.runtime.getDeviceCount() > 0
    except Exception:  # driver missing or broken: no usable GPU
        return False


def gpu_unavailable_reason():
    cp = _cupy()
    if cp is None:
        return "CuPy is not installed (pip install cupy-cuda12x)"
    try:
        count = cp.cuda.runtime.getDeviceCount()
    except Exception as exc:
        return f"the CUDA driver does not answer ({exc})"
    return None if count > 0 else "no CUDA device found"


def set_mode_cpu():
    _state["mode"] = "cpu"


def set_mode_gpu():
    reason = gpu_unavailable_reason()
    if reason:
        raise CaffeError(f"GPU mode requested but {reason}")
    _state["mode"] = "gpu"
    _cupy().cuda.Device(_state["device"]).use()


def set_device(device_id):
    _state["device"] = int(device_id)
    if _state["mode"] == "gpu":
        _cupy().cuda.Device(_state["device"]).use()


def mode():
    return _state["mode"]


def set_tf32(enabled):
    """Let float32 matrix products and convolutions on the GPU use TF32 tensor cores.

    Off by default, so that GPU results are float32 results, as Caffe's cuBLAS
    products are. TF32 rounds the products' inputs to 10 mantissa bits (about
    3e-4 relative error) for several times the speed on Ampere and later GPUs;
    PyTorch allows it for convolutions by default.
    """
    _state["tf32"] = bool(enabled)
    cp = _cupy()
    if cp is not None:
        from cupy._core import _routines_linalg as linalg

        kind = linalg.COMPUTE_TYPE_TF32 if enabled else linalg.COMPUTE_TYPE_FP32
        linalg.set_compute_type(np.float32, kind)


def tf32():
    return _state["tf32"]


def array_module():
    """NumPy or CuPy, by the current mode."""
    return _cupy() if _state["mode"] == "gpu" else np


def get_array_module(*arrays):
    """The module (numpy or cupy) of the given arrays, Chainer style."""
    cp = _cupy()
    if cp is not None:
        return cp.get_array_module(*arrays)
    return np


def to_host(array):
    """A NumPy array holding the values of `array` (no copy when already NumPy)."""
    if isinstance(array, np.ndarray):
        return array
    cp = _cupy()
    if cp is not None and isinstance(array, cp.ndarray):
        return array.get()
    return np.asarray(array)


def to_device(array, xp=None):
    """`array` in the module of the current mode (or of `xp`); lists and scalars too."""
    xp = xp or array_module()
    if xp is np:
        return to_host(array)
    return xp.asarray(array)


def set_random_seed(seed):
    """Seed every random source the engine uses (fillers, dropout, shuffles)."""
    _state["seed"] = int(seed)
    _state["rng"] = np.random.default_rng(int(seed))
    cp = _cupy()
    if cp is not None and _state["mode"] == "gpu":
        cp.random.seed(int(seed))


def rng():
    """The engine's NumPy random generator."""
    return _state["rng"]


def random_module(xp):
    """A random source for arrays of module `xp`, seeded with the engine."""
    if xp is np:
        return _state["rng"]
    return xp.random


# -- data-parallel identity (Caffe::solver_rank / solver_count) -------------------

_parallel = {"rank": 0, "count": 1}


def set_solver_rank(rank, count):
    """Which of `count` data-parallel workers this process is; data layers skip the others' records."""
    if not 0 <= rank < count:
        raise CaffeError(f"solver rank {rank} is outside 0..{count - 1}")
    _parallel["rank"], _parallel["count"] = int(rank), int(count)


def solver_rank():
    return _parallel["rank"]


def solver_count():
    return _parallel["count"]


def keeps_record(offset, phase_is_test):
    """Caffe's data-layer Skip rule: in TRAIN, worker r reads records r, r+count, r+2*count, ..."""
    return phase_is_test or offset % _parallel["count"] == _parallel["rank"]
