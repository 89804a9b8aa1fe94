"""Softmax over the middle axis of (outer, classes, inner), threads over outer rows.

The NumPy path's operations per element: subtract the maximum, exp, divide
by the sum (here accumulated in float64, there pairwise in the array's
precision).
"""

import numpy as np
from numba import njit, prange

from . import OPTIONS


@njit(**OPTIONS)
def forward(x, y):
    outer, classes, inner = x.shape
    for n in prange(outer):
        for k in range(inner):
            best = x[n, 0, k]
            for c in range(1, classes):
                if x[n, c, k] > best:
                    best = x[n, c, k]
            total = 0.0
            for c in range(classes):
                e = np.exp(x[n, c, k] - best)
                y[n, c, k] = e
                total += e
            t = x.dtype.type(total)
            for c in range(classes):
                y[n, c, k] = y[n, c, k] / t
