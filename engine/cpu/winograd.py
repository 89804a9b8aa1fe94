"""Winograd F(2x2, 3x3) transforms and channels-last moves for engine/winograd.py, threads over tile rows.

The transforms take and give engine/winograd.py's arrays, tile by tile with
the channels innermost, and do the NumPy code's additions in its order, so
that the numbers are the same bit for bit; only the 16 GEMMs between them
stay with BLAS.
"""

from numba import njit, prange

from . import OPTIONS


@njit(**OPTIONS)
def to_padded_channels_last(x, pad_h, pad_w, out):
    """out (N, Hp, Wp, C) = x (N, C, H, W) moved channels-last, at (pad_h, pad_w), zeros around."""
    num, channels, height, width = x.shape
    padded_h, padded_w = out.shape[1], out.shape[2]
    zero = out.dtype.type(0)
    for task in prange(num * padded_h):
        n = task // padded_h
        row = task % padded_h
        h = row - pad_h
        target = out[n, row]
        if h < 0 or h >= height:
            for w in range(padded_w):
                line = target[w]
                for c in range(channels):
                    line[c] = zero
            continue
        for w in range(padded_w):
            line = target[w]
            if w < pad_w or w >= pad_w + width:
                for c in range(channels):
                    line[c] = zero
            else:
                for c in range(channels):
                    line[c] = x[n, c, h, w - pad_w]


@njit(**OPTIONS)
def from_channels_last(y, bias, with_bias, out):
    """out (N, C, H, W) = y[:, :H, :W] (N, Hy, Wy, C) moved channels-first, plus bias[c] when `with_bias`."""
    num, channels, height, width = out.shape
    for task in prange(num * channels):
        n = task // channels
        c = task % channels
        b = bias[c] if with_bias else out.dtype.type(0)
        for h in range(height):
            target = out[n, c, h]
            source = y[n, h]
            if with_bias:
                for w in range(width):
                    target[w] = source[w, c] + b
            else:
                for w in range(width):
                    target[w] = source[w, c]


@njit(**OPTIONS)
def input_transform(padded, v):
    """v (4, 4, N, th, tw, C) = B^T d B over the 4x4 tiles (stride 2) of padded (N, 2 th + 2, 2 tw + 2, C)."""
    num, th, tw, channels = v.shape[2], v.shape[3], v.shape[4], v.shape[5]
    for task in prange(num * th):
        n = task // th
        ty = task % th
        for tx in range(tw):
            d00, d01, d02, d03 = padded[n, 2 * ty, 2 * tx], padded[n, 2 * ty, 2 * tx + 1], \
                padded[n, 2 * ty, 2 * tx + 2], padded[n, 2 * ty, 2 * tx + 3]
            d10, d11, d12, d13 = padded[n, 2 * ty + 1, 2 * tx], padded[n, 2 * ty + 1, 2 * tx + 1], \
                padded[n, 2 * ty + 1, 2 * tx + 2], padded[n, 2 * ty + 1, 2 * tx + 3]
            d20, d21, d22, d23 = padded[n, 2 * ty + 2, 2 * tx], padded[n, 2 * ty + 2, 2 * tx + 1], \
                padded[n, 2 * ty + 2, 2 * tx + 2], padded[n, 2 * ty + 2, 2 * tx + 3]
            d30, d31, d32, d33 = padded[n, 2 * ty + 3, 2 * tx], padded[n, 2 * ty + 3, 2 * tx + 1], \
                padded[n, 2 * ty + 3, 2 * tx + 2], padded[n, 2 * ty + 3, 2 * tx + 3]
            for c in range(channels):
                # B^T down each column b: (d0 - d2, d1 + d2, d2 - d1, d1 - d3) -> r[a'][b]
                r00, r10, r20, r30 = d00[c] - d20[c], d10[c] + d20[c], d20[c] - d10[c], d10[c] - d30[c]
                r01, r11, r21, r31 = d01[c] - d21[c], d11[c] + d21[c], d21[c] - d11[c], d11[c] - d31[c]
                r02, r12, r22, r32 = d02[c] - d22[c], d12[c] + d22[c], d22[c] - d12[c], d12[c] - d32[c]
                r03, r13, r23, r33 = d03[c] - d23[c], d13[c] + d23[c], d23[c] - d13[c], d13[c] - d33[c]
                # ... then along each row i: (r0 - r2, r1 + r2, r2 - r1, r1 - r3)
                v[0, 0, n, ty, tx, c] = r00 - r02
                v[0, 1, n, ty, tx, c] = r01 + r02
                v[0, 2, n, ty, tx, c] = r02 - r01
                v[0, 3, n, ty, tx, c] = r01 - r03
                v[1, 0, n, ty, tx, c] = r10 - r12
                v[1, 1, n, ty, tx, c] = r11 + r12
                v[1, 2, n, ty, tx, c] = r12 - r11
                v[1, 3, n, ty, tx, c] = r11 - r13
                v[2, 0, n, ty, tx, c] = r20 - r22
                v[2, 1, n, ty, tx, c] = r21 + r22
                v[2, 2, n, ty, tx, c] = r22 - r21
                v[2, 3, n, ty, tx, c] = r21 - r23
                v[3, 0, n, ty, tx, c] = r30 - r32
                v[3, 1, n, ty, tx, c] = r31 + r32
                v[3, 2, n, ty, tx, c] = r32 - r31
                v[3, 3, n, ty, tx, c] = r31 - r33


@njit(**OPTIONS)
def output_transform(m, y):
    """y (N, 2 th, 2 tw, O) = A^T M A from m (4, 4, N, th, tw, O)."""
    num, th, tw, channels = m.shape[2], m.shape[3], m.shape[4], m.shape[5]
    for task in prange(num * th):
        n = task // th
        ty = task % th
        for tx in range(tw):
            top0, top1 = y[n, 2 * ty, 2 * tx], y[n, 2 * ty, 2 * tx + 1]
            low0, low1 = y[n, 2 * ty + 1, 2 * tx], y[n, 2 * ty + 1, 2 * tx + 1]
            for c in range(channels):
                # A^T along each row i: s[i][0] = m0 + m1 + m2, s[i][1] = m1 - m2 - m3
                s00 = m[0, 0, n, ty, tx, c] + m[0, 1, n, ty, tx, c] + m[0, 2, n, ty, tx, c]
                s01 = m[0, 1, n, ty, tx, c] - m[0, 2, n, ty, tx, c] - m[0, 3, n, ty, tx, c]
                s10 = m[1, 0, n, ty, tx, c] + m[1, 1, n, ty, tx, c] + m[1, 2, n, ty, tx, c]
                s11 = m[1, 1, n, ty, tx, c] - m[1, 2, n, ty, tx, c] - m[1, 3, n, ty, tx, c]
                s20 = m[2, 0, n, ty, tx, c] + m[2, 1, n, ty, tx, c] + m[2, 2, n, ty, tx, c]
                s21 = m[2, 1, n, ty, tx, c] - m[2, 2, n, ty, tx, c] - m[2, 3, n, ty, tx, c]
                s30 = m[3, 0, n, ty, tx, c] + m[3, 1, n, ty, tx, c] + m[3, 2, n, ty, tx, c]
                s31 = m[3, 1, n, ty, tx, c] - m[3, 2, n, ty, tx, c] - m[3, 3, n, ty, tx, c]
                top0[c] = s00 + s10 + s20
                top1[c] = s01 + s11 + s21
                low0[c] = s10 - s20 - s30
                low1[c] = s11 - s21 - s31


@njit(**OPTIONS)
def output_transform_adjoint(dy, dm):
    """dm (4, 4, N, th, tw, O) = A dY A^T from the channels-last top diff dy (N, 2 th, 2 tw, O)."""
    num, th, tw, channels = dm.shape[2], dm.shape[3], dm.shape[4], dm.shape[5]
    for task in prange(num * th):
        n = task // th
        ty = task % th
        for tx in range(tw):
            a0, a1 = dy[n, 2 * ty, 2 * tx], dy[n, 2 * ty, 2 * tx + 1]
            b0, b1 = dy[n, 2 * ty + 1, 2 * tx], dy[n, 2 * ty + 1, 2 * tx + 1]
            for c in range(channels):
                # A along the rows: t[.][q] = (y0, y0 + y1, y0 - y1, -y1) with y0, y1 the tile's two rows
                t00, t01 = a0[c], a1[c]
                t10, t11 = a0[c] + b0[c], a1[c] + b1[c]
                t20, t21 = a0[c] - b0[c], a1[c] - b1[c]
                t30, t31 = -b0[c], -b1[c]
                dm[0, 0, n, ty, tx, c] = t00
                dm[0, 1, n, ty, tx, c] = t00 + t01
                dm[0, 2, n, ty, tx, c] = t00 - t01
                dm[0, 3, n, ty, tx, c] = -t01
                dm[1, 0, n, ty, tx, c] = t10
                dm[1, 1, n, ty, tx, c] = t10 + t11
                dm[1, 2, n, ty, tx, c] = t10 - t11
                dm[1, 3, n, ty, tx, c] = -t11
                dm[2, 0, n, ty, tx, c] = t20
                dm[2, 1, n, ty, tx, c] = t20 + t21
                dm[2, 2, n, ty, tx, c] = t20 - t21
                dm[2, 3, n, ty, tx, c] = -t21
                dm[3, 0, n, ty, tx, c] = t30
                dm[3, 1, n, ty, tx, c] = t30 + t31
                dm[3, 2, n, ty, tx, c] = t30 - t31
                dm[3, 3, n, ty, tx, c] = -t31
