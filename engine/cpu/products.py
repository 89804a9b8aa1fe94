"""Matrix products on every core: OpenBLAS on one thread, each product split over a pool of threads.

OpenBLAS's own threads wait for each other by spinning: on a machine whose
cores are shared (another process, the data layer's thread, numba's kernel
threads) a two-thread product waits for a descheduled partner and burns
several times its CPU time (ResNet-18's training step on 2 loaded cores: 6
to 12 s of wall clock against 0.5 s split here). Here OpenBLAS runs on one
thread, and each large product is cut into one part per thread, along the
stack of matrices, the columns or the rows, each part a separate BLAS call
on a thread of this module's pool (NumPy releases the GIL inside them).
Every output element is still one BLAS dot product over the whole inner
dimension, so the numbers are those of one unsplit product; only products
with few outputs over a long inner dimension are summed over fixed chunks
of it (K_CHUNK), the same chunks at any thread count.

Threads: as engine.cpu's kernels (OMP_NUM_THREADS when set, else every
core). The split is on when engine.cpu's kernels are (ENGINE_CPU_KERNELS=0
turns both off), ENGINE_CPU_SPLIT is not 0 and the loaded BLAS is an
OpenBLAS whose thread count can be set at run time; else `matmul` is
NumPy's and BLAS keeps its own threads.
"""

import ctypes
import functools
import itertools
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

# Products below this many multiply-adds stay whole (a pool hand-off costs tens of microseconds).
MIN_SPLIT = 1 << 21
# ... and so do single products with fewer output elements than this: each part would re-read the whole
# long inner dimension of the other operand for a few outputs (a convolution's weight diff over a large
# batch: LeNet's conv1, 25 x 20 outputs over 36,864 terms, took 1.5 times as long split).
MIN_SPLIT_OUTPUT = 1 << 12

# ... except where those few outputs each sum a long inner dimension (a weight diff over a large batch:
# cifar10_quick's conv1, 75 x 32 outputs over 102,400 terms, ran on one core): then the inner dimension
# is cut into fixed chunks of K_CHUNK terms, whose products run on the pool and are added in chunk order.
# The chunks depend on the shape only, so the numbers do not depend on the thread count. Below
# MIN_CHUNKED_WORK multiply-adds the product stays whole (LeNet's conv1 weight diff, 18M: 1.1 ms whole,
# 1.6-1.8 ms in chunks on two threads; MobileNet v1's conv1, 87M: 5.4-5.9 ms whole, 3.0-3.3 in chunks).
K_CHUNK = 1 << 13
MIN_CHUNKED_WORK = 1 << 25

_STATE = {"threads": None, "pool": None, "pid": None}
_LOCK = threading.Lock()
_SETTERS = ("scipy_openblas_set_num_threads64_", "scipy_openblas_set_num_threads",
            "openblas_set_num_threads64_", "openblas_set_num_threads")


def _openblas_setter():
    """OpenBLAS's set_num_threads from the library this process loaded, or None."""
    try:
        with open("/proc/self/maps") as maps:
            paths = {line.split()[-1] for line in maps if "openblas" in line.lower() and "/" in line}
    except OSError:
        return None
    for path in sorted(paths):
        try:
            library = ctypes.CDLL(path)
        except OSError:
            continue
        for name in _SETTERS:
            setter = getattr(library, name, None)
            if setter is not None:
                setter.argtypes = [ctypes.c_int]
                setter.restype = None
                return setter
    return None


def _wanted_threads():
    wanted = os.environ.get("OMP_NUM_THREADS", "")
    if wanted.isdigit() and int(wanted) > 0:
        return int(wanted)
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def threads():
    """Threads the products are split over (1: not split); decided once, at the first product."""
    if _STATE["threads"] is None:
        with _LOCK:
            if _STATE["threads"] is None:
                count = _wanted_threads() if os.environ.get("ENGINE_CPU_SPLIT", "1") != "0" else 1
                if count > 1:
                    setter = _openblas_setter()
                    if setter is None:
                        count = 1
                    else:
                        setter(1)
                _STATE["threads"] = count
    return _STATE["threads"]


def _pool():
    """The pool of threads(), made in this process (a forked child does not inherit the threads)."""
    if _STATE["pool"] is None or _STATE["pid"] != os.getpid():
        with _LOCK:
            if _STATE["pool"] is None or _STATE["pid"] != os.getpid():
                # The calling thread takes a part itself: one thread fewer than parts.
                _STATE["pool"] = ThreadPoolExecutor(max(1, _STATE["threads"] - 1), thread_name_prefix="engine-blas")
                _STATE["pid"] = os.getpid()
    return _STATE["pool"]


def _parts(size, count):
    step = -(-size // count)
    return [slice(start, min(start + step, size)) for start in range(0, size, step)]


def matmul(a, b, out=None):
    """np.matmul(a, b, out=out), split over the pool when both are NumPy float arrays and it pays."""
    from . import _STATE as KERNELS

    if not (KERNELS["enabled"] and type(a) is np.ndarray and type(b) is np.ndarray and a.ndim >= 2
            and b.ndim >= 2 and a.dtype == b.dtype and a.dtype in (np.float32, np.float64)):
        return np.matmul(a, b) if out is None else np.matmul(a, b, out=out)
    (m, k), n = a.shape[-2:], b.shape[-1]
    stack = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    count = threads()
    work = m * n * k * int(np.prod(stack, dtype=np.int64))
    if work >= MIN_CHUNKED_WORK and len(stack) <= 1 and m * n < MIN_SPLIT_OUTPUT and k >= 2 * K_CHUNK:
        return _matmul_in_chunks(a, b, stack + (m, n), out)
    if count < 2 or work < MIN_SPLIT or len(stack) > 1 or (
            not (stack and stack[0] >= count) and m * n < MIN_SPLIT_OUTPUT):
        return np.matmul(a, b) if out is None else np.matmul(a, b, out=out)
    if out is None:
        out = np.empty(stack + (m, n), dtype=a.dtype)
    if stack and stack[0] >= count:  # whole matrices of the stack per thread
        a, b = np.broadcast_to(a, stack + (m, k)), np.broadcast_to(b, stack + (k, n))
        tasks = [functools.partial(np.matmul, a[part], b[part], out=out[part]) for part in _parts(stack[0], count)]
    elif n >= m:  # column blocks
        tasks = [functools.partial(np.matmul, a, b[..., part], out=out[..., part]) for part in _parts(n, count)]
    else:  # row blocks
        tasks = [functools.partial(np.matmul, a[..., part, :], b, out=out[..., part, :]) for part in _parts(m, count)]
    _run(tasks)
    return out


def _matmul_in_chunks(a, b, shape, out):
    """a @ b as the sum, in order, of the products over consecutive K_CHUNK-term chunks of the inner
    dimension (the last chunk takes the remainder), each chunk's product a task on the pool."""
    k = a.shape[-1]
    starts = list(range(0, k - K_CHUNK // 2, K_CHUNK))  # a remainder under half a chunk joins the last one
    bounds = [slice(start, end) for start, end in zip(starts, starts[1:] + [k])]
    partial = np.empty((len(bounds),) + shape, dtype=a.dtype)

    def chunks(part):
        for index in range(part.start, part.stop):
            np.matmul(a[..., bounds[index]], b[..., bounds[index], :], out=partial[index])

    count = threads()
    if count < 2:
        chunks(slice(0, len(bounds)))
    else:
        _run([functools.partial(chunks, part) for part in _parts(len(bounds), count)])
    if out is None:
        out = np.empty(shape, dtype=a.dtype)
    out[...] = partial[0]
    for index in range(1, len(bounds)):
        out += partial[index]
    return out


def matmul_indexed(a, b, index):
    """The stack out[k] = a[k] @ b[index[k]]: np.matmul(a, b[index]) without copying b into a new order.

    For any array module (CuPy's takes the copy); on NumPy float arrays the
    stack is split over the pool as matmul splits it.
    """
    from . import _STATE as KERNELS

    if type(a) is not np.ndarray:
        from ..backend import get_array_module

        xp = get_array_module(a)
        return xp.matmul(a, b[xp.asarray(index)])
    out = np.empty((a.shape[0], a.shape[1], b.shape[2]), dtype=np.result_type(a, b))

    def part(ks):
        for k in range(ks.start, ks.stop):
            np.matmul(a[k], b[index[k]], out=out[k])

    count = threads() if KERNELS["enabled"] else 1
    work = a.shape[0] * a.shape[1] * a.shape[2] * b.shape[2]
    if count < 2 or work < MIN_SPLIT or a.shape[0] < count:
        part(slice(0, a.shape[0]))
    else:
        _run([functools.partial(part, ks) for ks in _parts(a.shape[0], count)])
    return out


def _run(tasks):
    """Every task but the last on the pool, the last on the calling thread; returns when all are done."""
    jobs = [_pool().submit(task) for task in tasks[:-1]]
    try:
        tasks[-1]()
    finally:
        for job in jobs:
            job.result()


def in_parts(size, function, minimum=MIN_SPLIT):
    """function(part) for consecutive slices `part` covering range(size), one per thread.

    One call with the whole range when the split is off, or `minimum` (the work, in multiply-adds)
    is under MIN_SPLIT.
    """
    from . import _STATE as KERNELS

    count = threads() if KERNELS["enabled"] else 1
    if count < 2 or minimum < MIN_SPLIT or size < 2:
        function(slice(0, size))
        return
    _run([functools.partial(function, part) for part in _parts(size, count)])


def in_turns(count, worker, minimum=MIN_SPLIT):
    """worker(indices) once on each thread (as in_parts decides how many), the threads sharing one iterator
    over range(count): each takes the next index when done with the last, so a thread that finishes early,
    or whose core was busy elsewhere, takes more of them. (With one thread: one call over all of them.)"""
    from . import _STATE as KERNELS

    count_threads = min(threads() if KERNELS["enabled"] else 1, count)
    if count_threads < 2 or minimum < MIN_SPLIT:
        worker(iter(range(count)))
        return
    counter = itertools.count()  # its next() holds the GIL: no index is taken twice

    def indices():
        index = next(counter)
        while index < count:
            yield index
            index = next(counter)

    _run([lambda: worker(indices())] * count_threads)


def for_module(xp):
    """This module's matmul for NumPy arrays, the array module's own for others (CuPy)."""
    return matmul if xp is np else xp.matmul
