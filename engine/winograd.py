"""Winograd convolution: the Convolution layer's path for 3x3 and 5x5, stride-1 kernels.

im2col + GEMM spends 2 * 9 * C multiply-adds per output and copies the input
nine times. Winograd's minimal filtering (Lavin & Gray, 2016) computes each
2x2 output tile from a 4x4 input tile with 16 products instead of 36: the
transforms are additions on whole-batch arrays, and the products are 16
GEMMs of (num_output x channels) by (channels x tiles), 2.25 times fewer
flops, on an input copy four (not nine) times the input size. A 5x5 kernel
takes F(2x2, 5x5): 6x6 tiles, 36 GEMMs instead of 100 products per 2x2
outputs, with matrices built by toom_cook() at the points 0, +-1, +-2 and
infinity (the Tiling class); F(2x2, 3x3) keeps its own written-out adds.

All three passes go through the same transforms:
- forward:       Y  = A^T [ U . V ] A,  U = G w G^T,  V = B^T d B
- bottom diff:   the same routine on the top diff with the filters rotated
                 by 180 degrees and channels swapped, padding k - 1 - pad
- weight diff:   dU = A dY A^T contracted with V over tiles; dw = G^T dU G

Arrays are channels-last (num, H, W, channels) inside, so every transform
step runs along rows of `channels` contiguous values (a tile's width is only
a few values: tile-major layouts spend their time in NumPy's per-row
overhead), and each of the products is one GEMM over the batch (or a chunk).
The entry points take and return Caffe's (num, channels, H, W), and write
into the caller's arrays when given them. One body serves NumPy and CuPy
(engine.backend.get_array_module). float32 error stays near 1e-6 relative
for 3x3 and under 1e-5 for 5x5 (tests/engine/test_winograd.py checks
against im2col and a direct convolution in float64). On the CPU the
transforms and the moves to and from channels-last run as kernels with the
same additions (engine/cpu/winograd.py). The whole-batch arrays are four
(3x3) or nine (5x5) times the input, so the CPU path goes through them in
chunks of tile rows, each chunk from input to output while it is in a core's
cache, the threads taking chunks in turn (Tiling.convolve,
Tiling.weight_diff); layers with large transformed filters, which every
chunk would read again, keep the whole-batch products.
"""

import math
from fractions import Fraction

import numpy as np

from . import cpu
from .cpu import products
from .backend import get_array_module

# The CPU kernels' path (Tiling.convolve, Tiling.weight_diff) takes tile rows in chunks whose transformed tiles
# take about this many bytes, so that a chunk stays in a core's cache from one step to the next (cifar10_quick's
# conv2, one thread: 21 ms forward as whole-batch passes through memory, 12 ms in chunks of 1 MiB).
CHUNK_BYTES = 1 << 20
MIN_CHUNKS = 8
# ... and the weight diff adds up its chunks' products in this many fixed groups (its memory: one dU each).
WEIGHT_DIFF_PARTS = 8

def supported(kernel, stride, dilation, pad):
    """Geometry this path computes: 2-D 3x3 or 5x5, stride 1, no dilation, pad 0..k-1 (for the bottom diff)."""
    kernel = tuple(kernel)
    return (kernel in ((3, 3), (5, 5)) and tuple(stride) == (1, 1) and tuple(dilation) == (1, 1)
            and len(tuple(pad)) == 2 and all(0 <= p < kernel[0] for p in pad))


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
    if cpu.usable(du) and (out is None or (cpu.usable(out) and out.dtype == du.dtype and out.flags.c_contiguous)):
        taps = xp.zeros((du.shape[1], 9), dtype=du.dtype) if out is None else out.reshape(-1, 9)
        cpu.kernels("winograd").filter_transform_adjoint(du, taps)
        return taps.reshape(out_channels, in_channels, 3, 3) if out is None else out
    q = xp.empty((9, du.shape[1]), dtype=du.dtype)
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


def _products(v, u, group, transposed=False, permutation=None, matmul=None, out=None):
    """M (16, T, out) = V (16, T, in) @ U^T per group, U (16, out, in / group); into `out` when given.

    `transposed`: `u` is given as U^T (16, in, out), group 1 only; then
    `permutation` (when given) takes U^T[k] from u[permutation[k]] (a
    stack-permuted copy of a large U costs as much as a product).
    `matmul`: the product function (default: engine.cpu.products' split
    one for NumPy arrays, the array module's for others).
    """
    xp = get_array_module(v)
    matmul = matmul or products.for_module(xp)
    if transposed:
        if permutation is None:
            return matmul(v, u) if out is None else matmul(v, u, out=out)
        if out is None:
            return products.matmul_indexed(v, u, permutation)
        for k, source in enumerate(permutation):
            matmul(v[k], u[source], out=out[k])
        return out
    if group == 1:
        u = u.swapaxes(1, 2)
        return matmul(v, u) if out is None else matmul(v, u, out=out)
    m = xp.empty(v.shape[:2] + (u.shape[1],), dtype=v.dtype) if out is None else out
    for vin, uout in zip(_group_slices(v.shape[2], group), _group_slices(u.shape[1], group)):
        m[:, :, uout] = matmul(v[:, :, vin], u[:, uout].swapaxes(1, 2))
    return m


def _padded_channels_last(x, pad, size):
    """x (num, C, H, W) zero-padded into channels-last (num, size[0], size[1], C), x at (pad[0], pad[1])."""
    xp = get_array_module(x)
    num, channels, height, width = x.shape
    if cpu.usable(x) and x.flags.c_contiguous:
        padded = xp.empty((num,) + tuple(size) + (channels,), dtype=x.dtype)
        cpu.kernels("winograd").to_column_phases(x, pad[0], pad[1], padded.reshape(num, size[0], 1, size[1], channels))
        return padded
    padded = xp.zeros((num,) + tuple(size) + (channels,), dtype=x.dtype)
    padded[:, pad[0]:pad[0] + height, pad[1]:pad[1] + width] = x.transpose(0, 2, 3, 1)
    return padded


# Finite interpolation points of the Toom-Cook constructions, in the order taken (infinity is the last
# point of every one): small integers first, which keep the transforms' coefficients small and exact.
_POINTS = (Fraction(0), Fraction(1), Fraction(-1), Fraction(2), Fraction(-2), Fraction(1, 2), Fraction(-1, 2))


def _inverse(matrix):
    """The inverse of a square matrix of Fractions (Gauss-Jordan, exact)."""
    size = len(matrix)
    rows = [list(row) + [Fraction(int(i == j)) for j in range(size)] for i, row in enumerate(matrix)]
    for col in range(size):
        pivot = next(r for r in range(col, size) if rows[r][col] != 0)
        rows[col], rows[pivot] = rows[pivot], rows[col]
        scale = rows[col][col]
        rows[col] = [value / scale for value in rows[col]]
        for r in range(size):
            if r != col and rows[r][col] != 0:
                factor = rows[r][col]
                rows[r] = [a - factor * b for a, b in zip(rows[r], rows[col])]
    return [row[size:] for row in rows]


def toom_cook(m, r):
    """(A^T (m, n), G (n, r), B^T (n, n)), n = m + r - 1, of Winograd's minimal filtering F(m, r).

    The correlation y_i = sum_k g_k d_(i+k) of m outputs is y = A^T [(G g) * (B^T d)]: the transpose of
    the polynomial product evaluated at n - 1 points and infinity and interpolated back (Lavin & Gray,
    2016). Each row of B^T is scaled to coprime integers, its row of G by the inverse, so that the input
    transform (the largest) adds small integer multiples.
    """
    n = m + r - 1
    if n - 1 > len(_POINTS):
        raise ValueError(f"F({m}, {r}) needs {n - 1} finite points; _POINTS has {len(_POINTS)}")
    points = _POINTS[:n - 1]
    # Evaluation at the points (and infinity: the leading coefficient) of a polynomial of `degree` terms.
    evaluate = lambda degree: [[p ** k for k in range(degree)] for p in points] + [  # noqa: E731
        [Fraction(int(k == degree - 1)) for k in range(degree)]]
    a, g = evaluate(m), evaluate(r)
    bt = [list(row) for row in zip(*_inverse(evaluate(n)))]  # (V^-1)^T: interpolation, transposed
    for j, row in enumerate(bt):
        scale = Fraction(math.lcm(*(value.denominator for value in row)),
                         math.gcd(*(value.numerator for value in row)))
        bt[j] = [value * scale for value in row]
        g[j] = [value / scale for value in g[j]]
    as_array = lambda rows: np.array([[float(value) for value in row] for row in rows])  # noqa: E731
    return as_array(list(zip(*a))), as_array(g), as_array(bt)


def _combine(xp, coefs, sources, out):
    """out = sum of coef * source over the nonzero coefs, in order: the kernels' additions (engine/cpu)."""
    first = True
    for coef, source in zip(coefs, sources):
        if coef == 0:
            continue
        coef = out.dtype.type(coef)  # float32 arrays stay float32, as in the kernels
        if first:
            xp.multiply(source, coef, out=out)
            first = False
        else:
            out += coef * source
    if first:
        out[...] = 0


class Tiling:
    """Winograd F(m x m, r x r): m x m outputs from each n x n input tile (n = m + r - 1), tiles every m.

    The transforms through the matrices of toom_cook(m, r), on whole-batch
    channels-last NumPy or CuPy arrays. A tiling with CPU kernels
    (`kernels`: their names' suffix in engine/cpu/winograd.py) runs whole
    convolutions on NumPy arrays through them instead (convolve,
    weight_diff), chunk by chunk, with the same additions in the same order
    (the same numbers), on inputs and outputs whose columns are split by
    parity (to_column_phases): there a step of a transform is one loop over
    a whole row of tiles.
    """

    def __init__(self, m, r, kernels=None):
        self.m, self.r, self.n = m, r, m + r - 1
        self.at, self.g, self.bt = toom_cook(m, r)
        self.kernels = kernels

    def _kernels(self, *arrays):
        """engine/cpu/winograd.py when this tiling has kernels and they serve `arrays`, else None."""
        if self.kernels and cpu.usable(*arrays) and all(a.flags.c_contiguous for a in arrays):
            return cpu.kernels("winograd")
        return None

    def tiles(self, size, pad):
        """Tiles along an axis of `size` inputs padded by `pad` on each side."""
        return -(-(size + 2 * pad - self.r + 1) // self.m)

    def padded_size(self, tiles):
        """Inputs the tiles read along an axis."""
        return self.m * tiles + self.r - 1

    # -- filters ----------------------------------------------------------------------------
    def filter_transform(self, weight):
        """U (n^2, out, in) = G w G^T for weights (out, in, r, r), computed in float64."""
        xp = get_array_module(weight)
        g = xp.asarray(self.g)
        t = xp.tensordot(weight.astype(np.float64), g, axes=([3], [1]))  # (out, in, k, b)
        u = xp.tensordot(g, t, axes=([1], [2]))  # (a, out, in, b)
        u = u.transpose(0, 3, 1, 2).reshape((self.n * self.n,) + weight.shape[:2])
        return xp.ascontiguousarray(u.astype(weight.dtype))

    def filter_transform_adjoint(self, du, out=None):
        """dw (out, in, r, r) = G^T dU G from dU (n^2, out, in); added into `out` when given (and `out` returned)."""
        xp = get_array_module(du)
        g = xp.asarray(self.g)
        t = xp.tensordot(g, du.astype(np.float64).reshape((self.n, self.n) + du.shape[1:]), axes=([0], [0]))
        dw = xp.tensordot(t, g, axes=([1], [0])).transpose(1, 2, 0, 3)  # t: (k, b, out, in); dw: (out, in, k, l)
        if out is None:
            return xp.ascontiguousarray(dw.astype(du.dtype))
        out += dw.astype(out.dtype)
        return out

    def rotated_filters(self, u, weight, group):
        """(filters, transposed, permutation) for _products in the bottom-diff pass: the transformed filters
        rotated by 180 degrees with channels swapped within each group."""
        out_channels, per_group = weight.shape[:2]
        r = self.r
        rotated = weight.reshape(group, out_channels // group, per_group, r, r)[:, :, :, ::-1, ::-1]
        rotated = rotated.swapaxes(1, 2).reshape(group * per_group, out_channels // group, r, r)
        return self.filter_transform(rotated), False, None

    # -- data -------------------------------------------------------------------------------
    def transform_input(self, x, pad):
        """(V (n^2, num * tiles, C), (th, tw)): B^T d B over the n x n tiles of x (num, C, H, W) padded by `pad`."""
        xp = get_array_module(x)
        n, m = self.n, self.m
        num, channels, height, width = x.shape
        th, tw = self.tiles(height, pad[0]), self.tiles(width, pad[1])
        size = (self.padded_size(th), self.padded_size(tw))
        v = xp.empty((n, n, num, th, tw, channels), dtype=x.dtype)
        padded = _padded_channels_last(x, pad, size)
        d = [[padded[:, a:a + m * (th - 1) + 1:m, b:b + m * (tw - 1) + 1:m] for b in range(n)] for a in range(n)]
        r = xp.empty_like(v)
        for b in range(n):  # B^T down each column of the tile
            for i in range(n):
                _combine(xp, self.bt[i], [d[a][b] for a in range(n)], r[i, b])
        for i in range(n):  # ... then along each row
            for j in range(n):
                _combine(xp, self.bt[j], [r[i, b] for b in range(n)], v[i, j])
        return v.reshape(n * n, num * th * tw, channels), (th, tw)

    def transform_output(self, mm, num, tiles):
        """A^T M A from M (n^2, num * tiles, out): the outputs of every tile, for write_output."""
        xp = get_array_module(mm)
        n, m = self.n, self.m
        th, tw = tiles
        mm = mm.reshape(n, n, num, th, tw, mm.shape[-1])
        y = xp.empty((num, m * th, m * tw, mm.shape[-1]), dtype=mm.dtype)
        s = xp.empty((m, n) + mm.shape[2:], dtype=mm.dtype)
        for i in range(n):  # A^T along each row
            for q in range(m):
                _combine(xp, self.at[q], [mm[i, j] for j in range(n)], s[q, i])
        for q in range(m):  # ... and down the columns
            for p in range(m):
                _combine(xp, self.at[p], [s[q, i] for i in range(n)], y[:, p::m, q::m])
        return y

    def write_output(self, y, out, bias=None):
        """out (num, out, H, W) = transform_output's outputs cut to H x W, channels first (+ bias)."""
        _write_channels_last(y, out, bias)

    def transform_top_diff(self, dy, tiles):
        """dM (n^2, num * tiles, out) = A dY A^T from the top diff dy (num, out, oh, ow)."""
        xp = get_array_module(dy)
        n, m = self.n, self.m
        th, tw = tiles
        num, out_channels = dy.shape[:2]
        dm = xp.empty((n, n, num, th, tw, out_channels), dtype=dy.dtype)
        dyh = _padded_channels_last(dy, (0, 0), (m * th, m * tw))
        a = self.at.T
        t = xp.empty((n, m, num, th, tw, out_channels), dtype=dy.dtype)
        for p in range(m):  # A along the tile's rows
            for j in range(n):
                _combine(xp, a[j], [dyh[:, p::m, q::m] for q in range(m)], t[j, p])
        for i in range(n):  # ... and along its columns
            for j in range(n):
                _combine(xp, a[i], [t[j, p] for p in range(m)], dm[i, j])
        return dm.reshape(n * n, num * th * tw, out_channels)

    # -- the CPU kernels' path: chunk by chunk ------------------------------------------------
    def in_chunks(self, weight, *arrays):
        """Whether convolve and weight_diff serve weights of `weight`'s shape on `arrays`: this tiling's CPU
        kernels serve them, and the transformed filters take at most half a chunk (every chunk's products
        read them all: larger ones are read once by the whole-batch products instead)."""
        filter_bytes = self.n ** 2 * weight.shape[0] * weight.shape[1] * weight.itemsize
        return filter_bytes <= CHUNK_BYTES // 2 and self._kernels(*arrays) is not None

    def input_phases(self, x, pad):
        """(phases, tiles): x (num, C, H, W) zero-padded by `pad` to the tiles' inputs, channels-last, its
        columns split by parity (N, m th + r - 1, 2, (m tw + r - 1) / 2, C), as the kernels read it."""
        tiles = self.tiles(x.shape[2], pad[0]), self.tiles(x.shape[3], pad[1])
        size = (self.padded_size(tiles[0]), self.padded_size(tiles[1]))
        phases = np.empty((x.shape[0], size[0], 2, size[1] // 2, x.shape[1]), dtype=x.dtype)
        cpu.kernels("winograd").to_column_phases(x, pad[0], pad[1], phases)
        return phases, tiles

    def _chunks(self, rows, tw, channels, itemsize):
        """Consecutive ranges of tile rows whose n^2 transformed tiles take about CHUNK_BYTES, and at least
        MIN_CHUNKS ranges where there are as many rows (work for every thread; the shape alone decides)."""
        size = max(1, min(CHUNK_BYTES // (self.n ** 2 * tw * channels * itemsize), -(-rows // MIN_CHUNKS)))
        return [range(start, min(start + size, rows)) for start in range(0, rows, size)]

    def convolve(self, x, pad, filters, group, out, bias=None, transposed=False, permutation=None):
        """out (num, out, oh, ow) = x (num, C, H, W) correlated with the transformed `filters` (as _products
        takes them) (+ bias); returns (x's column phases, tiles) for weight_diff.

        Each chunk of tile rows goes through the input transform, the n^2 products and the output transform
        while it is in cache, the threads of engine/cpu/products.py's pool taking chunks in turn; the numbers
        are those of the whole-batch passes above (each output is the same sum).
        """
        kernels = cpu.kernels("winograd")
        num, channels = x.shape[:2]
        outputs = out.shape[1]
        phases, tiles = self.input_phases(x, pad)
        th, tw = tiles
        y = np.empty((num, self.m * th, 2, tw, outputs), dtype=x.dtype)
        chunks = self._chunks(num * th, tw, max(channels, outputs), x.itemsize)
        transform_input = getattr(kernels, f"input_transform_{self.kernels}")
        transform_output = getattr(kernels, f"output_transform_{self.kernels}")
        nn = self.n ** 2

        def run(indices):
            v_space = _chunk_space(chunks, nn * tw * channels, x)
            m_space = _chunk_space(chunks, nn * tw * outputs, x)
            for chunk in map(chunks.__getitem__, indices):
                rows = len(chunk)
                v = v_space[:nn * rows * tw * channels].reshape(self.n, self.n, rows, tw * channels)
                transform_input(phases, chunk.start, v)
                m = m_space[:nn * rows * tw * outputs].reshape(nn, rows * tw, outputs)
                _products(v.reshape(nn, rows * tw, channels), filters, group, transposed, permutation,
                          matmul=np.matmul, out=m)
                transform_output(m.reshape(self.n, self.n, rows, tw * outputs), chunk.start, y)

        products.in_turns(len(chunks), run, minimum=num * th * tw * nn * channels * outputs // group)
        kernels.from_column_phases(y, y[0, 0, 0, 0] if bias is None else bias.reshape(-1), bias is not None, out)
        return phases, tiles

    def weight_diff(self, phases, tiles, dy, group):
        """dU (n^2, out, in / group) = dM^T V summed over the tiles, from convolve's input phases and the top
        diff dy (num, out, oh, ow).

        The chunks' sums are added up in WEIGHT_DIFF_PARTS fixed groups of chunks, then the groups in order:
        the numbers depend on the shapes only, not on the thread count.
        """
        kernels = cpu.kernels("winograd")
        th, tw = tiles
        num, outputs = dy.shape[:2]
        channels = phases.shape[-1]
        dy_phases = np.empty((num, self.m * th, 2, tw, outputs), dtype=dy.dtype)
        kernels.to_column_phases(dy, 0, 0, dy_phases)
        chunks = self._chunks(num * th, tw, max(channels, outputs), dy.itemsize)
        parts = _parts(len(chunks), WEIGHT_DIFF_PARTS)
        transform_input = getattr(kernels, f"input_transform_{self.kernels}")
        adjoint = getattr(kernels, f"output_transform_adjoint_{self.kernels}")
        nn = self.n ** 2
        sums = np.zeros((len(parts), nn, outputs, channels // group), dtype=dy.dtype)

        def run(indices):
            v_space = _chunk_space(chunks, nn * tw * channels, dy)
            dm_space = _chunk_space(chunks, nn * tw * outputs, dy)
            for index in indices:
                for chunk in chunks[parts[index]]:
                    rows = len(chunk)
                    v = v_space[:nn * rows * tw * channels].reshape(self.n, self.n, rows, tw * channels)
                    transform_input(phases, chunk.start, v)
                    dm = dm_space[:nn * rows * tw * outputs].reshape(self.n, self.n, rows, tw * outputs)
                    adjoint(dy_phases, chunk.start, dm)
                    v, dm = v.reshape(nn, rows * tw, channels), dm.reshape(nn, rows * tw, outputs)
                    for mout, vin in zip(_group_slices(outputs, group), _group_slices(channels, group)):
                        sums[index, :, mout] += np.matmul(dm[:, :, mout].swapaxes(1, 2), v[:, :, vin])

        products.in_turns(len(parts), run, minimum=num * th * tw * nn * channels * outputs // group)
        du = sums[0]
        for index in range(1, len(parts)):
            du += sums[index]
        return du


def _chunk_space(chunks, per_row, like):
    """A flat buffer for the largest of `chunks` at `per_row` values a tile row."""
    return np.empty(max(len(chunk) for chunk in chunks) * per_row, dtype=like.dtype)


def _parts(size, count):
    """range(size) cut into min(size, count) consecutive slices of near-equal length."""
    count = max(1, min(size, count))
    return [slice(size * index // count, size * (index + 1) // count) for index in range(count)]


def _write_channels_last(yh, out, bias=None):
    """out (num, C, H, W) = yh (num, >= H, >= W, C) cut to H x W and moved channels-first (+ bias)."""
    xp = get_array_module(yh)
    if cpu.usable(yh, out) and out.flags.c_contiguous and yh.flags.c_contiguous:
        phases = yh.reshape(yh.shape[:2] + (1,) + yh.shape[2:])  # channels-last: one column phase
        cpu.kernels("winograd").from_column_phases(phases, yh[0, 0, 0] if bias is None else bias.reshape(-1),
                                                   bias is not None, out)
        return
    y = yh[:, :out.shape[2], :out.shape[3]].transpose(0, 3, 1, 2)
    if bias is None:
        out[...] = y
    else:
        xp.add(y, bias.reshape(1, -1, 1, 1), out=out)


# Rotating a 3-tap filter by 180 degrees swaps rows 0 and 3 of G g (row 1 and 2 are symmetric), so the
# bottom-diff pass reuses the forward's transformed filters with this permutation of the 16 positions.
_ROTATED = np.array([[3, 1, 2, 0][i] * 4 + [3, 1, 2, 0][j] for i in range(4) for j in range(4)])


class _F2x2And3x3(Tiling):
    """F(2x2, 3x3) through the module's functions above: its additions written out, exact in G."""

    def __init__(self):
        super().__init__(2, 3, kernels="f2x3")

    def filter_transform(self, weight):
        return filter_transform(weight)

    def filter_transform_adjoint(self, du, out=None):
        return filter_transform_adjoint(du, out=out)

    def rotated_filters(self, u, weight, group):
        if group == 1:  # the rotated filters' transpose is the permuted U itself: no transposing copy
            return u, True, _ROTATED
        xp = get_array_module(u)
        og, cg = weight.shape[0] // group, weight.shape[1]
        return u[xp.asarray(_ROTATED)].reshape(16, group, og, cg).swapaxes(2, 3).reshape(16, group * cg, og), \
            False, None

    def transform_input(self, x, pad):
        th, tw = _tiles(x.shape[2], pad[0]), _tiles(x.shape[3], pad[1])
        return _input_transform_padded(_padded_channels_last(x, pad, (2 * th + 2, 2 * tw + 2)), th, tw)

    def transform_output(self, mm, num, tiles):
        return output_transform(mm, num, tiles, (2 * tiles[0], 2 * tiles[1]))

    def transform_top_diff(self, dy, tiles):
        return output_transform_adjoint(_padded_channels_last(dy, (0, 0), (2 * tiles[0], 2 * tiles[1])), tiles)


# The tiling each kernel size takes. F(2x2, 5x5) spends 36 products per 4 outputs where im2col spends 100,
# on 6x6 tiles whose points (0, +-1, +-2, infinity) keep float32 errors near F(2x2, 3x3)'s.
TILINGS = {3: _F2x2And3x3(), 5: Tiling(2, 5, kernels="f2x5")}


class WinogradConvolution:
    """3x3 or 5x5 stride-1 convolution (Caffe's cross-correlation) with forward and backward, like the layer's.

    The transformed input (on the CPU kernels' chunked path: the input's
    column phases) and filters of the last forward are kept for the backward
    that follows (recomputed when absent); `release()` drops them.
    """

    def __init__(self, pad, group=1, kernel=3):
        self.pad, self.group = tuple(pad), group
        self.tiling = TILINGS[kernel]
        self.release()

    def release(self):
        self.v = self.phases = self.tiles = self.u = None

    def _conv(self, x, weight, u, pad, out, bias=None, transposed=False, permutation=None):
        """out (num, out, oh, ow) = x (num, C, H, W) correlated (+ bias); returns (the transformed input or,
        chunked, None; x's column phases or None; tiles)."""
        if self.tiling.in_chunks(weight, x, out):
            phases, tiles = self.tiling.convolve(x, pad, u, self.group, out, bias, transposed, permutation)
            return None, phases, tiles
        v, tiles = self.tiling.transform_input(x, pad)
        m = _products(v, u, self.group, transposed, permutation)
        self.tiling.write_output(self.tiling.transform_output(m, x.shape[0], tiles), out, bias)
        return v, None, tiles

    def forward(self, x, weight, bias=None, out=None):
        """top (num, out, oh, ow) for bottom x (num, in, H, W) and weights (out, in / group, k, k).

        Writes into `out` when given (and returns it).
        """
        xp = get_array_module(x)
        r = self.tiling.r
        if out is None:
            out = xp.empty((x.shape[0], weight.shape[0], x.shape[2] + 2 * self.pad[0] - r + 1,
                            x.shape[3] + 2 * self.pad[1] - r + 1), dtype=x.dtype)
        self.u = self.tiling.filter_transform(weight)
        self.v, self.phases, self.tiles = self._conv(x, weight, self.u, self.pad, out, bias)
        return out

    def backward(self, x, dy, weight, weight_diff=None, bias_diff=None, need_bottom=True, out=None):
        """Adds into weight_diff / bias_diff when given; returns the bottom diff (or None).

        The bottom diff is written into `out` when given (and `out` returned).
        """
        xp = get_array_module(dy)
        tiling = self.tiling
        if bias_diff is not None:
            bias_diff += dy.sum(axis=(0, 2, 3))
        if weight_diff is not None and tiling.in_chunks(weight, x, dy):
            phases, tiles = self.phases, self.tiles
            if phases is None:
                phases, tiles = tiling.input_phases(x, self.pad)
            tiling.filter_transform_adjoint(tiling.weight_diff(phases, tiles, dy, self.group), out=weight_diff)
        elif weight_diff is not None:
            v, tiles = self.v, self.tiles
            if v is None:
                v, tiles = tiling.transform_input(x, self.pad)
            dm = tiling.transform_top_diff(dy, tiles)
            if self.group == 1:
                du = products.for_module(xp)(dm.swapaxes(1, 2), v)
            else:
                du = xp.empty((dm.shape[0], weight.shape[0], weight.shape[1]), dtype=dy.dtype)
                for mout, vin in zip(_group_slices(dm.shape[2], self.group), _group_slices(v.shape[2], self.group)):
                    du[:, mout] = products.for_module(xp)(dm[:, :, mout].swapaxes(1, 2), v[:, :, vin])
            del dm
            tiling.filter_transform_adjoint(du, out=weight_diff)
        u = self.u if self.u is not None else tiling.filter_transform(weight)
        self.release()
        if not need_bottom:
            return None
        # Bottom diff: full correlation with the rotated filters, channels swapped within each group.
        if out is None:
            out = xp.empty(x.shape, dtype=dy.dtype)
        pad = (tiling.r - 1 - self.pad[0], tiling.r - 1 - self.pad[1])
        filters, transposed, permutation = tiling.rotated_filters(u, weight, self.group)
        self._conv(dy, weight, filters, pad, out, transposed=transposed, permutation=permutation)
        return out
