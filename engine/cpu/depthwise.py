"""Depthwise convolution (one input channel per group), computed directly, threads over planes.

im2col + GEMM degenerates here: one tiny product per channel. Output
channel o reads input channel o // multiplier (multiplier = outputs per
input channel). Every pass walks the kernel offsets over whole rows; the
inner loops run over views from index 0 (a possibly negative index would
make numba check for wraparound and stop LLVM from vectorizing them).

Narrow planes with stride 1 (rows shorter than FLAT_WIDTH, MobileNet's 56x56
and smaller layers) would spend their time on loop overhead over rows a dozen
values long; there each plane is copied once into a zero-padded buffer and
every kernel offset becomes one long loop over the flattened plane
(`_padded_plane`): output q = oh * padded_width + ow reads input q + offset,
and the columns past the output width are computed and dropped.

With a horizontal stride s > 1 each plane is split once into its column
phases (engine/cpu/phases.py), where every kernel offset's taps are a
contiguous run. The additions stay those of the direct loops, in the same
order.
"""

import numpy as np
from numba import njit, prange

from . import OPTIONS
from .phases import column_phases as _column_phases
from .phases import phase_of as _phase_of
from .phases import valid_range as _valid_range

# Stride-1 planes with output rows shorter than these take the flattened loops (forward and
# bottom diff; weight diff, whose float64 partial sums per offset outgrow the cache sooner).
FLAT_WIDTH, FLAT_WIDTH_WEIGHT = 64, 32


@njit(inline="always")
def _padded_plane(plane, top, left, rows, row_width):
    """A zero buffer of rows * row_width (+ row_width of slack), `plane` (H, W) copied in at (top, left)."""
    height, width = plane.shape
    buffer = np.zeros((rows + 1) * row_width, dtype=plane.dtype)
    for h in range(height):
        line = plane[h]
        into = buffer[(h + top) * row_width + left:(h + top) * row_width + left + width]
        for k in range(width):
            into[k] = line[k]
    return buffer


@njit(inline="always")
def _flat(sh, sw, ph, pw, dh, dw, kh, kw, out_w, limit):
    """Whether the flattened loops serve: stride 1, rows under `limit`, padding within the kernel's reach."""
    return (sh == 1 and sw == 1 and out_w < limit and 0 <= ph <= dh * (kh - 1)
            and 0 <= pw <= dw * (kw - 1))


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
        if _flat(sh, sw, ph, pw, dh, dw, kh, kw, out_w, FLAT_WIDTH):
            # Same additions per output, same order: bias, then the offsets row-major (padding adds 0).
            row_width = width + 2 * pw
            padded = _padded_plane(x[n, c], ph, pw, height + 2 * ph, row_width)
            count = out_h * row_width
            acc = np.empty(count, dtype=y.dtype)
            for q in range(count):
                acc[q] = start
            for i in range(kh):
                for j in range(kw):
                    w = weight[o, i, j]
                    shift = i * dh * row_width + j * dw
                    taps = padded[shift:shift + count]
                    for q in range(count):
                        acc[q] += w * taps[q]
            for oh in range(out_h):
                target = y[n, o, oh]
                source = acc[oh * row_width:oh * row_width + out_w]
                for ow in range(out_w):
                    target[ow] = source[ow]
            continue
        row = np.empty(out_w, dtype=y.dtype)
        phases = _column_phases(x[n, c], sw) if sw > 1 else np.empty((0, 0, 0), dtype=x.dtype)
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
                        phase, shift = _phase_of(offset, sw)
                        taps = phases[phase, h, lo + shift:hi + shift]
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
        if _flat(sh, sw, ph, pw, dh, dw, kh, kw, out_w, FLAT_WIDTH):
            # dx = dy padded by d(k-1) - p, correlated with the kernel rotated by 180 degrees.
            top, left = dh * (kh - 1) - ph, dw * (kw - 1) - pw
            row_width = out_w + 2 * left
            count = height * row_width
            acc = np.zeros(count, dtype=dx.dtype)
            for o in range(c * multiplier, (c + 1) * multiplier):
                padded = _padded_plane(dy[n, o], top, left, out_h + 2 * top, row_width)
                for i in range(kh):
                    for j in range(kw):
                        w = weight[o, i, j]
                        shift = (kh - 1 - i) * dh * row_width + (kw - 1 - j) * dw
                        taps = padded[shift:shift + count]
                        for q in range(count):
                            acc[q] += w * taps[q]
            for h in range(height):
                line = plane[h]
                source = acc[h * row_width:h * row_width + width]
                for k in range(width):
                    line[k] = source[k]
            continue
        for h in range(height):
            line = plane[h]
            for k in range(width):
                line[k] = dx.dtype.type(0)
        # Strided: the sums go into the plane's column phases, interleaved into the plane at the end.
        phases = _column_phases(plane, sw) if sw > 1 else np.empty((0, 0, 0), dtype=dx.dtype)
        for o in range(c * multiplier, (c + 1) * multiplier):
            for i in range(kh):
                for j in range(kw):
                    w = weight[o, i, j]
                    offset = j * dw - pw
                    lo, hi = _valid_range(out_w, sw, offset, width)
                    if hi <= lo:
                        continue
                    phase, shift = _phase_of(offset, sw) if sw > 1 else (0, 0)
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
                            into = phases[phase, h, lo + shift:hi + shift]
                            for k in range(hi - lo):
                                into[k] += w * source[k]
        if sw > 1:
            for p in range(sw):
                for h in range(height):
                    line = plane[h]
                    source = phases[p, h]
                    for k in range((width - p + sw - 1) // sw):
                        line[k * sw + p] = source[k]


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
    flat = _flat(sh, sw, ph, pw, dh, dw, kh, kw, out_w, FLAT_WIDTH_WEIGHT)
    for o in prange(outputs):
        c = o // multiplier
        if flat:
            # Per offset, float64 partial sums over the flattened plane: dy with zeros in the dropped
            # columns, times the zero-padded input shifted by the offset.
            row_width = width + 2 * pw
            count = out_h * row_width
            partial = np.zeros((kh * kw, count))
            grad = np.zeros(count, dtype=dy.dtype)
            for n in range(num):
                padded = _padded_plane(x[n, c], ph, pw, height + 2 * ph, row_width)
                for oh in range(out_h):
                    line = dy[n, o, oh]
                    into = grad[oh * row_width:oh * row_width + out_w]
                    for k in range(out_w):
                        into[k] = line[k]
                for i in range(kh):
                    for j in range(kw):
                        shift = i * dh * row_width + j * dw
                        taps = padded[shift:shift + count]
                        sums = partial[i * kw + j]
                        for q in range(count):
                            sums[q] += np.float64(grad[q] * taps[q])
            for i in range(kh):
                for j in range(kw):
                    sums = partial[i * kw + j]
                    total = 0.0
                    for q in range(count):
                        total += sums[q]
                    weight_diff[o, i, j] += total
            continue
        if sw > 1:
            # Images outermost, so that each image's column phases are made once; every offset keeps its
            # own row of partial sums, which receive the same products in the same order as below.
            rows = np.zeros((kh * kw, out_w))
            for n in range(num):
                phases = _column_phases(x[n, c], sw)
                for i in range(kh):
                    for j in range(kw):
                        offset = j * dw - pw
                        lo, hi = _valid_range(out_w, sw, offset, width)
                        if hi <= lo:
                            continue
                        phase, shift = _phase_of(offset, sw)
                        partial = rows[i * kw + j, :hi - lo]
                        for oh in range(out_h):
                            h = oh * sh - ph + i * dh
                            if h < 0 or h >= height:
                                continue
                            grad = dy[n, o, oh, lo:hi]
                            taps = phases[phase, h, lo + shift:hi + shift]
                            for k in range(hi - lo):
                                partial[k] += np.float64(grad[k] * taps[k])
            for i in range(kh):
                for j in range(kw):
                    total = 0.0
                    for k in range(out_w):
                        total += rows[i * kw + j, k]
                    weight_diff[o, i, j] += total
            continue
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
                            line = x[n, c, h, lo + offset:hi + offset]
                            for k in range(hi - lo):
                                partial[k] += np.float64(grad[k] * line[k])
                total = 0.0
                for k in range(out_w):
                    total += row[k]
                weight_diff[o, i, j] += total
