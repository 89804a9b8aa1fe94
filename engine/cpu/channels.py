"""Per-channel reductions and maps over (outer, channels, inner) arrays: BatchNorm and Scale.

Reductions give each thread whole channels and accumulate in float64 (the
NumPy path sums pairwise in the array's precision: both stay within a few
ulp of the exact sum); maps give each thread (outer, channel) planes and
use the NumPy path's float operations, so they match it bit for bit for the
same statistics.
"""

import numpy as np
from numba import njit, prange

from . import OPTIONS


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
def _centered_row(a, m):
    """Sum of (a - m)^2 over a 1-D row (the difference in a's precision), float64, eight partial sums."""
    size = a.shape[0]
    s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = 0.0
    stop = size - size % 8
    for k in range(0, stop, 8):
        d0, d1, d2, d3 = np.float64(a[k] - m), np.float64(a[k + 1] - m), np.float64(a[k + 2] - m), \
            np.float64(a[k + 3] - m)
        d4, d5, d6, d7 = np.float64(a[k + 4] - m), np.float64(a[k + 5] - m), np.float64(a[k + 6] - m), \
            np.float64(a[k + 7] - m)
        s0 += d0 * d0
        s1 += d1 * d1
        s2 += d2 * d2
        s3 += d3 * d3
        s4 += d4 * d4
        s5 += d5 * d5
        s6 += d6 * d6
        s7 += d7 * d7
    total = ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7))
    for k in range(stop, size):
        d = np.float64(a[k] - m)
        total += d * d
    return total


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
def centered_squares(x, mean):
    """Per channel of x (N, C, S): sum of (x - mean)^2, the difference in x's precision; float64."""
    num, channels, inner = x.shape
    total = np.zeros(channels)
    for c in prange(channels):
        s = 0.0
        for n in range(num):
            s += _centered_row(x[n, c], mean[c])
        total[c] = s
    return total


@njit(**OPTIONS)
def normalize(x, mean, std, y, saved, save):
    """y = (x - mean) / std per channel; also into `saved` when `save`. x may be y."""
    num, channels, inner = x.shape
    for task in prange(num * channels):
        n = task // channels
        c = task % channels
        m, s = mean[c], std[c]
        for k in range(inner):
            v = (x[n, c, k] - m) / s
            y[n, c, k] = v
            if save:
                saved[n, c, k] = v


@njit(**OPTIONS)
def batch_norm_backward(dy, y, mean_dy, mean_dy_y, std, dx):
    """dx = (dy - mean_dy - mean_dy_y * y) / std per channel; all arrays (N, C, S)."""
    num, channels, inner = dy.shape
    for task in prange(num * channels):
        n = task // channels
        c = task % channels
        a, b, s = mean_dy[c], mean_dy_y[c], std[c]
        for k in range(inner):
            dx[n, c, k] = (dy[n, c, k] - a - b * y[n, c, k]) / s


@njit(**OPTIONS)
def scale(x, factor, bias, with_bias, y):
    """y = x * factor (+ bias) per channel of (outer, C, inner). x may be y."""
    outer, channels, inner = x.shape
    for task in prange(outer * channels):
        n = task // channels
        c = task % channels
        f = factor[c]
        if with_bias:
            b = bias[c]
            for k in range(inner):
                y[n, c, k] = x[n, c, k] * f + b
        else:
            for k in range(inner):
                y[n, c, k] = x[n, c, k] * f


@njit(**OPTIONS)
def copy(source, target):
    """target[...] = source over flat arrays, in chunks per thread."""
    size = source.size
    chunk = 1 << 15
    for index in prange((size + chunk - 1) // chunk):
        start = index * chunk
        stop = min(size, start + chunk)
        # Views from index 0: no wraparound checks, so the loop vectorizes.
        s, t = source[start:stop], target[start:stop]
        for k in range(stop - start):
            t[k] = s[k]
