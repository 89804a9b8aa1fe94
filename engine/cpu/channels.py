"""Per-channel reductions and maps over (outer, channels, inner) arrays: BatchNorm and Scale.

Reductions give each thread whole channels and accumulate in float64 (the
NumPy path sums pairwise in the array's precision: both stay within a few
ulp of the exact sum; BatchNorm's statistics take one pass, sums of x and
x^2); maps give each thread (outer, channel) planes and
use the NumPy path's float operations, so they match it bit for bit for the
same statistics. In place (BatchNorm and Scale with top = bottom), a map reads
and writes its rows through one view (engine/cpu/aliasing.py).
"""

import numpy as np
from numba import njit, prange

from . import OPTIONS
from .aliasing import same_memory as _same_memory


@njit(inline="always")
def _sum_and_dot(a, b, dot):
    """(sum of a, sum of a * b when `dot`) over 1-D rows, in float64 with eight partial sums each.

    The products are rounded to the arrays' precision first, as the NumPy path's are.
    """
    size = a.shape[0]
    s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = 0.0
    p0 = p1 = p2 = p3 = p4 = p5 = p6 = p7 = 0.0
    stop = size - size % 8
    for k in range(0, stop, 8):
        v0, v1, v2, v3 = np.float64(a[k]), np.float64(a[k + 1]), np.float64(a[k + 2]), np.float64(a[k + 3])
        v4, v5, v6, v7 = np.float64(a[k + 4]), np.float64(a[k + 5]), np.float64(a[k + 6]), np.float64(a[k + 7])
        s0 += v0
        s1 += v1
        s2 += v2
        s3 += v3
        s4 += v4
        s5 += v5
        s6 += v6
        s7 += v7
        if dot:
            p0 += np.float64(a[k] * b[k])
            p1 += np.float64(a[k + 1] * b[k + 1])
            p2 += np.float64(a[k + 2] * b[k + 2])
            p3 += np.float64(a[k + 3] * b[k + 3])
            p4 += np.float64(a[k + 4] * b[k + 4])
            p5 += np.float64(a[k + 5] * b[k + 5])
            p6 += np.float64(a[k + 6] * b[k + 6])
            p7 += np.float64(a[k + 7] * b[k + 7])
    total = ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7))
    products = ((p0 + p1) + (p2 + p3)) + ((p4 + p5) + (p6 + p7))
    for k in range(stop, size):
        total += a[k]
        if dot:
            products += np.float64(a[k] * b[k])
    return total, products


@njit(inline="always")
def _sum_and_squares(a):
    """(sum of a, sum of a^2) over a 1-D row, in float64 (squares too), eight partial sums each."""
    size = a.shape[0]
    s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = 0.0
    q0 = q1 = q2 = q3 = q4 = q5 = q6 = q7 = 0.0
    stop = size - size % 8
    for k in range(0, stop, 8):
        v0, v1, v2, v3 = np.float64(a[k]), np.float64(a[k + 1]), np.float64(a[k + 2]), np.float64(a[k + 3])
        v4, v5, v6, v7 = np.float64(a[k + 4]), np.float64(a[k + 5]), np.float64(a[k + 6]), np.float64(a[k + 7])
        s0 += v0
        s1 += v1
        s2 += v2
        s3 += v3
        s4 += v4
        s5 += v5
        s6 += v6
        s7 += v7
        q0 += v0 * v0
        q1 += v1 * v1
        q2 += v2 * v2
        q3 += v3 * v3
        q4 += v4 * v4
        q5 += v5 * v5
        q6 += v6 * v6
        q7 += v7 * v7
    total = ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7))
    squares = ((q0 + q1) + (q2 + q3)) + ((q4 + q5) + (q6 + q7))
    for k in range(stop, size):
        v = np.float64(a[k])
        total += v
        squares += v * v
    return total, squares


@njit(**OPTIONS)
def sums(a, b, dot):
    """Per channel of a (N, C, S): sum of a, and sum of a * b when `dot` (else zeros); float64."""
    num, channels, inner = a.shape
    total = np.zeros(channels)
    products = np.zeros(channels)
    for c in prange(channels):
        s = 0.0
        p = 0.0
        for n in range(num):
            if dot:
                row_s, row_p = _sum_and_dot(a[n, c], b[n, c], True)
            else:
                row_s, row_p = _sum_and_dot(a[n, c], b[n, c], False)
            s += row_s
            p += row_p
        total[c] = s
        products[c] = p
    return total, products


@njit(**OPTIONS)
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
            row_s, row_q = _sum_and_squares(x[n, c])
            s += row_s
            q += row_q
        m = s / count
        mean[c] = m
        variance[c] = max(q / count - m * m, 0.0)
    return mean, variance


@njit(inline="always")
def _normalize_row(xs, m, s, ys, saved, save):
    for k in range(xs.shape[0]):
        v = (xs[k] - m) / s
        ys[k] = v
        if save:
            saved[k] = v


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
