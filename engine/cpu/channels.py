"""Per-channel reductions and maps over (outer, channels, inner) arrays: BatchNorm and Scale.

Reductions give each thread whole channels and accumulate in float64,
vectorized (the NumPy path sums pairwise in the array's precision: both stay
within a few ulp of the exact sum; BatchNorm's statistics take one pass,
sums of x and x^2); maps give each thread (outer, channel) planes and
use the NumPy path's float operations, so they match it bit for bit for the
same statistics. In place (BatchNorm and Scale with top = bottom), a map reads
and writes its rows through one view (engine/cpu/aliasing.py).
"""

import numpy as np
from numba import njit, prange

from . import OPTIONS
from .aliasing import same_memory as _same_memory
from .threads import light


# The reductions may reassociate their float64 sums, which lets LLVM vectorize them (2.4 times faster
# than eight hand-kept partial sums); the order is fixed by the compiled code, so a sum is the same on
# every run, and float64 partial sums of float32 terms differ from the exact sum by float64 rounding only.
REDUCTION_OPTIONS = dict(OPTIONS, fastmath={"reassoc"})


@light
@njit(**REDUCTION_OPTIONS)
def sums(a, b, dot):
    """Per channel of a (N, C, S): sum of a, and sum of a * b when `dot` (else zeros); float64.

    The products are rounded to the arrays' precision first, as the NumPy path's are.
    """
    num, channels, inner = a.shape
    total = np.zeros(channels)
    products = np.zeros(channels)
    for c in prange(channels):
        s = 0.0
        p = 0.0
        for n in range(num):
            row = a[n, c]
            if dot:
                other = b[n, c]
                for k in range(inner):
                    value = row[k]
                    s += np.float64(value)
                    p += np.float64(value * other[k])
            else:
                for k in range(inner):
                    s += np.float64(row[k])
        total[c] = s
        products[c] = p
    return total, products


@light
@njit(**REDUCTION_OPTIONS)
def moments(x):
    """Per channel of x (N, C, S): the mean and the (biased) variance, from float64 sums of x and x^2 in
    one pass over x (squares of float32 values are exact in float64, so E[x^2] - E[x]^2 cancels only
    float64 rounding)."""
    num, channels, inner = x.shape
    mean = np.zeros(channels)
    variance = np.zeros(channels)
    count = num * inner
    for c in prange(channels):
        s = 0.0
        q = 0.0
        for n in range(num):
            row = x[n, c]
            for k in range(inner):
                v = np.float64(row[k])
                s += v
                q += v * v
        m = s / count
        mean[c] = m
        variance[c] = max(q / count - m * m, 0.0)
    return mean, variance


@njit(inline="always")
def _scale_backward_row(dys, xs, f, dot, dxs):
    s = 0.0
    p = 0.0
    if dot:
        for k in range(dys.shape[0]):
            g = dys[k]
            s += np.float64(g)
            p += np.float64(g * xs[k])
            dxs[k] = g * f
    else:
        for k in range(dys.shape[0]):
            g = dys[k]
            s += np.float64(g)
            dxs[k] = g * f
    return s, p


@light
@njit(**REDUCTION_OPTIONS)
def scale_backward(dy, x, factor, dot, dx):
    """Scale's backward in one pass over dy (N, C, S): per channel the float64 sums of dy and, when `dot`, of
    dy * x (as `sums` gives them), and dx = dy * factor[c] (as `scale` gives it). dy may be dx (in place).
    The sums and the map as two kernels read the top diff twice: on MobileNet v1's 8x64x112x112 maps, Scale's
    backward took 5.6-6.3 ms on one thread so, 3.4-4.1 in one pass."""
    num, channels, inner = dy.shape
    total = np.zeros(channels)
    products = np.zeros(channels)
    for c in prange(channels):
        f = factor[c]
        s = 0.0
        p = 0.0
        for n in range(num):
            dys, dxs = dy[n, c], dx[n, c]
            if _same_memory(dys, dxs):
                rs, rp = _scale_backward_row(dxs, x[n, c], f, dot, dxs)
            else:
                rs, rp = _scale_backward_row(dys, x[n, c], f, dot, dxs)
            s += rs
            p += rp
        total[c] = s
        products[c] = p
    return total, products


@njit(inline="always")
def _normalize_row(xs, m, s, ys, saved, save):
    for k in range(xs.shape[0]):
        v = (xs[k] - m) / s
        ys[k] = v
        if save:
            saved[k] = v


@light
@njit(**OPTIONS)
def normalize(x, mean, std, y, saved, save):
    """y = (x - mean) / std per channel; also into `saved` when `save`. x may be y."""
    num, channels, inner = x.shape
    for task in prange(num * channels):
        n = task // channels
        c = task % channels
        xs, ys = x[n, c], y[n, c]
        if _same_memory(xs, ys):
            _normalize_row(ys, mean[c], std[c], ys, saved[n, c], save)
        else:
            _normalize_row(xs, mean[c], std[c], ys, saved[n, c], save)


@njit(inline="always")
def _batch_norm_backward_row(dys, ys, a, b, s, dxs):
    for k in range(dys.shape[0]):
        dxs[k] = (dys[k] - a - b * ys[k]) / s


@light
@njit(**OPTIONS)
def batch_norm_backward(dy, y, mean_dy, mean_dy_y, std, dx):
    """dx = (dy - mean_dy - mean_dy_y * y) / std per channel; all arrays (N, C, S). dy may be dx."""
    num, channels, inner = dy.shape
    for task in prange(num * channels):
        n = task // channels
        c = task % channels
        dys, dxs = dy[n, c], dx[n, c]
        if _same_memory(dys, dxs):
            _batch_norm_backward_row(dxs, y[n, c], mean_dy[c], mean_dy_y[c], std[c], dxs)
        else:
            _batch_norm_backward_row(dys, y[n, c], mean_dy[c], mean_dy_y[c], std[c], dxs)


@njit(inline="always")
def _scale_row(xs, f, b, with_bias, ys, saved, save):
    if with_bias:
        for k in range(xs.shape[0]):
            v = xs[k]
            if save:
                saved[k] = v
            ys[k] = v * f + b
    else:
        for k in range(xs.shape[0]):
            v = xs[k]
            if save:
                saved[k] = v
            ys[k] = v * f


@light
@njit(**OPTIONS)
def scale(x, factor, bias, with_bias, y, saved, save):
    """y = x * factor (+ bias) per channel of (outer, C, inner); x also into `saved` when `save` (an
    in-place layer keeps its input for the backward). x may be y."""
    outer, channels, inner = x.shape
    for task in prange(outer * channels):
        n = task // channels
        c = task % channels
        b = bias[c] if with_bias else factor[c]
        xs, ys = x[n, c], y[n, c]
        if _same_memory(xs, ys):
            _scale_row(ys, factor[c], b, with_bias, ys, saved[n, c], save)
        else:
            _scale_row(xs, factor[c], b, with_bias, ys, saved[n, c], save)
