"""MAX and AVE pooling kernels for CuPy arrays (NCHW), with Caffe's window rules.

One thread per output (forward) or per input (backward, gathering from the
windows that cover it, so no atomics and a deterministic sum). MAX keeps,
per output, the flat index h * W + w of the first maximum in row-major
window order, among values above -FLT_MAX (-1 when none), as Caffe's mask.
AVE divides by the divisor table the layer computes for both paths.
"""

from . import elementwise

_GEOMETRY = ("int32 C, int32 H, int32 W, int32 PH, int32 PW, int32 KH, int32 KW, "
             "int32 SH, int32 SW, int32 PADH, int32 PADW")


# Backward passes: input (h, w) of `plane` lies in the windows ph in [phs, phe), pw in [pws, pwe);
# `base` is the plane's first output.
_COVERING_WINDOWS = """
        const int w = i % W, h = (i / W) % H, plane = i / (W * H);
        const int phs = (h + PADH < KH) ? 0 : (h + PADH - KH) / SH + 1;
        const int phe = min((h + PADH) / SH + 1, PH);
        const int pws = (w + PADW < KW) ? 0 : (w + PADW - KW) / SW + 1;
        const int pwe = min((w + PADW) / SW + 1, PW);
        const ptrdiff_t base = (ptrdiff_t)plane * PH * PW;"""


def _max_forward():
    return elementwise(
        "engine_max_pool_forward", "raw T x, " + _GEOMETRY, "T y, int32 mask",
        """
        const int pw = i % PW, ph = (i / PW) % PH, plane = i / (PW * PH);
        int hs = ph * SH - PADH, ws = pw * SW - PADW;
        const int he = min(hs + KH, H), we = min(ws + KW, W);
        hs = max(hs, 0); ws = max(ws, 0);
        const T* image = &x[(ptrdiff_t)plane * H * W];
        T best = -3.402823466e+38f;
        int index = -1;
        for (int h = hs; h < he; ++h)
            for (int w = ws; w < we; ++w)
                if (image[h * W + w] > best) { index = h * W + w; best = image[index]; }
        y = best;
        mask = index;
        """)


def _max_backward():
    return elementwise(
        "engine_max_pool_backward", "raw T dy, raw int32 mask, " + _GEOMETRY, "T dx",
        _COVERING_WINDOWS + """
        const int me = h * W + w;
        T total = 0;
        for (int ph = phs; ph < phe; ++ph)
            for (int pw = pws; pw < pwe; ++pw)
                if (mask[base + ph * PW + pw] == me) total += dy[base + ph * PW + pw];
        dx = total;
        """)


def _ave_forward():
    return elementwise(
        "engine_ave_pool_forward", "raw T x, raw T divisor, " + _GEOMETRY, "T y",
        """
        const int pw = i % PW, ph = (i / PW) % PH, plane = i / (PW * PH);
        const int hs = max(ph * SH - PADH, 0), ws = max(pw * SW - PADW, 0);
        const int he = min(ph * SH - PADH + KH, H), we = min(pw * SW - PADW + KW, W);
        const T* image = &x[(ptrdiff_t)plane * H * W];
        T total = 0;
        for (int h = hs; h < he; ++h)
            for (int w = ws; w < we; ++w)
                total += image[h * W + w];
        y = total / divisor[ph * PW + pw];
        """)


def _ave_backward():
    return elementwise(
        "engine_ave_pool_backward", "raw T dy, raw T divisor, " + _GEOMETRY, "T dx",
        _COVERING_WINDOWS + """
        T total = 0;
        for (int ph = phs; ph < phe; ++ph)
            for (int pw = pws; pw < pwe; ++pw)
                total += dy[base + ph * PW + pw] / divisor[ph * PW + pw];
        dx = total;
        """)


def _geometry(x_shape, out_shape, kernel, stride, pad):
    _, channels, height, width = x_shape
    return (channels, height, width, out_shape[0], out_shape[1], kernel[0], kernel[1],
            stride[0], stride[1], pad[0], pad[1])


def max_forward(x, kernel, stride, pad, out_shape, y, mask):
    """Fill `y` (N, C, PH, PW) and the int32 `mask` with each window's maximum and its index."""
    _max_forward()(x, *_geometry(x.shape, out_shape, kernel, stride, pad), y, mask)


def max_backward(dy, mask, kernel, stride, pad, dx):
    """Write into `dx` the sum of the top diffs whose mask chose each input."""
    _max_backward()(dy, mask, *_geometry(dx.shape, dy.shape[2:], kernel, stride, pad), dx)


def ave_forward(x, divisor, kernel, stride, pad, y):
    _ave_forward()(x, divisor, *_geometry(x.shape, y.shape[2:], kernel, stride, pad), y)


def ave_backward(dy, divisor, kernel, stride, pad, dx):
    _ave_backward()(dy, divisor, *_geometry(dx.shape, dy.shape[2:], kernel, stride, pad), dx)
