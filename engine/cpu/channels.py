"""Per-channel reductions and maps over (outer, channels, inner) arrays: BatchNorm and Scale.

Work goes by blocks of consecutive channel planes (BLOCK_ELEMENTS). Reductions
give each thread whole blocks of channels and accumulate in float64,
vectorized (the NumPy path sums pairwise in the array's precision: both stay
within a few ulp of the exact sum; BatchNorm's statistics take one pass,
sums of x and x^2); maps give each thread a block of one image (outer
index) and use the NumPy path's float operations, so they match it bit for
bit for the same statistics. In place (BatchNorm and Scale with top =
bottom), a map reads and writes each block through one view
(engine/cpu/aliasing.py).
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

# Elements a task takes: whole planes of consecutive channels (of one image, in the maps) up to about this
# many. A task per plane cost two array views and an overlap check per plane, which on small planes took
# longer than the arithmetic (one thread, us, by plane against by block): `normalize` on 8 x 512 x 4 x 4
# (ResNet-18's res5) 56-101 against 13-14, on 8 x 256 x 7 x 7 37-39 against 22; `scale_backward` 68
# against 33 and 56 against 43. Planes of 196 elements and more ran as fast either way.
BLOCK_ELEMENTS = 4096


@njit(inline="always")
def _block(channels, inner):
    """Channels per task: planes of `inner` elements up to BLOCK_ELEMENTS, at least one."""
    return max(1, min(channels, BLOCK_ELEMENTS // max(inner, 1)))


@njit(inline="always")
def _channels_of(task, block, channels):
    """(first, end) channel of a reduction's task: its block of channels, over every image."""
    lo = task * block
    return lo, min(lo + block, channels)


@njit(inline="always")
def _planes_of(task, block, channels):
    """(image, first, end channel) of a map's task: one image's block of channels."""
    blocks = -(-channels // block)
    lo = task % blocks * block
    return task // blocks, lo, min(lo + block, channels)


@njit(inline="always")
def _sums_plane(a, b, dot, total, products):
    for c in range(a.shape[0]):
        s = 0.0
        p = 0.0
        if dot:
            for k in range(a.shape[1]):
                value = a[c, k]
                s += np.float64(value)
                p += np.float64(value * b[c, k])
        else:
            for k in range(a.shape[1]):
                s += np.float64(a[c, k])
        total[c] += s
        products[c] += p


@light
@njit(**REDUCTION_OPTIONS)
def sums(a, b, dot):
    """Per channel of a (N, C, S): sum of a, and sum of a * b when `dot` (else zeros); float64.

    The products are rounded to the arrays' precision first, as the NumPy path's are.
    """
    num, channels, inner = a.shape
    total = np.zeros(channels)
    products = np.zeros(channels)
    block = _block(channels, inner)
    for task in prange(-(-channels // block)):
        lo, hi = _channels_of(task, block, channels)
        for n in range(num):
            _sums_plane(a[n, lo:hi], b[n, lo:hi], dot, total[lo:hi], products[lo:hi])
    return total, products


@njit(inline="always")
def _moments_plane(x, s, q):
    for c in range(x.shape[0]):
        a = 0.0
        b = 0.0
        for k in range(x.shape[1]):
            v = np.float64(x[c, k])
            a += v
            b += v * v
        s[c] += a
        q[c] += b


@light
@njit(**REDUCTION_OPTIONS)
def moments(x):
    """Per channel of x (N, C, S): the mean and the (biased) variance, from float64 sums of x and x^2 in
    one pass over x (squares of float32 values are exact in float64, so E[x^2] - E[x]^2 cancels only
    float64 rounding)."""
    num, channels, inner = x.shape
    s = np.zeros(channels)
    q = np.zeros(channels)
    block = _block(channels, inner)
    for task in prange(-(-channels // block)):
        lo, hi = _channels_of(task, block, channels)
        for n in range(num):
            _moments_plane(x[n, lo:hi], s[lo:hi], q[lo:hi])
    count = num * inner
    mean = s / count
    variance = np.maximum(q / count - mean * mean, 0.0)
    return mean, variance


@njit(inline="always")
def _scale_backward_plane(dys, xs, factor, dot, dxs, total, products):
    for c in range(dys.shape[0]):
        f = factor[c]
        s = 0.0
        p = 0.0
        if dot:
            for k in range(dys.shape[1]):
                g = dys[c, k]
                s += np.float64(g)
                p += np.float64(g * xs[c, k])
                dxs[c, k] = g * f
        else:
            for k in range(dys.shape[1]):
                g = dys[c, k]
                s += np.float64(g)
                dxs[c, k] = g * f
        total[c] += s
        products[c] += p


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
    block = _block(channels, inner)
    for task in prange(-(-channels // block)):
        lo, hi = _channels_of(task, block, channels)
        for n in range(num):
            dys, dxs = dy[n, lo:hi], dx[n, lo:hi]
            if _same_memory(dys, dxs):
                _scale_backward_plane(dxs, x[n, lo:hi], factor[lo:hi], dot, dxs, total[lo:hi], products[lo:hi])
            else:
                _scale_backward_plane(dys, x[n, lo:hi], factor[lo:hi], dot, dxs, total[lo:hi], products[lo:hi])
    return total, products


@njit(inline="always")
def _normalize_plane(xs, mean, std, ys, saved, save):
    for c in range(xs.shape[0]):
        m = mean[c]
        s = std[c]
        for k in range(xs.shape[1]):
            v = (xs[c, k] - m) / s
            ys[c, k] = v
            if save:
                saved[c, k] = v


@light
@njit(**OPTIONS)
def normalize(x, mean, std, y, saved, save):
    """y = (x - mean) / std per channel; also into `saved` when `save`. x may be y."""
    num, channels, inner = x.shape
    block = _block(channels, inner)
    for task in prange(num * -(-channels // block)):
        n, lo, hi = _planes_of(task, block, channels)
        xs, ys = x[n, lo:hi], y[n, lo:hi]
        if _same_memory(xs, ys):
            _normalize_plane(ys, mean[lo:hi], std[lo:hi], ys, saved[n, lo:hi], save)
        else:
            _normalize_plane(xs, mean[lo:hi], std[lo:hi], ys, saved[n, lo:hi], save)


@njit(inline="always")
def _batch_norm_backward_plane(dys, ys, mean_dy, mean_dy_y, std, dxs):
    for c in range(dys.shape[0]):
        a = mean_dy[c]
        b = mean_dy_y[c]
        s = std[c]
        for k in range(dys.shape[1]):
            dxs[c, k] = (dys[c, k] - a - b * ys[c, k]) / s


@light
@njit(**OPTIONS)
def batch_norm_backward(dy, y, mean_dy, mean_dy_y, std, dx):
    """dx = (dy - mean_dy - mean_dy_y * y) / std per channel; all arrays (N, C, S). dy may be dx."""
    num, channels, inner = dy.shape
    block = _block(channels, inner)
    for task in prange(num * -(-channels // block)):
        n, lo, hi = _planes_of(task, block, channels)
        dys, dxs = dy[n, lo:hi], dx[n, lo:hi]
        if _same_memory(dys, dxs):
            _batch_norm_backward_plane(dxs, y[n, lo:hi], mean_dy[lo:hi], mean_dy_y[lo:hi], std[lo:hi], dxs)
        else:
            _batch_norm_backward_plane(dys, y[n, lo:hi], mean_dy[lo:hi], mean_dy_y[lo:hi], std[lo:hi], dxs)


@njit(inline="always")
def _scale_plane(xs, factor, bias, with_bias, ys, saved, save):
    for c in range(xs.shape[0]):
        f = factor[c]
        if with_bias:
            b = bias[c]
            for k in range(xs.shape[1]):
                v = xs[c, k]
                if save:
                    saved[c, k] = v
                ys[c, k] = v * f + b
        else:
            for k in range(xs.shape[1]):
                v = xs[c, k]
                if save:
                    saved[c, k] = v
                ys[c, k] = v * f


@light
@njit(**OPTIONS)
def scale(x, factor, bias, with_bias, y, saved, save):
    """y = x * factor (+ bias) per channel of (outer, C, inner); x also into `saved` when `save` (an
    in-place layer keeps its input for the backward). x may be y."""
    outer, channels, inner = x.shape
    block = _block(channels, inner)
    for task in prange(outer * -(-channels // block)):
        n, lo, hi = _planes_of(task, block, channels)
        xs, ys = x[n, lo:hi], y[n, lo:hi]
        if _same_memory(xs, ys):
            _scale_plane(ys, factor[lo:hi], bias[lo:hi], with_bias, ys, saved[n, lo:hi], save)
        else:
            _scale_plane(xs, factor[lo:hi], bias[lo:hi], with_bias, ys, saved[n, lo:hi], save)
