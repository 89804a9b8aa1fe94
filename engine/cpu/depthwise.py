"""Depthwise convolution (one input channel per group), computed directly, threads over planes.

im2col + GEMM degenerates here: one tiny product per channel. Output
channel o reads input channel o // multiplier (multiplier = outputs per
input channel). Forward and bottom diff walk the kernel offsets over whole
rows (unit stride runs vectorize); the weight diff gives each thread whole
output channels and accumulates rows of products in float64.
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
    """y (N, O, OH, OW) from x (N, C, H, W) and weight (O, KH, KW)."""
    num, channels, height, width = x.shape
    outputs, kh, kw = weight.shape
    out_h, out_w = y.shape[2], y.shape[3]
    multiplier = outputs // channels
    for task in prange(num * outputs):
        n = task // outputs
        o = task % outputs
        c = o // multiplier
        plane = y[n, o]
        start = bias[o] if with_bias else y.dtype.type(0)
        for oh in range(out_h):
            for ow in range(out_w):
                plane[oh, ow] = start
        for i in range(kh):
            for j in range(kw):
                w = weight[o, i, j]
                offset = j * dw - pw
                lo, hi = _valid_range(out_w, sw, offset, width)
                for oh in range(out_h):
                    h = oh * sh - ph + i * dh
                    if h < 0 or h >= height:
                        continue
                    source = x[n, c, h]
                    target = plane[oh]
                    if sw == 1:
                        for ow in range(lo, hi):
                            target[ow] += w * source[ow + offset]
                    else:
                        for ow in range(lo, hi):
                            target[ow] += w * source[ow * sw + offset]


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
            for w in range(width):
                plane[h, w] = dx.dtype.type(0)
        for o in range(c * multiplier, (c + 1) * multiplier):
            for i in range(kh):
                for j in range(kw):
                    w = weight[o, i, j]
                    offset = j * dw - pw
                    lo, hi = _valid_range(out_w, sw, offset, width)
                    for oh in range(out_h):
                        h = oh * sh - ph + i * dh
                        if h < 0 or h >= height:
                            continue
                        source = dy[n, o, oh]
                        target = plane[h]
                        if sw == 1:
                            for ow in range(lo, hi):
                                target[ow + offset] += w * source[ow]
                        else:
                            for ow in range(lo, hi):
                                target[ow * sw + offset] += w * source[ow]


@njit(**OPTIONS)
def backward_weight(x, dy, sh, sw, ph, pw, dh, dw, weight_diff):
    """weight_diff (O, KH, KW) += sum over images and outputs of dy * the input each weight met."""
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
                for ow in range(out_w):
                    row[ow] = 0.0
                for n in range(num):
                    for oh in range(out_h):
                        h = oh * sh - ph + i * dh
                        if h < 0 or h >= height:
                            continue
                        source = x[n, c, h]
                        grad = dy[n, o, oh]
                        if sw == 1:
                            for ow in range(lo, hi):
                                row[ow] += grad[ow] * source[ow + offset]
                        else:
                            for ow in range(lo, hi):
                                row[ow] += grad[ow] * source[ow * sw + offset]
                total = 0.0
                for ow in range(out_w):
                    total += row[ow]
                weight_diff[o, i, j] += total
