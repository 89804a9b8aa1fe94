"""Pooling: MAX (with Caffe's optional argmax top), AVE and STOCHASTIC.

Windows are visited kernel offset by kernel offset over a stride-phase split
of the padded bottom (engine.im2col.OffsetWindows), so every step is one
unit-stride, whole-batch array operation. Caffe's numbers, not the textbook's:
- output sizes ceil by default (round_mode: FLOOR, or the forks' ceil_mode: false,
  floors them) and drop a last window that starts in the padding;
- MAX takes the first maximum in row-major window order (values above -FLT_MAX
  only, so a window with no such value gives -FLT_MAX and index -1), and the
  optional second top holds that input's flat index h * W + w, as a float;
- AVE divides by the window clipped to the padded bottom, [-pad, size + pad),
  padding counted, not by the number of valid inputs;
- STOCHASTIC (Caffe has it on the GPU only) samples an input with probability
  proportional to its value in TRAIN, and takes sum(x^2) / (FLT_MIN + sum(x))
  in TEST. Caffe's backward in TEST reuses whatever the last TRAIN pass drew;
  here it is the exact gradient of the TEST formula.
ParseNet's bin_size (or bin_h and bin_w) pools into that many bins whatever the
input size, as its fork derives the window per input: kernel = ceil(size /
bins), stride = kernel (1 where the kernel is the whole size), pad =
floor(((bins - 1) * stride + kernel - size) / 2); bins at most half the size.
Windows never straddle both sides of the image, so an empty window can only
occur with kernel < stride and no padding; AVE gives 0 there, where Caffe
divides by a non-positive size.

On the GPU, MAX and AVE run as one CUDA kernel per pass (engine/cuda/pooling.py),
and on the CPU as multi-threaded kernels (engine/cpu/pooling.py), with the same
rules; STOCHASTIC keeps the array code below on both.
"""

import math

import numpy as np

from .. import backend, caffe_pb2, cpu
from ..backend import get_array_module
from ..cuda import pooling as gpu_pooling
from ..geometry import GeometryError, pool_output_size, pool_spatial_params, pool_window_sizes
from ..im2col import OffsetWindows, pad_spatial, window_view
from .base import Layer, register_layer

MAX = caffe_pb2.PoolingParameter.MAX
AVE = caffe_pb2.PoolingParameter.AVE
STOCHASTIC = caffe_pb2.PoolingParameter.STOCHASTIC
CEIL = caffe_pb2.PoolingParameter.CEIL
FLT_MAX = float(np.finfo(np.float32).max)
FLT_MIN = float(np.finfo(np.float32).tiny)
# Up to this many offsets per window, MAX finds its argmax offset by offset.
LOOP_OFFSETS = 64


def _lowest_bit_table(xp):
    """Index of the lowest set bit of every 16-bit value (-1 for 0), as int8."""
    values = np.arange(1 << 16, dtype=np.int64)
    table = np.full(1 << 16, -1, dtype=np.int8)
    lowest = values & -values
    table[1:] = np.log2(lowest[1:]).astype(np.int8)
    return xp.asarray(table)


_TABLES = {}


def _first_set_bit(bits):
    """Index of the lowest set bit of each element, -1 where none is set."""
    xp = get_array_module(bits)
    if bits.dtype.itemsize <= 2:
        table = _TABLES.get(xp)
        if table is None:
            table = _TABLES[xp] = _lowest_bit_table(xp)
        return table[bits]
    lowest = bits & (~bits + bits.dtype.type(1))
    _, exponent = xp.frexp(lowest.astype(np.float32))
    return exponent.astype(np.int32) - 1


def _bit_dtype(count):
    for dtype in (np.uint8, np.uint16, np.uint32, np.uint64):
        if count <= np.dtype(dtype).itemsize * 8:
            return dtype
    raise ValueError(f"{count} offsets do not fit a bit mask")


@register_layer
class PoolingLayer(Layer):
    type = "Pooling"
    exact_num_bottom_blobs = 1
    min_top_blobs = 1

    @property
    def max_top_blobs(self):
        return 2 if self.param.pooling_param.pool == MAX else 1

    def setup(self, bottom, top):
        p = self.param.pooling_param
        self.method = p.pool
        self.check(self.method in (MAX, AVE, STOCHASTIC), f"Unknown pooling method {self.method}.")
        self.bins = self._bins(p)
        if self.bins:  # kernel, stride and pad follow from each input's size
            self.kernel_param, self.stride, self.pad = None, (1, 1), (0, 0)
        else:
            try:
                self.kernel_param, self.stride, self.pad = pool_spatial_params(p)
            except GeometryError as exc:
                raise self.error(str(exc)) from None
        self.global_pooling = p.global_pooling
        self.ceil_mode = p.round_mode == CEIL
        if p.HasField("ceil_mode"):  # the forks' older switch for the same rounding
            self.check(not p.HasField("round_mode") or p.ceil_mode == self.ceil_mode,
                       f"ceil_mode: {str(p.ceil_mode).lower()} contradicts round_mode: "
                       f"{caffe_pb2.PoolingParameter.RoundMode.Name(p.round_mode)}")
            self.ceil_mode = p.ceil_mode
        if any(self.pad):
            self.check(self.method in (MAX, AVE), "Padding implemented only for average and max pooling.")
        self._argmax = None
        self._mask = None
        self._divisors = {}

    def _bins(self, p):
        """ParseNet's (bin_h, bin_w), or None."""
        if not (p.HasField("bin_size") or p.HasField("bin_h") or p.HasField("bin_w")):
            return None
        self.check(p.HasField("bin_size") or (p.HasField("bin_h") and p.HasField("bin_w")),
                   "For non-grid bins both bin_h and bin_w are required.")
        self.check(not p.global_pooling, "With Global_pooling: cannot use bin option")
        bins = (p.bin_size,) * 2 if p.HasField("bin_size") else (p.bin_h, p.bin_w)
        self.check(min(bins) > 0, "Bin # cannot be zero.")
        return bins

    def _bin_geometry(self, spatial):
        kernel, stride, pad = [], [], []
        for size, bins, axis in zip(spatial, self.bins, ("height", "width")):
            self.check(bins <= size // 2, f"Bin # in {axis} direction cannot be larger than half of {axis} "
                                          f"({bins} bins, {axis} {size})")
            k = math.ceil(np.float32(size) / np.float32(bins))
            s = 1 if k == size else k
            kernel.append(k)
            stride.append(s)
            pad.append(math.floor(((bins - 1) * s + k - size) / 2))
        self.kernel, self.stride, self.pad = tuple(kernel), tuple(stride), tuple(pad)
        if any(self.pad):
            self.check(self.method in (MAX, AVE), "Padding implemented only for average and max pooling.")

    def reshape(self, bottom, top):
        self.check(bottom[0].num_axes == 4, "Input must have 4 axes, corresponding to "
                   f"(num, channels, height, width); bottom shape is {bottom[0].shape}")
        spatial = bottom[0].shape[2:]
        if self.bins:
            self._bin_geometry(spatial)
        else:
            self.kernel = tuple(spatial) if self.global_pooling else self.kernel_param
        for k, p, axis in zip(self.kernel, self.pad, "hw"):
            self.check(p < k, f"pad_{axis} ({p}) must be smaller than kernel_{axis} ({k})")
        clip = any(self.pad)
        try:
            out = tuple(pool_output_size(size, k, p, s, self.ceil_mode, clip)
                        for size, k, p, s in zip(spatial, self.kernel, self.pad, self.stride))
        except GeometryError as exc:
            raise self.error(f"bottom shape {bottom[0].shape}: {exc}") from None
        self.out_shape = out
        self.windows = OffsetWindows(spatial, self.kernel, self.stride, self.pad, out)
        top[0].reshape(bottom[0].shape[:2] + out)
        if len(top) > 1:
            top[1].reshape(top[0].shape)

    # -- forward ------------------------------------------------------------------------
    def _on_gpu(self, array):
        return self.method in (MAX, AVE) and get_array_module(array) is not np

    def _forward_gpu(self, x, top):
        xp = get_array_module(x)
        geometry = (self.kernel, self.stride, self.pad)
        if self.method == MAX:
            self._mask = xp.empty(top[0].shape, dtype=np.int32)
            gpu_pooling.max_forward(x, *geometry, self.out_shape, top[0].data, self._mask)
            if len(top) > 1:
                top[1].data[...] = self._mask
        else:
            gpu_pooling.ave_forward(x, self._divisor(x), *geometry, top[0].data)

    def _backward_gpu(self, dy, bottom):
        geometry = (self.kernel, self.stride, self.pad)
        if self.method == MAX:
            self.check(self._mask is not None, "backward called before forward")
            gpu_pooling.max_backward(dy, self._mask, *geometry, bottom.diff)
        else:
            gpu_pooling.ave_backward(dy, self._divisor(bottom.data), *geometry, bottom.diff)

    def _on_cpu_kernels(self, *arrays):
        return self.method in (MAX, AVE) and cpu.usable(*arrays)

    def _forward_cpu(self, x, top):
        kernels = cpu.kernels("pooling")
        geometry = (*self.kernel, *self.stride, *self.pad)
        if self.method == MAX:
            if self._mask is None or self._mask.shape != top[0].shape or not isinstance(self._mask, np.ndarray):
                self._mask = np.empty(top[0].shape, dtype=np.int32)
            kernels.max_forward(x, *geometry, top[0].data, self._mask)
            if len(top) > 1:
                top[1].data[...] = self._mask
        else:
            kernels.ave_forward(x, self._divisor(x), *geometry, top[0].data)

    def _backward_cpu(self, dy, bottom):
        kernels = cpu.kernels("pooling")
        if self.method == MAX:
            self.check(self._mask is not None, "backward called before forward")
            kernels.max_backward(dy, self._mask, bottom.diff)
        else:
            kernels.ave_backward(dy, self._divisor(bottom.data), *self.kernel, *self.stride, *self.pad,
                                 bottom.diff)

    def forward(self, bottom, top):
        x = bottom[0].data
        if self._on_gpu(x):
            self._forward_gpu(x, top)
            return
        # Backward takes the path this forward took (the kernels may become ready in between).
        self._kernel_forward = self._on_cpu_kernels(x, top[0].data)
        if self._kernel_forward:
            self._forward_cpu(x, top)
            return
        if self.method == MAX:
            values, self._argmax = self._max(x)
            top[0].data[...] = values
            if len(top) > 1:
                top[1].data[...] = self._flat_index(self._argmax, x.shape[3])
        elif self.method == AVE:
            top[0].data[...] = self._sum(x) / self._divisor(x)
        elif self.phase == caffe_pb2.TRAIN:
            top[0].data[...], self._argmax = self._sample(x)
        else:
            top[0].data[...] = self._weighted_average(x)[0]

    def _max(self, x):
        xp = get_array_module(x)
        windows = self.windows
        if windows.num_offsets <= LOOP_OFFSETS:
            phases = windows.split(x, -np.inf)
            slices = [windows.at(phases, offset) for offset in windows.offsets()]
            best = slices[0].copy()
            for view in slices[1:]:
                xp.fmax(best, view, out=best)  # fmax: a NaN input never wins, as in Caffe
            # Bit k of `bits` says offset k holds the maximum; the lowest set bit is Caffe's choice.
            dtype = _bit_dtype(len(slices))
            bits = xp.zeros(best.shape, dtype=dtype)
            equal = xp.empty(best.shape, dtype=bool)
            flag = xp.empty(best.shape, dtype=dtype)
            for index, view in enumerate(slices):
                xp.equal(view, best, out=equal)
                xp.multiply(equal, dtype(1 << index), out=flag)
                bits |= flag
            argmax = _first_set_bit(bits)
        else:
            view = self._padded_view(x, -np.inf)[1]
            flat = view.reshape(x.shape[:2] + (windows.num_offsets,) + self.out_shape)
            argmax = xp.argmax(flat, axis=2).astype(np.int32)
            best = xp.take_along_axis(flat, argmax[:, :, None], axis=2)[:, :, 0]
        valid = best > -FLT_MAX
        self._all_chosen = bool(valid.all())
        if not self._all_chosen:
            best = xp.where(valid, best, x.dtype.type(-FLT_MAX))
            argmax = xp.where(valid, argmax, -1)
        return best, argmax

    def _flat_index(self, argmax, width):
        """Caffe's mask: the chosen input's index h * W + w within its channel (-1: none)."""
        xp = get_array_module(argmax)
        kh, kw = self.kernel
        rows = xp.asarray(self.windows.window_starts(0), dtype=np.int64).reshape(-1, 1)
        cols = xp.asarray(self.windows.window_starts(1), dtype=np.int64).reshape(1, -1)
        # Offset k = i * kw + j lies i rows and j columns into its window.
        steps = xp.asarray([i * width + j for i in range(kh) for j in range(kw)], dtype=np.int64)
        index = rows * width + cols + steps[xp.maximum(argmax, 0)]
        return index if self._all_chosen else xp.where(argmax >= 0, index, -1)

    def _route(self, dy, bottom):
        """Bottom diff of MAX and STOCHASTIC (TRAIN): each top diff goes to its chosen input."""
        xp = get_array_module(dy)
        num, channels, height, width = bottom.shape
        plane = height * width
        within = self._flat_index(self._argmax, width)
        index = within + (xp.arange(num * channels, dtype=np.int64) * plane).reshape(num, channels, 1, 1)
        values = dy
        if not self._all_chosen:
            values = xp.where(within >= 0, dy, 0)
            index = xp.where(within >= 0, index, 0)
        diff = bottom.diff.reshape(-1)
        diff[...] = 0
        xp.add.at(diff, index.reshape(-1), values.reshape(-1))

    def _padded_view(self, array, fill):
        """Window view (num, channels, kh, kw, out_h, out_w) over `array` padded with `fill`."""
        after = [max(0, (n - 1) * s + k - p - size) for n, s, k, p, size
                 in zip(self.out_shape, self.stride, self.kernel, self.pad, array.shape[2:])]
        padded = pad_spatial(array, self.pad, after, fill)
        return padded, window_view(padded, self.kernel, self.stride, (1, 1), self.out_shape)

    def _sum(self, x):
        """Window sums, padding counting as zeros."""
        windows = self.windows
        if windows.num_offsets > LOOP_OFFSETS:
            return get_array_module(x).sum(self._padded_view(x, 0)[1], axis=(2, 3))
        phases = windows.split(x, 0)
        offsets = list(windows.offsets())
        total = windows.at(phases, offsets[0]).copy()
        for offset in offsets[1:]:
            total += windows.at(phases, offset)
        return total

    def _spread(self, share, bottom):
        """AVE backward: every input receives the shares of the windows that cover it."""
        xp = get_array_module(share)
        windows = self.windows
        disjoint = all(s >= k for s, k in zip(self.stride, self.kernel))
        if windows.num_offsets > LOOP_OFFSETS and disjoint:
            # Windows do not overlap: write each share through the window view at once.
            padded, view = self._padded_view(xp.zeros(bottom.shape, dtype=share.dtype), 0)
            view[...] = share[:, :, None, None]
            inner = (Ellipsis,) + tuple(slice(p, p + size) for p, size in zip(self.pad, bottom.shape[2:]))
            bottom.diff[...] = padded[inner]
            return
        grads = windows.zeros(xp, share.shape[:2], share.dtype)
        for offset in windows.offsets():
            windows.at(grads, offset)[...] += share
        windows.merge(grads, bottom.diff)

    def _divisor(self, x):
        """Each window's AVE divisor, (out_h, out_w), kept until the shapes change."""
        xp = get_array_module(x)
        key = (xp.__name__, x.dtype, x.shape[2:], self.out_shape)
        if self._divisors.get("key") != key:
            self._divisors = {"key": key, "table": self._divisor_table(x, xp)}
        return self._divisors["table"]

    def _divisor_table(self, x, xp):
        h = pool_window_sizes(x.shape[2], self.kernel[0], self.pad[0], self.stride[0], self.out_shape[0])
        w = pool_window_sizes(x.shape[3], self.kernel[1], self.pad[1], self.stride[1], self.out_shape[1])
        sizes = np.outer(np.maximum(h, 1), np.maximum(w, 1))  # empty windows sum to 0 anyway
        return xp.asarray(sizes, dtype=x.dtype)

    def _sample(self, x):
        """STOCHASTIC, TRAIN: pick the first input whose running sum reaches u * window sum."""
        xp = get_array_module(x)
        phases = self.windows.split(x, 0)
        slices = [self.windows.at(phases, offset) for offset in self.windows.offsets()]
        total = sum(slices[1:], slices[0].copy())
        draw = backend.random_module(xp).random(total.shape)
        threshold = xp.asarray(draw, dtype=x.dtype) * total
        running = xp.zeros_like(total)
        chosen = xp.full(total.shape, -1, dtype=np.int32)
        values = xp.zeros_like(total)
        for index, view in enumerate(slices):
            running += view
            hit = (running >= threshold) & (chosen < 0)
            values = xp.where(hit, view, values)
            chosen = xp.where(hit, index, chosen)
        self._all_chosen = bool((chosen >= 0).all())
        return values, chosen

    def _weighted_average(self, x):
        """STOCHASTIC, TEST: sum(x^2) / (FLT_MIN + sum(x)) over each window."""
        phases = self.windows.split(x, 0)
        slices = [self.windows.at(phases, offset) for offset in self.windows.offsets()]
        total = sum(slices[1:], slices[0].copy()) + x.dtype.type(FLT_MIN)
        squares = sum((view * view for view in slices[1:]), slices[0] * slices[0])
        return squares / total, total, slices

    # -- backward -----------------------------------------------------------------------
    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        dy = top[0].diff
        if self._on_gpu(dy):
            self._backward_gpu(dy, bottom[0])
            return
        if getattr(self, "_kernel_forward", False) and self._on_cpu_kernels(dy, bottom[0].diff):
            self._backward_cpu(dy, bottom[0])
            return
        if self.method == AVE:
            self._spread(dy / self._divisor(bottom[0].data), bottom[0])
        elif self.method == MAX or self.phase == caffe_pb2.TRAIN:
            self.check(self._argmax is not None, "backward called before forward")
            self._route(dy, bottom[0])
        else:
            xp = get_array_module(dy)
            windows = self.windows
            grads = windows.zeros(xp, dy.shape[:2], dy.dtype)
            average, total, slices = self._weighted_average(bottom[0].data)
            scale = dy / total
            for offset, view in zip(windows.offsets(), slices):
                windows.at(grads, offset)[...] += (2 * view - average) * scale
            windows.merge(grads, bottom[0].diff)
