"""ReLU forward and backward over flat arrays, in chunks of contiguous elements per thread.

The same float operations per element as the NumPy path (ReLULayer):
forward max(x, 0) or, with a negative slope, x * slope where x <= 0;
backward dy * gate with gate 1 where x > 0, else the slope.

In place (Caffe's usual ReLU: top and bottom one blob), each loop reads and
writes through one view (engine/cpu/aliasing.py).
"""

from numba import njit, prange

from . import OPTIONS
from .aliasing import same_memory as _same_memory
from .threads import light

CHUNK = 1 << 14


@njit(inline="always")
def _relu_rows(xs, ys, zero, s, leaky):
    # Selects, not branches (signs arrive at random); NaN stays NaN as in np.maximum.
    if leaky:
        for k in range(xs.shape[0]):
            v = xs[k]
            ys[k] = v if v > zero else v * s
    else:
        for k in range(xs.shape[0]):
            v = xs[k]
            ys[k] = v if (v > zero or v != v) else zero


@light
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
        if _same_memory(xs, ys):
            _relu_rows(ys, ys, zero, s, leaky)
        else:
            _relu_rows(xs, ys, zero, s, leaky)


@njit(inline="always")
def _relu_gate_rows(xs, dys, dxs, one, s):
    for k in range(xs.shape[0]):
        dxs[k] = dys[k] * (one if xs[k] > 0 else s)


@light
@njit(**OPTIONS)
def relu_backward(x, dy, slope, dx):
    size = x.size
    one = x.dtype.type(1)
    s = x.dtype.type(slope)
    for chunk in prange((size + CHUNK - 1) // CHUNK):
        start = chunk * CHUNK
        stop = min(size, start + CHUNK)
        xs, dys, dxs = x[start:stop], dy[start:stop], dx[start:stop]
        if _same_memory(dys, dxs):
            _relu_gate_rows(xs, dxs, dxs, one, s)
        else:
            _relu_gate_rows(xs, dys, dxs, one, s)
