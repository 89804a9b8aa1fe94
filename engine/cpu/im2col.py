"""2-D im2col and col2im kernels: threads over (column row, image) and (image, channel) planes.

Columns are addressed as (K, num, out_h, out_w) with K = channels * kh * kw in
Caffe's row order; engine.im2col passes a transposed view for its
batch-first layout. col2im gives each thread whole (image, channel) planes,
so no two threads add into the same input, and adds the kernel offsets in
row-major order, as the NumPy col2im does: the sums are the same bit for bit.
"""

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
def im2col(x, kh, kw, ph, pw, sh, sw, dh, dw, out):
    """out (C * kh * kw, N, OH, OW) = the input of every window at every kernel offset (0 in the padding)."""
    num, channels, height, width = x.shape
    out_h, out_w = out.shape[2], out.shape[3]
    per_channel = kh * kw
    zero = x.dtype.type(0)
    for task in prange(channels * per_channel * num):
        n = task % num
        row = task // num
        c = row // per_channel
        i = (row % per_channel) // kw
        j = row % kw
        col_offset = j * dw - pw
        lo, hi = _valid_range(out_w, sw, col_offset, width)
        for oh in range(out_h):
            h = oh * sh - ph + i * dh
            target = out[row, n, oh]
            if h < 0 or h >= height:
                for ow in range(out_w):
                    target[ow] = zero
                continue
            source = x[n, c, h]
            for ow in range(lo):
                target[ow] = zero
            if sw == 1:
                for ow in range(lo, hi):
                    target[ow] = source[ow + col_offset]
            else:
                for ow in range(lo, hi):
                    target[ow] = source[ow * sw + col_offset]
            for ow in range(hi, out_w):
                target[ow] = zero


@njit(**OPTIONS)
def col2im(cols, kh, kw, ph, pw, sh, sw, dh, dw, out):
    """out (N, C, H, W) = the columns (C * kh * kw, N, OH, OW) summed back onto the inputs they copied."""
    num, channels, height, width = out.shape
    out_h, out_w = cols.shape[2], cols.shape[3]
    per_channel = kh * kw
    zero = out.dtype.type(0)
    for task in prange(num * channels):
        n = task // channels
        c = task % channels
        plane = out[n, c]
        for h in range(height):
            for w in range(width):
                plane[h, w] = zero
        for i in range(kh):
            for j in range(kw):
                row = c * per_channel + i * kw + j
                col_offset = j * dw - pw
                lo, hi = _valid_range(out_w, sw, col_offset, width)
                for oh in range(out_h):
                    h = oh * sh - ph + i * dh
                    if h < 0 or h >= height:
                        continue
                    source = cols[row, n, oh]
                    target = plane[h]
                    if sw == 1:
                        for ow in range(lo, hi):
                            target[ow + col_offset] += source[ow]
                    else:
                        for ow in range(lo, hi):
                            target[ow * sw + col_offset] += source[ow]
