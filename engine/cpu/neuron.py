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
    leaky = slope != 0
    for chunk in prange((size + CHUNK - 1) // CHUNK):
        start = chunk * CHUNK
        stop = min(size, start + CHUNK)
        # Views from index 0: no wraparound checks, so the loops vectorize.
        xs, ys = x[start:stop], y[start:stop]
        # Selects, not branches (signs arrive at random); NaN stays NaN as in np.maximum.
        if leaky:
            for k in range(stop - start):
                v = xs[k]
                ys[k] = v if v > zero else v * s
        else:
            for k in range(stop - start):
                v = xs[k]
                ys[k] = v if (v > zero or v != v) else zero


@njit(**OPTIONS)
def relu_backward(x, dy, slope, dx):
    size = x.size
    one = x.dtype.type(1)
    s = x.dtype.type(slope)
    for chunk in prange((size + CHUNK - 1) // CHUNK):
        start = chunk * CHUNK
        stop = min(size, start + CHUNK)
        xs, dys, dxs = x[start:stop], dy[start:stop], dx[start:stop]
        for k in range(stop - start):
            dxs[k] = dys[k] * (one if xs[k] > 0 else s)
