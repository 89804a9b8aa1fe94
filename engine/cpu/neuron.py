"""ReLU forward and backward over flat arrays, in chunks of contiguous elements per thread.

The same float operations per element as the NumPy path (ReLULayer):
forward max(x, 0) or, with a negative slope, x * slope where x <= 0;
backward dy * gate with gate 1 where x > 0, else the slope.
"""

from numba import njit, prange

from . import OPTIONS

CHUNK = 1 << 14


@njit(**OPTIONS)
def relu_forward(x, slope, y):
    size = x.size
    zero = x.dtype.type(0)
    s = x.dtype.type(slope)
    for chunk in prange((size + CHUNK - 1) // CHUNK):
        for k in range(chunk * CHUNK, min(size, (chunk + 1) * CHUNK)):
            v = x[k]
            if v > zero:
                y[k] = v
            elif slope != 0:
                y[k] = v * s
            elif v != v:
                y[k] = v
            else:
                y[k] = zero


@njit(**OPTIONS)
def relu_backward(x, dy, slope, dx):
    size = x.size
    one = x.dtype.type(1)
    s = x.dtype.type(slope)
    for chunk in prange((size + CHUNK - 1) // CHUNK):
        for k in range(chunk * CHUNK, min(size, (chunk + 1) * CHUNK)):
            dx[k] = dy[k] * (one if x[k] > 0 else s)
