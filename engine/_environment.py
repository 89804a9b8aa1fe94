"""Settings that must be in the environment before NumPy loads OpenBLAS; engine/__init__ imports this first.

OpenBLAS's idle threads spin for about 2^28 cycles after each product,
holding the cores that the CPU kernels (engine/cpu) run on next; a timeout
of 2^4 cycles lets them sleep at once. It applies where the engine is
imported before NumPy (the tools, the benchmarks); a value already set stays.
"""

import os

os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")
