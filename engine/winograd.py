"""Winograd F(2x2, 3x3) convolution: the Convolution layer's path for 3x3, stride-1 kernels.

im2col + GEMM spends 2 * 9 * C multiply-adds per output and copies the input
nine times. Winograd's minimal filtering (Lavin & Gray, 2016) computes each
2x2 output tile from a 4x4 input tile with 16 products instead of 36: the
transforms are additions on whole-batch arrays, and the products are 16
GEMMs of (num_output x channels) by (channels x tiles), 2.25 times fewer
flops, on an input copy four (not nine) times the input size.

All three passes go through the same transforms:
- forward:       Y  = A^T [ U . V ] A,  U = G w G^T,  V = B^T d B
- bottom diff:   the same routine on the top diff with the filters rotated
                 by 180 degrees and channels swapped, padding 2 - pad
- weight diff:   dU = A dY A^T contracted with V over tiles; dw = G^T dU G

Arrays are channels-last (num, H, W, channels) inside, so every transform
step runs along rows of `channels` contiguous values (a tile's width is only
a few values: tile-major layouts spend their time in NumPy's per-row
overhead), and each of the 16 products is one GEMM over the whole batch.
The entry points take and return Caffe's (num, channels, H, W), and write
into the caller's arrays when given them. One body serves NumPy and CuPy
(engine.backend.get_array_module). float32 error stays near 1e-6 relative
(tests/engine/test_winograd.py checks against im2col and a direct convolution
in float64). On the CPU the transforms and the moves to and from channels-last
run as multi-threaded kernels with the same additions (engine/cpu/winograd.py).
"""

import numpy as np

from . import cpu
from .cpu import products
from .backend import get_array_module

def supported(kernel, stride, dilation, pad):
    """Geometry this path computes: 2-D 3x3, stride 1, no dilation, pad 0..2 (for the bottom diff)."""
    return (tuple(kernel) == (3, 3) and tuple(stride) == (1, 1) and tuple(dilation) == (1, 1)
            and len(tuple(pad)) == 2 and all(0 <= p <= 2 for p in pad))


def _g_taps(x0, x1, x2):
    """G (x0, x1, x2) for G = [[1, 0, 0], [1/2, 1/2, 1/2], [1/2, -1/2, 1/2], [0, 0, 1]], as the kernel adds."""
    return x0, (x0 + x2 + x1) * 0.5, (x0 + x2 - x1) * 0.5, x2


def _gt_taps(d0, d1, d2, d3):
    """G^T (d0, d1, d2, d3): the adjoint of _g_taps, as the kernel adds."""
    return d0 + (d1 + d2) * 0.5, (d1 - d2) * 0.5, d3 + (d1 + d2) * 0.5


def filter_transform(weight):
    """U (16, out, in) = G w G^T for weights (out, in, 3, 3): G down each kernel column, then along each row.

    The filters go tap-major first (9, filters), so that each step is one pass
    along a row of filters.
    """
    xp = get_array_module(weight)
    out_channels, in_channels = weight.shape[:2]
    taps = weight.reshape(-1, 9)
    g = xp.empty((9, taps.shape[0]), dtype=weight.dtype)
    _in_parts(xp, g.shape[1], lambda part: _copy(g[:, part], taps[part].T))
    u = xp.empty((16, g.shape[1]), dtype=weight.dtype)
    if cpu.usable(g, u):
        cpu.kernels("winograd").filter_transform(g, u)
    else:
        columns = [_g_taps(g[b], g[3 + b], g[6 + b]) for b in range(3)]
        for r in range(4):
            for c, value in enumerate(_g_taps(columns[0][r], columns[1][r], columns[2][r])):
                u[4 * r + c] = value
    return u.reshape(16, out_channels, in_channels)


def filter_transform_adjoint(du, out=None):
    """dw (out, in, 3, 3) = G^T dU G, the weight diff from the transformed-filter diff; added into `out`
    when given (and `out` returned)."""
    xp = get_array_module(du)
    out_channels, in_channels = du.shape[1:]
    du = xp.ascontiguousarray(du).reshape(16, -1)
    q = xp.empty((9, du.shape[1]), dtype=du.dtype)
    if cpu.usable(du, q):
        cpu.kernels("winograd").filter_transform_adjoint(du, q)
    else:
        rows = [_gt_taps(du[c], du[4 + c], du[8 + c], du[12 + c]) for c in range(4)]
        for a in range(3):
            for b, value in enumerate(_gt_taps(rows[0][a], rows[1][a], rows[2][a], rows[3][a])):
                q[3 * a + b] = value
    if out is None:
        return xp.ascontiguousarray(q.T).reshape(out_channels, in_channels, 3, 3)
    if out.flags.c_contiguous:
        taps = out.reshape(-1, 9)  # a view: the addition lands in `out`
        _in_parts(xp, q.shape[1], lambda part: _add(taps[part], q[:, part].T))
    else:
        out += q.T.reshape(out.shape)
    return out


def _copy(target, source):
    target[...] = source


def _add(target, source):
    target += source


def _in_parts(xp, size, function):
    """function(part) over slices covering range(size): split over engine.cpu.products' threads when the
    moves are large NumPy ones (NumPy releases the GIL in them), in one call otherwise."""
    products.in_parts(size, function, minimum=9 * size if xp is np else 0)


def _tiles(size, pad):
    return -(-(size + 2 * pad - 2) // 2)


def input_transform(xh, pad):
    """V (16, num * tiles, channels) = B^T d B over the 4x4 tiles (stride 2) of channels-last xh."""
    xp = get_array_module(xh)
    num, height, width, channels = xh.shape
    th, tw = _tiles(height, pad[0]), _tiles(width, pad[1])
    padded = xp.zeros((num, 2 * th + 2, 2 * tw + 2, channels), dtype=xh.dtype)
    padded[:, pad[0]:pad[0] + height, pad[1]:pad[1] + width] = xh
    return _input_transform_padded(padded, th, tw)


def _input_transform_padded(padded, th, tw):
    xp = get_array_module(padded)
    num, channels = padded.shape[0], padded.shape[3]
    if cpu.usable(padded) and padded.flags.c_contiguous:
        v = xp.empty((4, 4, num, th, tw, channels), dtype=padded.dtype)
        cpu.kernels("winograd").input_transform(padded, v)
        return v.reshape(16, num * th * tw, channels), (th, tw)
    d = [[padded[:, a:a + 2 * th - 1:2, b:b + 2 * tw - 1:2] for b in range(4)] for a in range(4)]
    v = xp.empty((4, 4, num, th, tw, channels), dtype=padded.dtype)
    for b in range(4):  # B^T along the tile's rows: (d0 - d2, d1 + d2, d2 - d1, d1 - d3)
        col = [d[a][b] for a in range(4)]
        xp.subtract(col[0], col[2], out=v[0, b])
        xp.add(col[1], col[2], out=v[1, b])
        xp.subtract(col[2], col[1], out=v[2, b])
        xp.subtract(col[1], col[3], out=v[3, b])
    for i in range(4):  # ... then along its columns, in place (three temporaries per row)
        r = v[i]
        first, second, last = r[0] - r[2], r[1] + r[2], r[1] - r[3]
        r[2] -= r[1]
        r[0], r[1], r[3] = first, second, last
    return v.reshape(16, num * th * tw, channels), (th, tw)


def output_transform(m, num, tiles, out_shape):
    """Y (num, oh, ow, out) = A^T M A from M (16, num * tiles, out); a view into a fresh array."""
    xp = get_array_module(m)
    th, tw = tiles
    out_channels = m.shape[-1]
    m = m.reshape(4, 4, num, th, tw, out_channels)
    if cpu.usable(m) and m.flags.c_contiguous:
        y = xp.empty((num, 2 * th, 2 * tw, out_channels), dtype=m.dtype)
        cpu.kernels("winograd").output_transform(m, y)
        return y[:, :out_shape[0], :out_shape[1]]
    s = xp.empty((4, 2, num, th, tw, out_channels), dtype=m.dtype)
    for i in range(4):  # A^T along columns: (m0 + m1 + m2, m1 - m2 - m3)
        xp.add(m[i, 0], m[i, 1], out=s[i, 0])
        s[i, 0] += m[i, 2]
        xp.subtract(m[i, 1], m[i, 2], out=s[i, 1])
        s[i, 1] -= m[i, 3]
    y = xp.empty((num, 2 * th, 2 * tw, out_channels), dtype=m.dtype)
    for q in range(2):
        top = y[:, 0::2, q::2]
        xp.add(s[0, q], s[1, q], out=top)
        top += s[2, q]
        bottom = y[:, 1::2, q::2]
        xp.subtract(s[1, q], s[2, q], out=bottom)
        bottom -= s[3, q]
    return y[:, :out_shape[0], :out_shape[1]]


def output_transform_adjoint(dyh, tiles):
    """dM (16, num * tiles, out) = A dY A^T, from the channels-last top diff dyh (num, oh, ow, out)."""
    xp = get_array_module(dyh)
    th, tw = tiles
    num, out_channels = dyh.shape[0], dyh.shape[3]
    if cpu.usable(dyh) and dyh.flags.c_contiguous and dyh.shape[1:3] == (2 * th, 2 * tw):
        dm = xp.empty((4, 4, num, th, tw, out_channels), dtype=dyh.dtype)
        cpu.kernels("winograd").output_transform_adjoint(dyh, dm)
        return dm.reshape(16, num * th * tw, out_channels)
    if dyh.shape[1:3] == (2 * th, 2 * tw):
        padded = dyh
    else:
        padded = xp.zeros((num, 2 * th, 2 * tw, out_channels), dtype=dyh.dtype)
        padded[:, :dyh.shape[1], :dyh.shape[2]] = dyh
    t = xp.empty((4, 2, num, th, tw, out_channels), dtype=dyh.dtype)
    for q in range(2):  # A along rows: (y0, y0 + y1, y0 - y1, -y1)
        y0, y1 = padded[:, 0::2, q::2], padded[:, 1::2, q::2]
        t[0, q] = y0
        xp.add(y0, y1, out=t[1, q])
        xp.subtract(y0, y1, out=t[2, q])
        xp.negative(y1, out=t[3, q])
    dm = xp.empty((4, 4, num, th, tw, out_channels), dtype=dyh.dtype)
    for i in range(4):  # ... and along columns
        dm[i, 0] = t[i, 0]
        xp.add(t[i, 0], t[i, 1], out=dm[i, 1])
        xp.subtract(t[i, 0], t[i, 1], out=dm[i, 2])
        xp.negative(t[i, 1], out=dm[i, 3])
    return dm.reshape(16, num * th * tw, out_channels)


def _group_slices(size, group):
    step = size // group
    return [slice(index * step, (index + 1) * step) for index in range(group)]


def _products(v, u, group, transposed=False, permutation=None):
    """M (16, T, out) = V (16, T, in) @ U^T per group, U (16, out, in / group).

    `transposed`: `u` is given as U^T (16, in, out), group 1 only; then
    `permutation` (when given) takes U^T[k] from u[permutation[k]] (a
    stack-permuted copy of a large U costs as much as a product).
    """
    xp = get_array_module(v)
    matmul = products.for_module(xp)
    if transposed:
        if permutation is not None:
            return products.matmul_indexed(v, u, permutation)
        return matmul(v, u)
    if group == 1:
        return matmul(v, u.swapaxes(1, 2))
    m = xp.empty(v.shape[:2] + (u.shape[1],), dtype=v.dtype)
    for vin, uout in zip(_group_slices(v.shape[2], group), _group_slices(u.shape[1], group)):
        m[:, :, uout] = matmul(v[:, :, vin], u[:, uout].swapaxes(1, 2))
    return m


def _to_channels_last(x):
    xp = get_array_module(x)
    return xp.ascontiguousarray(x.transpose(0, 2, 3, 1))


def _padded_channels_last(x, pad, th, tw):
    """x (num, C, H, W) zero-padded into channels-last (num, 2 th + 2, 2 tw + 2, C)."""
    xp = get_array_module(x)
    num, channels, height, width = x.shape
    if cpu.usable(x) and x.flags.c_contiguous:
        padded = xp.empty((num, 2 * th + 2, 2 * tw + 2, channels), dtype=x.dtype)
        cpu.kernels("winograd").to_padded_channels_last(x, pad[0], pad[1], padded)
        return padded
    padded = xp.zeros((num, 2 * th + 2, 2 * tw + 2, channels), dtype=x.dtype)
    padded[:, pad[0]:pad[0] + height, pad[1]:pad[1] + width] = x.transpose(0, 2, 3, 1)
    return padded


def _from_channels_last(yh, out, bias=None):
    """out (num, C, H, W) = yh (num, >= H, >= W, C) moved channels-first (+ bias); True when done here."""
    if not (cpu.usable(yh, out) and out.flags.c_contiguous and yh.base is not None):
        return False
    full = yh.base if yh.base.ndim == 4 else None
    if full is None or not full.flags.c_contiguous or full.shape[0] != out.shape[0] or full.shape[3] != out.shape[1]:
        return False
    cpu.kernels("winograd").from_channels_last(full, full[0, 0, 0] if bias is None else bias.reshape(-1),
                                               bias is not None, out)
    return True


# Rotating a 3-tap filter by 180 degrees swaps rows 0 and 3 of G g (row 1 and 2 are symmetric), so the
# bottom-diff pass reuses the forward's transformed filters with this permutation of the 16 positions.
_ROTATED = np.array([[3, 1, 2, 0][i] * 4 + [3, 1, 2, 0][j] for i in range(4) for j in range(4)])


class WinogradConvolution:
    """3x3 stride-1 convolution (Caffe's cross-correlation) with forward and backward, like the layer's.

    The transformed input and filters of the last forward are kept for the
    backward that follows (recomputed when absent); `release()` drops them.
    """

    def __init__(self, pad, group=1):
        self.pad, self.group = tuple(pad), group
        self.release()

    def release(self):
        self.v = self.tiles = self.u = None

    def _conv(self, x, u, pad, transposed=False, permutation=None):
        """x (num, C, H, W) -> channels-last (num, oh, ow, out), and the transformed input."""
        height, width = x.shape[2:]
        th, tw = _tiles(height, pad[0]), _tiles(width, pad[1])
        v, tiles = _input_transform_padded(_padded_channels_last(x, pad, th, tw), th, tw)
        m = _products(v, u, self.group, transposed, permutation)
        out_shape = (height + 2 * pad[0] - 2, width + 2 * pad[1] - 2)
        return output_transform(m, x.shape[0], tiles, out_shape), v, tiles

    def forward(self, x, weight, bias=None, out=None):
        """top (num, out, oh, ow) for bottom x (num, in, H, W) and weights (out, in / group, 3, 3).

        Writes into `out` when given (and returns it).
        """
        xp = get_array_module(x)
        self.u = filter_transform(weight)
        yh, self.v, self.tiles = self._conv(x, self.u, self.pad)
        y = yh.transpose(0, 3, 1, 2)
        if out is None:
            out = xp.empty(y.shape, dtype=y.dtype)
        if _from_channels_last(yh, out, bias):
            return out
        if bias is None:
            out[...] = y
        else:
            xp.add(y, bias.reshape(1, -1, 1, 1), out=out)
        return out

    def backward(self, x, dy, weight, weight_diff=None, bias_diff=None, need_bottom=True, out=None):
        """Adds into weight_diff / bias_diff when given; returns the bottom diff (or None).

        The bottom diff is written into `out` when given (and `out` returned).
        """
        xp = get_array_module(dy)
        if bias_diff is not None:
            bias_diff += dy.sum(axis=(0, 2, 3))
        if weight_diff is not None:
            v, tiles = self.v, self.tiles
            if v is None:
                v, tiles = input_transform(_to_channels_last(x), self.pad)
            if cpu.usable(dy) and dy.flags.c_contiguous:
                dyh = _padded_channels_last(dy, (0, 0), tiles[0] - 1, tiles[1] - 1)[:, :2 * tiles[0], :2 * tiles[1]]
                dyh = dyh if dyh.flags.c_contiguous else xp.ascontiguousarray(dyh)
            else:
                dyh = _to_channels_last(dy)
            dm = output_transform_adjoint(dyh, tiles)
            if self.group == 1:
                du = products.for_module(xp)(dm.swapaxes(1, 2), v)
            else:
                du = xp.empty((16, weight.shape[0], weight.shape[1]), dtype=dy.dtype)
                for mout, vin in zip(_group_slices(dm.shape[2], self.group), _group_slices(v.shape[2], self.group)):
                    du[:, mout] = products.for_module(xp)(dm[:, :, mout].swapaxes(1, 2), v[:, :, vin])
            del dm
            filter_transform_adjoint(du, out=weight_diff)
        u = self.u if self.u is not None else filter_transform(weight)
        self.release()
        if not need_bottom:
            return None
        # Bottom diff: full correlation with the rotated filters, channels swapped within each group.
        g, og, cg = self.group, weight.shape[0] // self.group, weight.shape[1]
        pad = (2 - self.pad[0], 2 - self.pad[1])
        if g == 1:  # the rotated filters' transpose is the permuted U itself: no transposing copy
            dxh, _, _ = self._conv(dy, u, pad, transposed=True, permutation=_ROTATED)
        else:
            rotated = u[xp.asarray(_ROTATED)].reshape(16, g, og, cg).swapaxes(2, 3).reshape(16, g * cg, og)
            dxh, _, _ = self._conv(dy, rotated, pad)
        dx = dxh.transpose(0, 3, 1, 2)
        if out is None:
            return xp.ascontiguousarray(dx)
        if not _from_channels_last(dxh, out):
            out[...] = dx
        return out
