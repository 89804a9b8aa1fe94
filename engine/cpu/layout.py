"""Moves between blob order (num, channels, cells) and the convolution's rows (channels, num, cells).

The GEMMs of the convolution layer produce and take rows spanning the whole
batch; these copies (with the bias added on the way out) run over whole
(image, channel) planes per thread.
"""

from numba import njit, prange

from . import OPTIONS
from .threads import light


@light
@njit(**OPTIONS)
def rows_to_blob(rows, bias, with_bias, out):
    """out (N, C, P) = rows (C, N, P) swapped, plus bias[c] when `with_bias`."""
    channels, num, cells = rows.shape
    for task in prange(num * channels):
        n = task // channels
        c = task % channels
        source = rows[c, n]
        target = out[n, c]
        if with_bias:
            b = bias[c]
            for k in range(cells):
                target[k] = source[k] + b
        else:
            for k in range(cells):
                target[k] = source[k]


@light
@njit(**OPTIONS)
def blob_to_rows(blob, out):
    """out (C, N, P) = blob (N, C, P) swapped."""
    num, channels, cells = blob.shape
    for task in prange(num * channels):
        n = task // channels
        c = task % channels
        source = blob[n, c]
        target = out[c, n]
        for k in range(cells):
            target[k] = source[k]
