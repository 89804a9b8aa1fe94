"""Winograd transforms and channels-last moves for engine/winograd.py.

The transforms take and give engine/winograd.py's arrays, tile by tile with
the channels innermost (the filter transforms: filter by filter), and do
the NumPy code's additions in its order, so that the numbers are the same
bit for bit; only the GEMMs between them stay with BLAS. F(2x2, 3x3)'s
kernels and the moves thread over tile rows (prange); F(2x2, 5x5)'s
transforms take one chunk of tile rows on the calling thread. The kernels of
F(2x2, 3x3) and F(2x2, 5x5) are written out with their matrices' additions
(one loop per output over a row of channels, which LLVM vectorizes: a loop
that reads a matrix from memory, or writes many outputs, runs several times
slower).
"""

import numpy as np
from numba import njit, prange

from . import OPTIONS
from .threads import light


@njit(**OPTIONS)
def input_transform(padded, v):
    """v (4, 4, N, th, tw, C) = B^T d B over the 4x4 tiles (stride 2) of padded (N, 2 th + 2, 2 tw + 2, C).

    Each channel loop writes one output row from at most two inputs, so that LLVM
    vectorizes it (with many outputs in one loop it gives up on the aliasing checks).
    """
    num, th, tw, channels = v.shape[2], v.shape[3], v.shape[4], v.shape[5]
    for task in prange(num * th):
        n = task // th
        ty = task % th
        r = np.empty((4, 4, channels), dtype=v.dtype)
        rows = padded[n, 2 * ty:2 * ty + 4]
        for tx in range(tw):
            w = 2 * tx
            for b in range(4):  # B^T down each column: (d0 - d2, d1 + d2, d2 - d1, d1 - d3)
                d0, d1, d2, d3 = rows[0, w + b], rows[1, w + b], rows[2, w + b], rows[3, w + b]
                r0, r1, r2, r3 = r[0, b], r[1, b], r[2, b], r[3, b]
                for c in range(channels):
                    r0[c] = d0[c] - d2[c]
                for c in range(channels):
                    r1[c] = d1[c] + d2[c]
                for c in range(channels):
                    r2[c] = d2[c] - d1[c]
                for c in range(channels):
                    r3[c] = d1[c] - d3[c]
            for i in range(4):  # ... then along each row: (r0 - r2, r1 + r2, r2 - r1, r1 - r3)
                q0, q1, q2, q3 = r[i, 0], r[i, 1], r[i, 2], r[i, 3]
                o0, o1, o2, o3 = v[i, 0, n, ty, tx], v[i, 1, n, ty, tx], v[i, 2, n, ty, tx], v[i, 3, n, ty, tx]
                for c in range(channels):
                    o0[c] = q0[c] - q2[c]
                for c in range(channels):
                    o1[c] = q1[c] + q2[c]
                for c in range(channels):
                    o2[c] = q2[c] - q1[c]
                for c in range(channels):
                    o3[c] = q1[c] - q3[c]


@njit(**OPTIONS)
def output_transform(m, y):
    """y (N, 2 th, 2 tw, O) = A^T M A from m (4, 4, N, th, tw, O)."""
    num, th, tw, channels = m.shape[2], m.shape[3], m.shape[4], m.shape[5]
    for task in prange(num * th):
        n = task // th
        ty = task % th
        s = np.empty((4, 2, channels), dtype=y.dtype)
        for tx in range(tw):
            for i in range(4):  # A^T along each row: (m0 + m1 + m2, m1 - m2 - m3)
                m0, m1, m2, m3 = m[i, 0, n, ty, tx], m[i, 1, n, ty, tx], m[i, 2, n, ty, tx], m[i, 3, n, ty, tx]
                s0, s1 = s[i, 0], s[i, 1]
                for c in range(channels):
                    s0[c] = m0[c] + m1[c]
                for c in range(channels):
                    s0[c] = s0[c] + m2[c]
                for c in range(channels):
                    s1[c] = m1[c] - m2[c]
                for c in range(channels):
                    s1[c] = s1[c] - m3[c]
            for q in range(2):  # ... and down the columns: (s0 + s1 + s2, s1 - s2 - s3)
                top, low = y[n, 2 * ty, 2 * tx + q], y[n, 2 * ty + 1, 2 * tx + q]
                a0, a1, a2, a3 = s[0, q], s[1, q], s[2, q], s[3, q]
                for c in range(channels):
                    top[c] = a0[c] + a1[c]
                for c in range(channels):
                    top[c] = top[c] + a2[c]
                for c in range(channels):
                    low[c] = a1[c] - a2[c]
                for c in range(channels):
                    low[c] = low[c] - a3[c]


@njit(**OPTIONS)
def output_transform_adjoint(dy, dm):
    """dm (4, 4, N, th, tw, O) = A dY A^T from the channels-last top diff dy (N, 2 th, 2 tw, O)."""
    num, th, tw, channels = dm.shape[2], dm.shape[3], dm.shape[4], dm.shape[5]
    for task in prange(num * th):
        n = task // th
        ty = task % th
        t = np.empty((4, 2, channels), dtype=dm.dtype)
        for tx in range(tw):
            for q in range(2):  # A along the tile's rows: (y0, y0 + y1, y0 - y1, -y1)
                y0, y1 = dy[n, 2 * ty, 2 * tx + q], dy[n, 2 * ty + 1, 2 * tx + q]
                t0, t1, t2, t3 = t[0, q], t[1, q], t[2, q], t[3, q]
                for c in range(channels):
                    t0[c] = y0[c]
                for c in range(channels):
                    t1[c] = y0[c] + y1[c]
                for c in range(channels):
                    t2[c] = y0[c] - y1[c]
                for c in range(channels):
                    t3[c] = -y1[c]
            for i in range(4):  # ... and along its columns
                a, b = t[i, 0], t[i, 1]
                o0, o1, o2, o3 = dm[i, 0, n, ty, tx], dm[i, 1, n, ty, tx], dm[i, 2, n, ty, tx], dm[i, 3, n, ty, tx]
                for c in range(channels):
                    o0[c] = a[c]
                for c in range(channels):
                    o1[c] = a[c] + b[c]
                for c in range(channels):
                    o2[c] = a[c] - b[c]
                for c in range(channels):
                    o3[c] = -b[c]


# Filters per task of the filter transforms (a task's rows stay in cache between its steps).
_FILTERS_PER_TASK = 2048


@njit(**OPTIONS)
def filter_transform(g, u):
    """u (16, F) = G w G^T from the taps g (9, F) of F 3x3 filters (tap-major): G down the columns, then along
    the rows; every step is one loop along a row of filters."""
    filters = g.shape[1]
    half = u.dtype.type(0.5)
    for task in prange(-(-filters // _FILTERS_PER_TASK)):
        lo = task * _FILTERS_PER_TASK
        hi = min(lo + _FILTERS_PER_TASK, filters)
        t = np.empty((12, hi - lo), dtype=u.dtype)  # t[3 r + b]: G down column b
        for b in range(3):  # G (x0, x1, x2) = (x0, (x0 + x2 + x1) / 2, (x0 + x2 - x1) / 2, x2)
            x0, x1, x2 = g[b, lo:hi], g[3 + b, lo:hi], g[6 + b, lo:hi]
            t0, t1, t2, t3 = t[b], t[3 + b], t[6 + b], t[9 + b]
            for i in range(hi - lo):
                t0[i] = x0[i]
                t1[i] = (x0[i] + x2[i] + x1[i]) * half
                t2[i] = (x0[i] + x2[i] - x1[i]) * half
                t3[i] = x2[i]
        for r in range(4):  # ... then along row r
            x0, x1, x2 = t[3 * r], t[3 * r + 1], t[3 * r + 2]
            u0, u1, u2, u3 = u[4 * r, lo:hi], u[4 * r + 1, lo:hi], u[4 * r + 2, lo:hi], u[4 * r + 3, lo:hi]
            for i in range(hi - lo):
                u0[i] = x0[i]
                u1[i] = (x0[i] + x2[i] + x1[i]) * half
                u2[i] = (x0[i] + x2[i] - x1[i]) * half
                u3[i] = x2[i]


@njit(**OPTIONS)
def filter_transform_adjoint(du, dw):
    """dw (F, 9) += G^T dU G, the taps' diffs from du (16, F): G^T down the columns, then along the rows, in a
    task's rows in cache, then added into the weights' own layout."""
    filters = du.shape[1]
    half = dw.dtype.type(0.5)
    for task in prange(-(-filters // _FILTERS_PER_TASK)):
        lo = task * _FILTERS_PER_TASK
        hi = min(lo + _FILTERS_PER_TASK, filters)
        p = np.empty((12, hi - lo), dtype=dw.dtype)  # p[4 a + c]: G^T down column c
        for c in range(4):  # G^T (d0, d1, d2, d3) = (d0 + (d1 + d2) / 2, (d1 - d2) / 2, d3 + (d1 + d2) / 2)
            d0, d1, d2, d3 = du[c, lo:hi], du[4 + c, lo:hi], du[8 + c, lo:hi], du[12 + c, lo:hi]
            p0, p1, p2 = p[c], p[4 + c], p[8 + c]
            for i in range(hi - lo):
                p0[i] = d0[i] + (d1[i] + d2[i]) * half
                p1[i] = (d1[i] - d2[i]) * half
                p2[i] = d3[i] + (d1[i] + d2[i]) * half
        q = np.empty((9, hi - lo), dtype=dw.dtype)
        for a in range(3):  # ... then along row a
            d0, d1, d2, d3 = p[4 * a], p[4 * a + 1], p[4 * a + 2], p[4 * a + 3]
            q0, q1, q2 = q[3 * a], q[3 * a + 1], q[3 * a + 2]
            for i in range(hi - lo):
                q0[i] = d0[i] + (d1[i] + d2[i]) * half
                q1[i] = (d1[i] - d2[i]) * half
                q2[i] = d3[i] + (d1[i] + d2[i]) * half
        for i in range(hi - lo):
            for k in range(9):
                dw[lo + i, k] += q[k, i]


# F(2x2, 5x5): the 1-D transforms of engine/winograd.py's toom_cook(2, 5), one loop per output over a
# row of channels, each output's terms in the matrix's order (the NumPy path's _combine adds them so).

@njit(**dict(OPTIONS, parallel=False), inline="always")
def _bt6(d0, d1, d2, d3, d4, d5, o0, o1, o2, o3, o4, o5):
    """(o0 .. o5) = B^T (d0 .. d5), B^T's rows (4, 0, -5, 0, 1, 0), (0, 4, 4, -1, -1, 0), (0, -4, 4, 1, -1, 0),
    (0, -2, -1, 2, 1, 0), (0, 2, -1, -2, 1, 0), (0, 4, 0, -5, 0, 1)."""
    two, four, five = o0.dtype.type(2), o0.dtype.type(4), o0.dtype.type(5)
    for c in range(o0.shape[0]):
        o0[c] = four * d0[c] - five * d2[c] + d4[c]
    for c in range(o0.shape[0]):
        o1[c] = four * d1[c] + four * d2[c] - d3[c] - d4[c]
    for c in range(o0.shape[0]):
        o2[c] = -four * d1[c] + four * d2[c] + d3[c] - d4[c]
    for c in range(o0.shape[0]):
        o3[c] = -two * d1[c] - d2[c] + two * d3[c] + d4[c]
    for c in range(o0.shape[0]):
        o4[c] = two * d1[c] - d2[c] - two * d3[c] + d4[c]
    for c in range(o0.shape[0]):
        o5[c] = four * d1[c] - five * d3[c] + d5[c]


@njit(**dict(OPTIONS, parallel=False), inline="always")
def _at6(m0, m1, m2, m3, m4, m5, y0, y1):
    """(y0, y1) = A^T (m0 .. m5), A^T's rows (1, 1, 1, 1, 1, 0), (0, 1, -1, 2, -2, 1)."""
    two = y0.dtype.type(2)
    for c in range(y0.shape[0]):
        y0[c] = m0[c] + m1[c] + m2[c] + m3[c] + m4[c]
    for c in range(y0.shape[0]):
        y1[c] = m1[c] - m2[c] + two * m3[c] - two * m4[c] + m5[c]


@njit(**dict(OPTIONS, parallel=False), inline="always")
def _a6(y0, y1, o0, o1, o2, o3, o4, o5):
    """(o0 .. o5) = A (y0, y1): (y0, y0 + y1, y0 - y1, y0 + 2 y1, y0 - 2 y1, y1)."""
    two = o0.dtype.type(2)
    for c in range(o0.shape[0]):
        o0[c] = y0[c]
    for c in range(o0.shape[0]):
        o1[c] = y0[c] + y1[c]
    for c in range(o0.shape[0]):
        o2[c] = y0[c] - y1[c]
    for c in range(o0.shape[0]):
        o3[c] = y0[c] + two * y1[c]
    for c in range(o0.shape[0]):
        o4[c] = y0[c] - two * y1[c]
    for c in range(o0.shape[0]):
        o5[c] = y1[c]


@light
@njit(**OPTIONS)
def to_column_phases(x, pad_h, pad_w, out):
    """out (N, Hp, P, Wp / P, C) = x (N, C, H, W) at (pad_h, pad_w) in a zero border, channels-last, its columns
    split into P phases: padded column P k + p at out[:, :, p, k] (P = 1: the padded input itself)."""
    num, channels, height, width = x.shape
    padded_h, phases, per_phase = out.shape[1], out.shape[2], out.shape[3]
    zero = out.dtype.type(0)
    for task in prange(num * padded_h):
        n = task // padded_h
        row = task % padded_h
        h = row - pad_h
        for p in range(phases):
            target = out[n, row, p]
            for k in range(per_phase):
                line = target[k]
                w = phases * k + p - pad_w
                if h < 0 or h >= height or w < 0 or w >= width:
                    for c in range(channels):
                        line[c] = zero
                else:
                    for c in range(channels):
                        line[c] = x[n, c, h, w]


@light
@njit(**OPTIONS)
def from_column_phases(y, bias, with_bias, out):
    """out (N, C, H, W) = y (N, >= H, P, >= W / P, C), column P k + p at y[:, :, p, k], moved channels-first
    (plus bias[c] when `with_bias`); P = 1: y is channels-last."""
    num, channels, height, width = out.shape
    phases = y.shape[2]
    for task in prange(num * channels):
        n = task // channels
        c = task % channels
        b = bias[c] if with_bias else out.dtype.type(0)
        for h in range(height):
            target = out[n, c, h]
            for p in range(phases):
                source = y[n, h, p]
                for k in range((width - p + phases - 1) // phases):
                    target[phases * k + p] = source[k, c] + b if with_bias else source[k, c]


# The F(2x2, 5x5) transforms run on one thread over a chunk of tile rows (the caller's thread: engine/winograd.py
# runs the chunks of a convolution on the pool of engine/cpu/products.py, each through transform, products and
# transform back while it is in cache). They release the GIL.
SERIAL = dict(OPTIONS, parallel=False, nogil=True)


@njit(**SERIAL)
def input_transform_f2x5(phases, first, v):
    """v (6, 6, R, tw * C) = B^T d B over the 6x6 tiles (stride 2) of tile rows first .. first + R - 1 (tile row
    n * th + ty) of the padded input in column phases (N, 2 th + 4, 2, tw + 2, C) (to_column_phases).

    In phases, column b of every tile along a tile row is one contiguous run of tw * C values: each
    transform step is one loop over a whole tile row instead of one per tile.
    """
    channels = phases.shape[4]
    th = (phases.shape[1] - 4) // 2
    length = v.shape[3]
    row_size = phases.shape[3] * channels
    step = 2 * row_size  # from one input row to the next (a list of the six views would not vectorize)
    flat = phases.reshape(phases.size)
    r = np.empty((6, 6, length), dtype=v.dtype)  # r[i, b]: B^T down column b, output i
    for row in range(v.shape[2]):
        n = (first + row) // th
        ty = (first + row) % th
        for b in range(6):
            start = ((n * phases.shape[1] + 2 * ty) * 2 + b % 2) * row_size + (b // 2) * channels
            _bt6(flat[start:start + length], flat[start + step:start + step + length],
                 flat[start + 2 * step:start + 2 * step + length], flat[start + 3 * step:start + 3 * step + length],
                 flat[start + 4 * step:start + 4 * step + length], flat[start + 5 * step:start + 5 * step + length],
                 r[0, b], r[1, b], r[2, b], r[3, b], r[4, b], r[5, b])
        for i in range(6):  # ... then along each row
            q = r[i]
            _bt6(q[0], q[1], q[2], q[3], q[4], q[5], v[i, 0, row], v[i, 1, row], v[i, 2, row], v[i, 3, row],
                 v[i, 4, row], v[i, 5, row])


@njit(**SERIAL)
def output_transform_f2x5(m, first, y):
    """Tile rows first .. first + R - 1 of y (N, 2 th, 2, tw, O) = A^T M A from m (6, 6, R, tw * O); y's columns
    are split by parity (from_column_phases takes it on). One loop per step over a whole tile row."""
    length = m.shape[3]
    rows = y.reshape(y.shape[0] * y.shape[1], 2, length)
    s = np.empty((2, 6, length), dtype=y.dtype)  # s[q, i]: A^T along row i, output q
    for row in range(m.shape[2]):
        task = first + row
        for i in range(6):
            _at6(m[i, 0, row], m[i, 1, row], m[i, 2, row], m[i, 3, row], m[i, 4, row], m[i, 5, row], s[0, i], s[1, i])
        for q in range(2):  # ... and down the columns
            a = s[q]
            _at6(a[0], a[1], a[2], a[3], a[4], a[5], rows[2 * task, q], rows[2 * task + 1, q])


@njit(**SERIAL)
def output_transform_adjoint_f2x5(dy, first, dm):
    """dm (6, 6, R, tw * O) = A dY A^T over tile rows first .. first + R - 1 of the top diff in column phases
    dy (N, 2 th, 2, tw, O)."""
    length = dm.shape[3]
    rows = dy.reshape(dy.shape[0] * dy.shape[1], 2, length)
    t = np.empty((6, 2, length), dtype=dm.dtype)  # t[j, p]: A along row p, output j
    for row in range(dm.shape[2]):
        task = first + row
        for p in range(2):
            line = rows[2 * task + p]
            _a6(line[0], line[1], t[0, p], t[1, p], t[2, p], t[3, p], t[4, p], t[5, p])
        for j in range(6):  # ... and along the columns
            a = t[j]
            _a6(a[0], a[1], dm[0, j, row], dm[1, j, row], dm[2, j, row], dm[3, j, row], dm[4, j, row], dm[5, j, row])


# F(2x2, 3x3) by chunks of tile rows, on column phases as F(2x2, 5x5)'s: the additions of input_transform,
# output_transform and output_transform_adjoint above (and of the NumPy path), each step over a whole tile row.

@njit(**SERIAL, inline="always")
def _bt4(d0, d1, d2, d3, o0, o1, o2, o3):
    """(o0 .. o3) = B^T (d0 .. d3) = (d0 - d2, d1 + d2, d2 - d1, d1 - d3)."""
    for c in range(o0.shape[0]):
        o0[c] = d0[c] - d2[c]
    for c in range(o0.shape[0]):
        o1[c] = d1[c] + d2[c]
    for c in range(o0.shape[0]):
        o2[c] = d2[c] - d1[c]
    for c in range(o0.shape[0]):
        o3[c] = d1[c] - d3[c]


@njit(**SERIAL, inline="always")
def _at4(m0, m1, m2, m3, y0, y1):
    """(y0, y1) = A^T (m0 .. m3) = ((m0 + m1) + m2, (m1 - m2) - m3)."""
    for c in range(y0.shape[0]):
        y0[c] = m0[c] + m1[c]
    for c in range(y0.shape[0]):
        y0[c] = y0[c] + m2[c]
    for c in range(y0.shape[0]):
        y1[c] = m1[c] - m2[c]
    for c in range(y0.shape[0]):
        y1[c] = y1[c] - m3[c]


@njit(**SERIAL, inline="always")
def _a4(y0, y1, o0, o1, o2, o3):
    """(o0 .. o3) = A (y0, y1) = (y0, y0 + y1, y0 - y1, -y1)."""
    for c in range(o0.shape[0]):
        o0[c] = y0[c]
    for c in range(o0.shape[0]):
        o1[c] = y0[c] + y1[c]
    for c in range(o0.shape[0]):
        o2[c] = y0[c] - y1[c]
    for c in range(o0.shape[0]):
        o3[c] = -y1[c]


@njit(**SERIAL)
def input_transform_f2x3(phases, first, v):
    """v (4, 4, R, tw * C) = B^T d B over the 4x4 tiles of tile rows first .. first + R - 1 of the padded input
    in column phases (N, 2 th + 2, 2, tw + 1, C): down each tile column first, then along each row."""
    channels = phases.shape[4]
    th = (phases.shape[1] - 2) // 2
    length = v.shape[3]
    row_size = phases.shape[3] * channels
    step = 2 * row_size
    flat = phases.reshape(phases.size)
    r = np.empty((4, 4, length), dtype=v.dtype)  # r[i, b]: B^T down column b, output i
    for row in range(v.shape[2]):
        n = (first + row) // th
        ty = (first + row) % th
        for b in range(4):
            start = ((n * phases.shape[1] + 2 * ty) * 2 + b % 2) * row_size + (b // 2) * channels
            _bt4(flat[start:start + length], flat[start + step:start + step + length],
                 flat[start + 2 * step:start + 2 * step + length], flat[start + 3 * step:start + 3 * step + length],
                 r[0, b], r[1, b], r[2, b], r[3, b])
        for i in range(4):
            q = r[i]
            _bt4(q[0], q[1], q[2], q[3], v[i, 0, row], v[i, 1, row], v[i, 2, row], v[i, 3, row])


@njit(**SERIAL)
def output_transform_f2x3(m, first, y):
    """Tile rows first .. first + R - 1 of y (N, 2 th, 2, tw, O) = A^T M A from m (4, 4, R, tw * O): along each
    row first, then down the columns."""
    length = m.shape[3]
    rows = y.reshape(y.shape[0] * y.shape[1], 2, length)
    s = np.empty((2, 4, length), dtype=y.dtype)  # s[q, i]: A^T along row i, output q
    for row in range(m.shape[2]):
        task = first + row
        for i in range(4):
            _at4(m[i, 0, row], m[i, 1, row], m[i, 2, row], m[i, 3, row], s[0, i], s[1, i])
        for q in range(2):
            a = s[q]
            _at4(a[0], a[1], a[2], a[3], rows[2 * task, q], rows[2 * task + 1, q])


@njit(**SERIAL)
def output_transform_adjoint_f2x3(dy, first, dm):
    """dm (4, 4, R, tw * O) = A dY A^T over tile rows first .. first + R - 1 of the top diff in column phases
    dy (N, 2 th, 2, tw, O): down each tile column first, then along the rows."""
    length = dm.shape[3]
    rows = dy.reshape(dy.shape[0] * dy.shape[1], 2, length)
    t = np.empty((4, 2, length), dtype=dm.dtype)  # t[i, q]: A down column q, output i
    for row in range(dm.shape[2]):
        task = first + row
        for q in range(2):
            _a4(rows[2 * task, q], rows[2 * task + 1, q], t[0, q], t[1, q], t[2, q], t[3, q])
        for i in range(4):
            a = t[i]
            _a4(a[0], a[1], dm[i, 0, row], dm[i, 1, row], dm[i, 2, row], dm[i, 3, row])
