"""LRN across channels, forward and backward, threads over (image, block of positions).

Each task holds a block of spatial positions for all channels and sums
windows along the channels with the NumPy path's operations in its order
(the centre, then the neighbours at distance 1, 2, ... right before left;
engine/layers/lrn.py), so the results are the same bit for bit; x ** -0.75
goes through two square roots as there.
"""

import numpy as np
from numba import njit, prange

from . import OPTIONS

BLOCK = 256


@njit(inline="always")
def _window(values, c, half, channels, j):
    total = values[c, j]
    for shift in range(1, half + 1):
        if c + shift < channels:
            total += values[c + shift, j]
        if c - shift >= 0:
            total += values[c - shift, j]
    return total


@njit(inline="always")
def _negative_power(base, beta, one, negative_beta):
    if beta == 0.75:
        root = np.sqrt(base)
        root = root * np.sqrt(root)
        return one / root
    if beta == 0.5:
        return one / np.sqrt(base)
    if beta == 1.0:
        return one / base
    return base ** negative_beta


@njit(**OPTIONS)
def forward(x, size, alpha_over_size, beta, k, y, scale):
    """y = x * scale ** -beta with scale = k + alpha / size * window sum of x^2; x, y, scale (N, C, S)."""
    num, channels, spatial = x.shape
    half = (size - 1) // 2
    blocks = (spatial + BLOCK - 1) // BLOCK
    a = x.dtype.type(alpha_over_size)
    kk = x.dtype.type(k)
    one, negative_beta = x.dtype.type(1), x.dtype.type(-beta)
    for task in prange(num * blocks):
        n = task // blocks
        start = (task % blocks) * BLOCK
        stop = min(start + BLOCK, spatial)
        # Views from index 0: numba's wraparound check on a computed index stops vectorization.
        xs, ys, scales = x[n, :, start:stop], y[n, :, start:stop], scale[n, :, start:stop]
        squares = np.empty((channels, stop - start), dtype=x.dtype)
        for c in range(channels):
            for j in range(stop - start):
                v = xs[c, j]
                squares[c, j] = v * v
        for c in range(channels):
            for j in range(stop - start):
                s = _window(squares, c, half, channels, j) * a + kk
                scales[c, j] = s
                ys[c, j] = xs[c, j] * _negative_power(s, beta, one, negative_beta)


@njit(**OPTIONS)
def backward(x, y, scale, dy, size, beta, coefficient, dx):
    """dx = dy * scale ** -beta - coefficient * x * window sum of (dy * y / scale); all (N, C, S)."""
    num, channels, spatial = x.shape
    half = (size - 1) // 2
    blocks = (spatial + BLOCK - 1) // BLOCK
    coef = x.dtype.type(coefficient)
    one, negative_beta = x.dtype.type(1), x.dtype.type(-beta)
    for task in prange(num * blocks):
        n = task // blocks
        start = (task % blocks) * BLOCK
        stop = min(start + BLOCK, spatial)
        xs, ys, scales = x[n, :, start:stop], y[n, :, start:stop], scale[n, :, start:stop]
        dys, dxs = dy[n, :, start:stop], dx[n, :, start:stop]
        inner = np.empty((channels, stop - start), dtype=x.dtype)
        for c in range(channels):
            for j in range(stop - start):
                inner[c, j] = dys[c, j] * ys[c, j] / scales[c, j]
        for c in range(channels):
            for j in range(stop - start):
                ratio = _window(inner, c, half, channels, j) * xs[c, j]
                ratio = ratio * coef
                dxs[c, j] = dys[c, j] * _negative_power(scales[c, j], beta, one, negative_beta) - ratio
