"""Column phases of a strided window: contiguous runs where a stride's taps lie s apart.

With a horizontal stride s > 1 the inputs that kernel offset j reads along a
row are s apart, and loops over strided views do not vectorize. Split once
into its s column phases (phase p holds columns p, p + s, ...), a plane
gives every offset's taps as one contiguous run: column o * s + offset is
column o + shift of phase offset mod s. The depthwise convolution kernels
read (and the bottom diff writes) through them.
"""

import numpy as np
from numba import njit


@njit(inline="always")
def column_phases(plane, stride):
    """(stride, H, ceil(W / stride)): phase p, row h holds plane[h, p::stride] (zeros past its end)."""
    height, width = plane.shape
    span = (width + stride - 1) // stride
    phases = np.zeros((stride, height, span), dtype=plane.dtype)
    for p in range(stride):
        for h in range(height):
            line = plane[h]
            into = phases[p, h]
            for k in range((width - p + stride - 1) // stride):
                into[k] = line[k * stride + p]
    return phases


@njit(inline="always")
def phase_of(offset, stride):
    """(phase, shift): column o * stride + offset is column o + shift of that phase."""
    phase = offset % stride  # in [0, stride) for negative offsets too, as in Python
    return phase, (offset - phase) // stride


@njit(inline="always")
def valid_range(count, stride, offset, size):
    """Outputs o in [lo, hi) with 0 <= o * stride + offset < size."""
    lo = 0
    if offset < 0:
        lo = (-offset + stride - 1) // stride
    hi = 0
    if size - offset > 0:
        hi = (size - offset + stride - 1) // stride
    return lo, max(lo, min(hi, count))
