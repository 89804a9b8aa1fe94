"""Process settings that must come first; engine/__init__ imports this before NumPy.

OpenBLAS's idle threads spin for about 2^28 cycles after each product,
holding the cores that the CPU kernels (engine/cpu) run on next; a timeout
of 2^4 cycles lets them sleep at once. It applies where the engine is
imported before NumPy (the tools, the benchmarks); a value already set stays.

glibc's malloc gives each block over its mmap threshold (128 KiB, raised as
blocks are freed, to at most 32 MiB) its own mapping and returns it on free,
and trims the heap's free top; a training step allocates and frees its
temporaries (im2col columns, Winograd tiles, kernel outputs) every
iteration, so each iteration touched fresh pages again: ResNet-18's step on
2 cores took 4,000 to 8,000 page faults and about 10% of its wall clock for
them. Blocks up to 32 MiB therefore come from the heap, which keeps its
free memory for the next iteration (the process's peak is unchanged: the
same blocks are live at once). Where the user set MALLOC_MMAP_THRESHOLD_ or
MALLOC_TRIM_THRESHOLD_, or the C library is not glibc, nothing changes.
"""

import ctypes
import ctypes.util
import os

os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD = 32 << 20  # glibc's largest on 64-bit systems
TRIM_THRESHOLD = 1 << 30


def _keep_freed_memory():
    """mallopt the thresholds above; False where not glibc or the user chose their own."""
    if any(name in os.environ for name in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl, macOS, Windows)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))


if os.environ.get("ENGINE_KEEP_FREED_MEMORY", "1") != "0":
    KEEPS_FREED_MEMORY = _keep_freed_memory()
else:
    KEEPS_FREED_MEMORY = False
