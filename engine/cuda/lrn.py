"""LRN across channels on CuPy arrays: one thread per (image, pixel) slides the
window along the channels with a running sum, as Caffe's GPU kernels do, so a
pass reads each input once instead of once per window offset."""

from . import elementwise

_WINDOW = """
    const int n = i / HW, p = i % HW;
    const ptrdiff_t base = (ptrdiff_t)n * C * HW + p;
    const int pre = (size - 1) / 2, post = size - pre - 1;
    T accum = 0;
    for (int c = 0; c < post && c < C; ++c) { ACCUMULATE(c, +=) }
    for (int c = 0; c < C; ++c) {
        if (c + post < C) { ACCUMULATE(c + post, +=) }
        if (c - pre - 1 >= 0) { ACCUMULATE(c - pre - 1, -=) }
        const ptrdiff_t at = base + (ptrdiff_t)c * HW;
        BODY
    }
"""


def _forward():
    body = _WINDOW.replace("ACCUMULATE(c, +=)", "const T v = x[base + (ptrdiff_t)(c) * HW]; accum += v * v;")
    body = body.replace("ACCUMULATE(c + post, +=)",
                        "const T v = x[base + (ptrdiff_t)(c + post) * HW]; accum += v * v;")
    body = body.replace("ACCUMULATE(c - pre - 1, -=)",
                        "const T v = x[base + (ptrdiff_t)(c - pre - 1) * HW]; accum -= v * v;")
    body = body.replace("BODY", "const T s = k + alpha_over_n * accum; scale[at] = s; y[at] = x[at] * pow(s, -beta);")
    return elementwise("engine_lrn_forward",
                       "raw T x, int32 C, int32 HW, int32 size, T alpha_over_n, T k, T beta",
                       "raw T y, raw T scale", body)


def _backward():
    term = "dy[base + (ptrdiff_t)({c}) * HW] * y[base + (ptrdiff_t)({c}) * HW] / scale[base + (ptrdiff_t)({c}) * HW]"
    body = _WINDOW.replace("ACCUMULATE(c, +=)", "accum += " + term.format(c="c") + ";")
    body = body.replace("ACCUMULATE(c + post, +=)", "accum += " + term.format(c="c + post") + ";")
    body = body.replace("ACCUMULATE(c - pre - 1, -=)", "accum -= " + term.format(c="c - pre - 1") + ";")
    body = body.replace("BODY", "dx[at] = dy[at] * pow(scale[at], -beta) - ratio * x[at] * accum;")
    return elementwise("engine_lrn_backward",
                       "raw T x, raw T y, raw T scale, raw T dy, int32 C, int32 HW, int32 size, T beta, T ratio",
                       "raw T dx", body)


def forward(x, size, alpha, beta, k, y, scale):
    """y = x * scale^-beta with scale = k + alpha / size * (window sum of x^2); fills `scale` too."""
    num, channels = x.shape[:2]
    hw = x.size // (num * channels)
    kind = x.dtype.type
    _forward()(x, channels, hw, size, kind(alpha / size), kind(k), kind(beta), y, scale, size=num * hw)


def backward(x, y, scale, dy, size, alpha, beta, dx):
    num, channels = x.shape[:2]
    hw = x.size // (num * channels)
    kind = x.dtype.type
    _backward()(x, y, scale, dy, channels, hw, size, kind(beta), kind(2 * alpha * beta / size), dx,
                size=num * hw)
