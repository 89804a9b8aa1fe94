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


LANES = 8


@njit(inline="always")
def _row_sums(a, b, dot):
    """(sum of a, sum of a * b) over 1-D rows, in float64, eight interleaved partial sums."""
    size = a.shape[0]
    s = np.zeros(LANES)
    p = np.zeros(LANES)
    stop = size - size % LANES
    for k in range(0, stop, LANES):
        for lane in range(LANES):
            v = np.float64(a[k + lane])
            s[lane] += v
            if dot:
                p[lane] += v * np.float64(b[k + lane])
    total = 0.0
    products = 0.0
    for lane in range(LANES):
        total += s[lane]
        products += p[lane]
    for k in range(stop, size):
        total += a[k]
        if dot:
            products += np.float64(a[k]) * np.float64(b[k])
    return total, products


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
            row_s, row_p = _row_sums(a[n, c], b[n, c], dot)
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
        m = mean[c]
        s = 0.0
        for n in range(num):
            for k in range(inner):
                d = x[n, c, k] - m
                s += d * d
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
        for k in range(index * chunk, min(size, (index + 1) * chunk)):
            target[k] = source[k]
