"""CPU-only code: multi-threaded kernels compiled with Numba, the counterpart of engine/cuda/.

NumPy runs each array operation on one core (only BLAS uses them all), so a
layer's elementwise passes (im2col/col2im, pooling, LRN, BatchNorm and Scale,
ReLU, the solver's update) would leave the other cores idle. Where speed
needs it, a layer calls into this package when its arrays are NumPy arrays of
float32 or float64, and the tests (tests/engine/cpu/) compare each kernel
with the NumPy path. Kernels follow Caffe's arithmetic as the NumPy path
does: same operations per element, in the same order wherever the result
must be bit for bit the same (ReLU, MAX pooling, the SGD update).

Kernels are compiled once per dtype, in a background process the first time
(engine/cpu/warmup.py; the NumPy path serves until it is done, so a first run
never waits for the compiler), and cached on disk (`cache=True`, in
__pycache__), so a later process loads them all in about a second.
ENGINE_CPU_COMPILE=wait makes the first use wait for that build instead (the
tests and benchmarks set it). Numba is imported only when a kernel is first
asked for.

Matrix products are BLAS's, split over a pool of threads by products.py
(OpenBLAS's own threads spin on shared cores).

Threads: OMP_NUM_THREADS when set (the benchmarks and tests set it), else
every core. ENGINE_CPU_KERNELS=0 turns the kernels and the split off (the
NumPy path runs).
"""

import hashlib
import importlib
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

_STATE = {"numba": None, "enabled": os.environ.get("ENGINE_CPU_KERNELS", "1") != "0"}
_MODULES = {}
_READY = {}  # np.dtype -> whether the compiled kernels are in use (looked up per layer call)
_BUILDS = {}  # dtype name -> the background compile
_MARKERS = {}  # dtype name -> its marker file
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
    """Whether the kernels serve these arrays: NumPy float32/float64, kernels on and compiled."""
    if not _STATE["enabled"] or not arrays:
        return False
    for array in arrays:
        if type(array) is not np.ndarray or array.dtype not in _DTYPES:
            return False
    return ready(arrays[0].dtype)


def ready(dtype, wait=None):
    """Whether the kernels for `dtype` are compiled; starts compiling them if not.

    The first time a dtype is asked for without a compiled cache, a background
    process (engine/cpu/warmup.py, at low priority) compiles every kernel for it
    into numba's disk cache, and this returns False (the layers take the NumPy
    path) until that process is done: a user's first iterations never wait for
    the compiler, and the kernels load from the cache (about a second) once it
    is there. `wait` (default: ENGINE_CPU_COMPILE=wait in the environment, as
    the tests and benchmarks set it) blocks until the build is done instead.
    """
    dtype = np.dtype(dtype)
    state = _READY.get(dtype)
    if state is not None:
        return state
    name = dtype.name
    if not _numba():
        _READY[dtype] = False
        return False
    if wait is None:
        wait = os.environ.get("ENGINE_CPU_COMPILE", "background") == "wait"
    marker = _marker(name)
    if marker.exists():
        _READY[dtype] = True
        return True
    build = _BUILDS.get(name)
    if build is None:
        build = _BUILDS[name] = _start_build(name, marker)
    if wait:
        build.wait()
    elif build.poll() is None:
        return False
    if build.returncode != 0 or not marker.exists():
        try:
            errors = marker.with_suffix(".log").read_text(errors="replace")
        except OSError:
            errors = ""
        logging.getLogger("engine").warning("CPU kernels for %s failed to compile (exit %s); NumPy runs instead:\n%s",
                                            name, build.returncode, errors[-2000:])
        _READY[dtype] = False
        return False
    _READY[dtype] = True
    return True


def _start_build(name, marker):
    """The background compile of dtype `name`'s kernels; its output goes to MARKER.log."""
    root = Path(__file__).resolve().parents[2]
    with open(marker.with_suffix(".log"), "wb") as log:
        # A session of its own: Ctrl-C on the training leaves the compile to finish for next time.
        return subprocess.Popen([sys.executable, "-m", f"{__name__}.warmup", name, str(marker)], cwd=root,
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)


def _marker(name):
    """File that says: every kernel for dtype `name` of these sources is in numba's cache.

    Named after what numba's cache depends on: numba's and Python's versions,
    NUMBA_CACHE_DIR and each source's size and modification time (numba's own
    staleness test), so that an edited or touched source compiles again.
    """
    marker = _MARKERS.get(name)
    if marker is None:
        digest = hashlib.sha1(f"{_numba().__version__} {sys.version} {os.environ.get('NUMBA_CACHE_DIR', '')}"
                              .encode())
        for source in sorted(Path(__file__).parent.glob("*.py")):
            stat = source.stat()
            digest.update(f"{source.name} {stat.st_size} {stat.st_mtime_ns}".encode())
        marker = _MARKERS[name] = _cache_dir() / f"engine-cpu-{name}-{digest.hexdigest()[:16]}.ready"
    return marker


def _cache_dir():
    """engine/cpu/__pycache__ (numba's cache beside the sources) or, read-only there, a user directory."""
    local = Path(__file__).parent / "__pycache__"
    try:
        local.mkdir(exist_ok=True)
        if os.access(local, os.W_OK):
            return local
    except OSError:
        pass
    fallback = Path(os.environ.get("NUMBA_CACHE_DIR") or Path.home() / ".cache" / "caffe-engine")
    fallback.mkdir(parents=True, exist_ok=True)
    return fallback


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
