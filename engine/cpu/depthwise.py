"""Depthwise convolution (one input channel per group), computed directly, threads over planes.

im2col + GEMM degenerates here: one tiny product per channel. Output
channel o reads input channel o // multiplier (multiplier = outputs per
input channel). Every pass walks the kernel offsets over whole rows; the
inner loops run over views from index 0 (a possibly negative index would
make numba check for wraparound and stop LLVM from vectorizing them).
"""

import numpy as np
from numba import njit, prange

from . import OPTIONS


@njit(inline="always")
def _valid_range(count, stride, offset, size):
    """Outputs o in [lo, hi) with 0 <= o * stride + offset < size."""
    lo = 0
    if offset < 0:
        lo = (-offset + stride - 1) // stride
    hi = 0
    if size - offset > 0:
        hi = (size - offset + stride - 1) // stride
    return lo, max(lo, min(hi, count))


@njit(**OPTIONS)
def forward(x, weight, bias, with_bias, sh, sw, ph, pw, dh, dw, y):
    """y (N, O, OH, OW) from x (N, C, H, W) and weight (O, KH, KW).

    Each output row accumulates in a small buffer (bias first, then the kernel
    offsets in row-major order) that stays in L1 while the taps stream by.
    """
    num, channels, height, width = x.shape
    outputs, kh, kw = weight.shape
    out_h, out_w = y.shape[2], y.shape[3]
    multiplier = outputs // channels
    for task in prange(num * outputs):
        n = task // outputs
        o = task % outputs
        c = o // multiplier
        start = bias[o] if with_bias else y.dtype.type(0)
        row = np.empty(out_w, dtype=y.dtype)
        for oh in range(out_h):
            for ow in range(out_w):
                row[ow] = start
            for i in range(kh):
                h = oh * sh - ph + i * dh
                if h < 0 or h >= height:
                    continue
                for j in range(kw):
                    w = weight[o, i, j]
                    offset = j * dw - pw
                    lo, hi = _valid_range(out_w, sw, offset, width)
                    if hi <= lo:
                        continue
                    into = row[lo:hi]
                    if sw == 1:  # contiguous views vectorize
                        line = x[n, c, h, lo + offset:hi + offset]
                        for k in range(hi - lo):
                            into[k] += w * line[k]
                    else:
                        taps = x[n, c, h, lo * sw + offset:(hi - 1) * sw + offset + 1:sw]
                        for k in range(hi - lo):
                            into[k] += w * taps[k]
            target = y[n, o, oh]
            for ow in range(out_w):
                target[ow] = row[ow]


@njit(**OPTIONS)
def backward_data(dy, weight, sh, sw, ph, pw, dh, dw, dx):
    """dx (N, C, H, W) from the top diff dy (N, O, OH, OW); overwrites dx."""
    num, channels, height, width = dx.shape
    outputs, kh, kw = weight.shape
    out_h, out_w = dy.shape[2], dy.shape[3]
    multiplier = outputs // channels
    for task in prange(num * channels):
        n = task // channels
        c = task % channels
        plane = dx[n, c]
        for h in range(height):
            line = plane[h]
            for k in range(width):
                line[k] = dx.dtype.type(0)
        for o in range(c * multiplier, (c + 1) * multiplier):
            for i in range(kh):
                for j in range(kw):
                    w = weight[o, i, j]
                    offset = j * dw - pw
                    lo, hi = _valid_range(out_w, sw, offset, width)
                    if hi <= lo:
                        continue
                    for oh in range(out_h):
                        h = oh * sh - ph + i * dh
                        if h < 0 or h >= height:
                            continue
                        source = dy[n, o, oh, lo:hi]
                        if sw == 1:
                            line = plane[h, lo + offset:hi + offset]
                            for k in range(hi - lo):
                                line[k] += w * source[k]
                        else:
                            into = plane[h, lo * sw + offset:(hi - 1) * sw + offset + 1:sw]
                            for k in range(hi - lo):
                                into[k] += w * source[k]


@njit(**OPTIONS)
def backward_weight(x, dy, sh, sw, ph, pw, dh, dw, weight_diff):
    """weight_diff (O, KH, KW) += sum over images and outputs of dy * the input each weight met.

    Each thread takes whole output channels; per kernel offset, products add
    into a row of float64 partial sums, summed once at the end.
    """
    num, channels, height, width = x.shape
    outputs, kh, kw = weight_diff.shape
    out_h, out_w = dy.shape[2], dy.shape[3]
    multiplier = outputs // channels
    for o in prange(outputs):
        c = o // multiplier
        row = np.zeros(out_w)
        for i in range(kh):
            for j in range(kw):
                offset = j * dw - pw
                lo, hi = _valid_range(out_w, sw, offset, width)
                for k in range(out_w):
                    row[k] = 0.0
                if hi > lo:
                    partial = row[:hi - lo]
                    for n in range(num):
                        for oh in range(out_h):
                            h = oh * sh - ph + i * dh
                            if h < 0 or h >= height:
                                continue
                            grad = dy[n, o, oh, lo:hi]
                            if sw == 1:
                                line = x[n, c, h, lo + offset:hi + offset]
                                for k in range(hi - lo):
                                    partial[k] += np.float64(grad[k] * line[k])
                            else:
                                taps = x[n, c, h, lo * sw + offset:(hi - 1) * sw + offset + 1:sw]
                                for k in range(hi - lo):
                                    partial[k] += np.float64(grad[k] * taps[k])
                total = 0.0
                for k in range(out_w):
                    total += row[k]
                weight_diff[o, i, j] += total
