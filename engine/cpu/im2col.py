"""2-D im2col and col2im kernels: threads over (column row, image) and (image, channel) planes.

Columns are addressed as (K, num, out_h, out_w) with K = channels * kh * kw in
Caffe's row order; engine.im2col passes a transposed view for its
batch-first layout. col2im gives each thread whole (image, channel) planes,
so no two threads add into the same input, and adds the kernel offsets in
row-major order, as the NumPy col2im does: the sums are the same bit for bit.
"""

from numba import njit, prange, uint64

from . import OPTIONS
from .phases import column_phases as _column_phases
from .phases import phase_of as _phase_of
from .phases import valid_range as _valid_range


@njit(**OPTIONS)
def pad(x, ph, pw, out):
    """out (N, C, H + 2 ph, W + 2 pw) = x with a border of zeros."""
    num, channels, height, width = x.shape
    for task in prange(num * channels):
        n = task // channels
        c = task % channels
        plane = out[n, c]
        plane[:, :] = 0
        plane[ph:ph + height, pw:pw + width] = x[n, c]


@njit(**OPTIONS)
def im2col(padded, kh, kw, sh, sw, dh, dw, out):
    """out (C * kh * kw, N, OH, OW) = the input of every window at every kernel offset.

    `padded` (N, C, Hp, Wp) already holds the zero border, so every window lies inside it. With a
    horizontal stride each plane is split once into its column phases (engine/cpu/phases.py), where every
    kernel offset's taps are one contiguous run: a loop over strided taps does not vectorize (ResNet-18's
    7x7 stride-2 columns of one image took 228 us, 68 through the phases).
    """
    num, channels, height, width = padded.shape
    out_h, out_w = out.shape[2], out.shape[3]
    per_channel = kh * kw
    if sw > 1:
        for task in prange(channels * num):
            n = task % num
            c = task // num
            phases = _column_phases(padded[n, c], sw)
            for i in range(kh):
                for j in range(kw):
                    phase, shift = _phase_of(j * dw, sw)
                    target = out[c * per_channel + i * kw + j, n]
                    for oh in range(out_h):
                        into = target[oh]
                        line = phases[phase, oh * sh + i * dh, shift:shift + out_w]
                        for ow in range(out_w):
                            into[ow] = line[ow]
        return
    for task in prange(channels * per_channel * num):
        n = task % num
        row = task // num
        c = row // per_channel
        i = (row % per_channel) // kw
        j = row % kw
        source = padded[n, c]
        target = out[row, n]
        for oh in range(out_h):
            into = target[oh]
            # Views from index 0: numba's wraparound check on a computed index stops vectorization.
            line = source[oh * sh + i * dh, j * dw:j * dw + out_w]
            for ow in range(out_w):
                into[ow] = line[ow]


@njit(**OPTIONS)
def col2im(cols, kh, kw, ph, pw, sh, sw, dh, dw, out):
    """out (N, C, H, W) = the contiguous columns (C * kh * kw, N, OH, OW) summed back onto the inputs they copied.

    Flat unsigned indices: rows are short (a few outputs) and per-row views would cost
    more than the additions; unsigned, numba adds no wraparound check.
    """
    num, channels, height, width = out.shape
    out_h, out_w = cols.shape[2], cols.shape[3]
    per_channel = kh * kw
    zero = out.dtype.type(0)
    step = uint64(sw)
    for task in prange(num * channels):
        n = task // channels
        c = task % channels
        plane = out[n, c].reshape(height * width)
        for k in range(height * width):
            plane[k] = zero
        for i in range(kh):
            for j in range(kw):
                row = c * per_channel + i * kw + j
                col_offset = j * dw - pw
                lo, hi = _valid_range(out_w, sw, col_offset, width)
                if hi <= lo:
                    continue
                source = cols[row, n].reshape(out_h * out_w)
                for oh in range(out_h):
                    h = oh * sh - ph + i * dh
                    if h < 0 or h >= height:
                        continue
                    into = uint64(h * width + col_offset + lo * sw)
                    start = uint64(oh * out_w + lo)
                    for k in range(uint64(hi - lo)):
                        plane[into + k * step] += source[start + k]
