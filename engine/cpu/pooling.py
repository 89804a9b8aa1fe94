"""MAX and AVE pooling kernels (NCHW) with Caffe's window rules, threads over (image, channel) planes.

MAX keeps, per output, the flat index h * W + w of the first maximum in
row-major window order among values above -FLT_MAX (-1 and -FLT_MAX when
none), as Caffe and the NumPy path do; its backward adds each top diff into
the input it chose, in output order, as the NumPy path's `add.at`. AVE
divides by the divisor table the layer computes for both paths; its
backward adds each window's share into the inputs it covers, windows in
row-major order.
"""

from numba import int64, njit, prange, uint64

from . import OPTIONS

FLT_MAX = 3.4028234663852886e38


@njit(**OPTIONS)
def max_forward(x, kh, kw, sh, sw, ph, pw, y, mask):
    """y, mask (N, C, PH, PW): each window's maximum and its input's index h * W + w."""
    num, channels, height, width = x.shape
    out_h, out_w = y.shape[2], y.shape[3]
    lowest = x.dtype.type(-FLT_MAX)
    for task in prange(num * channels):
        n = task // channels
        c = task % channels
        image = x[n, c].reshape(height * width)  # flat, unsigned indices: no wraparound checks
        best_row = y[n, c].reshape(out_h * out_w)
        mask_row = mask[n, c].reshape(out_h * out_w)
        for oh in range(out_h):
            hs = oh * sh - ph
            he = min(hs + kh, height)
            hs = max(hs, 0)
            for ow in range(out_w):
                ws = ow * sw - pw
                we = min(ws + kw, width)
                ws = max(ws, 0)
                best = lowest
                index = -1
                for h in range(hs, he):
                    line = uint64(h * width)
                    for w in range(uint64(ws), uint64(we)):
                        value = image[line + w]
                        # Selects, not branches: maxima arrive at random, a branch mispredicts often.
                        better = value > best
                        index = int64(line + w) if better else index
                        best = value if better else best
                out = uint64(oh * out_w + ow)
                best_row[out] = best
                mask_row[out] = index


@njit(**OPTIONS)
def max_backward(dy, mask, dx):
    """dx (N, C, H, W) = every top diff added into the input its mask names."""
    num, channels, height, width = dx.shape
    out_h, out_w = dy.shape[2], dy.shape[3]
    zero = dx.dtype.type(0)
    for task in prange(num * channels):
        n = task // channels
        c = task % channels
        plane = dx[n, c].reshape(height * width)
        for k in range(height * width):
            plane[k] = zero
        for oh in range(out_h):
            for ow in range(out_w):
                index = mask[n, c, oh, ow]
                if index >= 0:
                    plane[index] += dy[n, c, oh, ow]


@njit(inline="always")
def _window(index, stride, pad, kernel, size):
    """The inputs [start, end) of window `index` along one axis, clipped to the image."""
    return max(index * stride - pad, 0), min(index * stride - pad + kernel, size)


@njit(**OPTIONS)
def ave_forward(x, divisor, kh, kw, sh, sw, ph, pw, y):
    """y (N, C, PH, PW) = each window's sum (inside the image, row-major order) / its divisor."""
    num, channels, height, width = x.shape
    out_h, out_w = y.shape[2], y.shape[3]
    for task in prange(num * channels):
        n = task // channels
        c = task % channels
        image = x[n, c]
        for oh in range(out_h):
            hs, he = _window(oh, sh, ph, kh, height)
            for ow in range(out_w):
                ws, we = _window(ow, sw, pw, kw, width)
                total = x.dtype.type(0)
                for h in range(hs, he):
                    for w in range(ws, we):
                        total += image[h, w]
                y[n, c, oh, ow] = total / divisor[oh, ow]


@njit(**OPTIONS)
def ave_backward(dy, divisor, kh, kw, sh, sw, ph, pw, dx):
    """dx (N, C, H, W) = for every input, the sum of dy / divisor over the windows that cover it.

    Each window adds its share to its inputs, windows in row-major order: every
    input receives its shares in that order, starting from zero (no integer
    division per input to find the windows that cover it).
    """
    num, channels, height, width = dx.shape
    out_h, out_w = dy.shape[2], dy.shape[3]
    zero = dx.dtype.type(0)
    for task in prange(num * channels):
        n = task // channels
        c = task % channels
        plane = dx[n, c]
        for h in range(height):
            line = plane[h]
            for w in range(width):
                line[w] = zero
        grads = dy[n, c]
        for oh in range(out_h):
            hs, he = _window(oh, sh, ph, kh, height)
            for ow in range(out_w):
                ws, we = _window(ow, sw, pw, kw, width)
                share = grads[oh, ow] / divisor[oh, ow]
                for h in range(hs, he):
                    line = plane[h]
                    for w in range(ws, we):
                        line[w] += share
