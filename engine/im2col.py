"""im2col / col2im over N-d spatial axes, and unit-stride kernel-offset windows.

Both work on arrays shaped (num, channels, *spatial) of NumPy or CuPy, with
one body: im2col is a strided view of the zero-padded image copied once;
col2im adds the columns back kernel offset by kernel offset (a short loop
over offsets, each step a whole-batch array operation).

Column layouts (K = channels * prod(kernel), rows ordered channel, then kernel
offsets in row-major order, exactly as Caffe's im2col):
- batch_first=True:  (num, K, *out)  -- Caffe's per-image buffer, stacked;
  the Im2col layer's top.
- batch_first=False: (K, num, *out)  -- rows span the whole batch, so a
  convolution is one matrix product per group. The batch sits between K
  and the output cells, so moving to and from blob order (num, channels,
  cells) copies whole contiguous planes; a batch-innermost layout would
  make those copies stride by a power of two in common shapes, which
  thrashes the cache (tens of times slower).

On the CPU, 2-D im2col and col2im run as multi-threaded kernels
(engine/cpu/im2col.py) that write straight into the caller's arrays.

`OffsetWindows` serves pooling: it splits the padded image by stride phase,
so that for each kernel offset the inputs of all windows form a unit-stride
slice, which element-wise kernels run through several times faster than a
strided one.
"""

import itertools
import math

from . import cpu
from .backend import get_array_module


def _as_strided(xp):
    return xp.lib.stride_tricks.as_strided


def kernel_offsets(kernel):
    """Every kernel offset tuple, in Caffe's row-major order."""
    return itertools.product(*(range(k) for k in kernel))


def pad_spatial(x, before, after, value=0):
    """`x` (num, channels, *spatial) with `before`/`after` cells of `value` per spatial axis.

    Returns `x` itself when nothing is padded.
    """
    if not any(before) and not any(after):
        return x
    xp = get_array_module(x)
    lead = x.shape[:2]
    shape = lead + tuple(s + b + a for s, b, a in zip(x.shape[2:], before, after))
    padded = xp.full(shape, value, dtype=x.dtype)
    inner = (Ellipsis,) + tuple(slice(b, b + s) for b, s in zip(before, x.shape[2:]))
    padded[inner] = x
    return padded


def _strided_windows(padded, first, kernel, stride, dilation, out_shape):
    """View of `padded` with its spatial axes (from `first`) split into (*kernel, *out)."""
    xp = get_array_module(padded)
    count = len(kernel)
    axis_strides = padded.strides[first:first + count]
    shape = padded.shape[:first] + tuple(kernel) + tuple(out_shape) + padded.shape[first + count:]
    strides = (padded.strides[:first] + tuple(st * d for st, d in zip(axis_strides, dilation))
               + tuple(st * s for st, s in zip(axis_strides, stride)) + padded.strides[first + count:])
    return _as_strided(xp)(padded, shape=shape, strides=strides)


def window_view(padded, kernel, stride, dilation, out_shape):
    """A read-only strided view (num, channels, *kernel, *out) of `padded` (num, channels, *spatial)."""
    return _strided_windows(padded, 2, kernel, stride, dilation, out_shape)


def _out_shape(spatial, kernel, pad, stride, dilation):
    return tuple((size + 2 * p - (d * (k - 1) + 1)) // s + 1
                 for size, k, p, s, d in zip(spatial, kernel, pad, stride, dilation))


def im2col(x, kernel, pad, stride, dilation=None, batch_first=True, out=None):
    """Columns of `x` (num, channels, *spatial); see the module docstring for layouts.

    `out`, when given, is a contiguous array of the result's size to fill
    instead of allocating one.
    """
    num_axes = x.ndim - 2
    kernel, pad, stride = tuple(kernel), tuple(pad), tuple(stride)
    dilation = tuple(dilation or (1,) * num_axes)
    out_shape = _out_shape(x.shape[2:], kernel, pad, stride, dilation)
    num, channels = x.shape[:2]
    rows = channels * math.prod(kernel)
    xp = get_array_module(x)
    if num_axes == 2 and cpu.usable(x) and (out is None or out.dtype == x.dtype):
        shape = (num, rows) + out_shape if batch_first else (rows, num) + out_shape
        out = xp.empty(shape, dtype=x.dtype) if out is None else out.reshape(shape)
        target = out.transpose(1, 0, 2, 3) if batch_first else out
        kernels = cpu.kernels("im2col")
        padded = xp.ascontiguousarray(x)
        if any(pad):
            padded = xp.empty(x.shape[:2] + tuple(s + 2 * p for s, p in zip(x.shape[2:], pad)), dtype=x.dtype)
            kernels.pad(xp.ascontiguousarray(x), *pad, padded)
        kernels.im2col(padded, *kernel, *stride, *dilation, target)
        return out
    view = window_view(pad_spatial(x, pad, pad), kernel, stride, dilation, out_shape)
    if batch_first:
        shape = (num, rows) + out_shape
    else:
        # (channels, *kernel, num, *out): channel and offsets first, then the batch.
        spatial_axes = tuple(range(2, 2 + num_axes))
        view = view.transpose((1,) + spatial_axes + (0,) + tuple(a + num_axes for a in spatial_axes))
        shape = (rows, num) + out_shape
    if out is None:
        out = xp.empty(shape, dtype=x.dtype)
    else:
        out = out.reshape(shape)
    out.reshape(view.shape)[...] = view
    return out


def col2im(cols, image_shape, kernel, pad, stride, dilation=None, batch_first=True, out=None):
    """Sum columns back into an image (num, channels, *spatial): the adjoint of im2col.

    Returns a view into a fresh padded buffer (with the first two axes
    swapped when batch_first=False); callers copy it where it belongs.
    When `out` (a C-contiguous array of image_shape) is given, the image is
    written there instead, and `out` returned.
    """
    xp = get_array_module(cols)
    num, channels = image_shape[:2]
    spatial = tuple(image_shape[2:])
    kernel, pad, stride = tuple(kernel), tuple(pad), tuple(stride)
    dilation = tuple(dilation or (1,) * len(spatial))
    out_shape = _out_shape(spatial, kernel, pad, stride, dilation)
    if len(spatial) == 2 and cpu.usable(cols) and (out is None or (
            cpu.usable(out) and out.dtype == cols.dtype and out.flags.c_contiguous)):
        image = xp.empty(image_shape, dtype=cols.dtype) if out is None else out
        rows = channels * math.prod(kernel)
        if batch_first:
            columns = xp.ascontiguousarray(cols.reshape((num, rows) + out_shape).transpose(1, 0, 2, 3))
        else:
            columns = xp.ascontiguousarray(cols.reshape((rows, num) + out_shape))
        cpu.kernels("im2col").col2im(columns, *kernel, *pad, *stride, *dilation, image)
        return image
    padded = tuple(s + 2 * p for s, p in zip(spatial, pad))
    both = (slice(None), slice(None))
    if batch_first:
        buffer = xp.zeros((num, channels) + padded, dtype=cols.dtype)
        cols = cols.reshape((num, channels) + kernel + out_shape)
    else:
        buffer = xp.zeros((channels, num) + padded, dtype=cols.dtype)
        cols = cols.reshape((channels,) + kernel + (num,) + out_shape)
    for offset in kernel_offsets(kernel):
        target = both + tuple(slice(o * d, o * d + s * (n - 1) + 1, s)
                              for o, d, s, n in zip(offset, dilation, stride, out_shape))
        buffer[target] += cols[both + offset] if batch_first else cols[(slice(None),) + offset]
    image = buffer[both + tuple(slice(p, p + s) for p, s in zip(pad, spatial))]
    image = image if batch_first else image.swapaxes(0, 1)
    if out is None:
        return image
    out[...] = image
    return out


class OffsetWindows:
    """Pooling windows (kernel, stride, leading pad) over images of one spatial shape.

    Window o along an axis covers padded positions [o*stride, o*stride + kernel);
    image position q sits at padded position q + pad. The padded image is
    stored as prod(stride) phase arrays (phase r holds padded positions
    r, r + stride, ...), so `at(phases, offset)` is a unit-stride slice
    holding, for every window, its input at that kernel offset.
    """

    def __init__(self, spatial, kernel, stride, pad, out_shape):
        self.spatial = tuple(spatial)
        self.kernel = tuple(kernel)
        self.stride = tuple(stride)
        self.pad = tuple(pad)
        self.out_shape = tuple(out_shape)
        self.phase_len, used = [], []
        for size, k, s, p, n in zip(self.spatial, self.kernel, self.stride, self.pad, self.out_shape):
            needed = max(p + size, (n - 1) * s + k)
            self.phase_len.append(-(-needed // s))
            # Phases past both the image and the kernel hold nothing a window reads: a stride far past
            # the image needs no phase per stride step.
            used.append(min(s, max(p + size, k)))
        self.phase_len = tuple(self.phase_len)
        self._placement = {}
        for phase in itertools.product(*(range(r) for r in used)):
            inside, image = [], []
            for r, size, s, p in zip(phase, self.spatial, self.stride, self.pad):
                first = max(0, -(-(p - r) // s))  # first phase index inside the image
                q0 = r + first * s - p
                count = len(range(q0, size, s))
                inside.append(slice(first, first + count))
                image.append(slice(q0, q0 + s * (count - 1) + 1 if count else q0, s))
            self._placement[phase] = (tuple(inside), tuple(image))
        # No phase split and no padding needed: the image itself serves.
        self.identity = (all(s == 1 for s in self.stride) and not any(self.pad)
                         and self.phase_len == self.spatial)

    @property
    def num_offsets(self):
        return math.prod(self.kernel)

    def split(self, x, fill):
        """Phase arrays of `x` (num, channels, *spatial); cells outside the image hold `fill`."""
        if self.identity:
            return {(0,) * len(self.spatial): x}
        xp = get_array_module(x)
        phases = {}
        for phase, (inside, image) in self._placement.items():
            array = xp.full(x.shape[:2] + self.phase_len, fill, dtype=x.dtype)
            array[(Ellipsis,) + inside] = x[(Ellipsis,) + image]
            phases[phase] = array
        return phases

    def zeros(self, xp, lead, dtype):
        """Zeroed phase arrays, to accumulate gradients into."""
        return {phase: xp.zeros(tuple(lead) + self.phase_len, dtype=dtype) for phase in self._placement}

    def merge(self, phases, out):
        """Write the image part of `phases` into `out` (num, channels, *spatial)."""
        for phase, (inside, image) in self._placement.items():
            out[(Ellipsis,) + image] = phases[phase][(Ellipsis,) + inside]

    def at(self, phases, offset):
        """The inputs at kernel offset `offset` of every window: shape (num, channels, *out)."""
        phase = tuple(o % s for o, s in zip(offset, self.stride))
        start = tuple(o // s for o, s in zip(offset, self.stride))
        return phases[phase][(Ellipsis,) + tuple(slice(b, b + n) for b, n in zip(start, self.out_shape))]

    def offsets(self):
        return kernel_offsets(self.kernel)

    def window_starts(self, axis):
        """Image coordinate where each window starts along spatial `axis` (may be negative)."""
        return [o * self.stride[axis] - self.pad[axis] for o in range(self.out_shape[axis])]
