"""ParseNet's layers (Wei Liu's ParseNet Caffe; debidatta/caffe-parsenet): UnPooling,
ParseOutput and ParseEvaluate. Its other additions live with the layers they
extend: Pooling's bin_size (pooling.py) and Normalize's fix_scale.

UnPooling spreads each input over a window of a larger top: window (h, w)
starts at (h * stride - pad, w * stride - pad), out_kernel wide; the top is
(H - 1) * stride - 2 * pad + kernel per axis. With a second bottom, kernel =
stride = ceil(its size / the input's) (stride 1 where that is its whole size)
and pad = floor(((input - 1) * stride + kernel - its size) / 2), per axis.
- FIXED: the input goes to its window's middle, trunc((start + end - 1) / 2)
  clamped to the top; where two inputs meet, the later (row-major) one wins,
  and the one it hid gets no gradient.
- REP: the input is added to each top position of its window (clipped to the
  top), and each top position is divided by the number of windows covering it.
- DIV: as REP, the input first divided by its window's size clipped to
  [-pad, top + pad) as AVE pooling counts it.
Windows and counts are separable by axis, so forward and backward are two
matrix products each.

ParseOutput: per pixel, the first channel of highest score (top 0, N x 1 x H
x W) and, with a second top, that score. ParseEvaluate: from predicted and
true label maps (N x 1 x H x W), a 1 x num_labels x 1 x 3 top holding, per
class, the pixels predicted right, the true pixels and the predicted pixels,
pixels whose true label is in ignore_label left out. Neither has a backward.
"""

import math

import numpy as np

from ..backend import get_array_module, to_host
from .base import Layer, register_layer


def _pair(p, size, h, w):
    """The fork's (h, w) from `size` or the `_h` / `_w` pair: (value, value) or None if neither is set."""
    if p.HasField(size):
        return getattr(p, size), getattr(p, size)
    if p.HasField(h) and p.HasField(w):
        return getattr(p, h), getattr(p, w)
    return None


@register_layer
class UnPoolingLayer(Layer):
    type = "UnPooling"
    min_bottom_blobs = 1
    max_bottom_blobs = 2
    exact_num_top_blobs = 1

    def setup(self, bottom, top):
        p = self.param.unpooling_param
        self.check(p.HasField("out_kernel_size") != (p.HasField("out_kernel_h") and p.HasField("out_kernel_w")),
                   "Out filter size is out_kernel_size OR out_kernel_h and out_kernel_w; not both")
        for name in ("out_pad", "out_stride"):
            has_h, has_w = p.HasField(f"{name}_h"), p.HasField(f"{name}_w")
            self.check((not p.HasField(name) and has_h and has_w) or (not has_h and not has_w),
                       f"{name} is {name} OR {name}_h and {name}_w are required.")
        self.method = p.unpool
        if len(bottom) == 1:
            self.kernel = _pair(p, "out_kernel_size", "out_kernel_h", "out_kernel_w")
            self.check(min(self.kernel) > 0, "Out filter dimensions cannot be zero.")
            self.stride = _pair(p, "out_stride", "out_stride_h", "out_stride_w") \
                or (p.out_stride, p.out_stride)
            self.pad = _pair(p, "out_pad", "out_pad_h", "out_pad_w") or (p.out_pad, p.out_pad)
            self.check(min(self.stride) > 0, "out_stride must be positive")

    def _geometry_from(self, size, target):
        """Kernel, stride and pad along one axis from the second bottom's size, as the fork derives them."""
        kernel = math.ceil(np.float32(target) / np.float32(size))
        stride = 1 if kernel == target else kernel
        pad = math.floor(((size - 1) * stride + kernel - target) / 2)
        return kernel, stride, pad

    def reshape(self, bottom, top):
        self.check(bottom[0].num_axes == 4, f"Input must have 4 axes (num, channels, height, width); "
                                            f"got {bottom[0].shape}")
        size = self.in_size = bottom[0].shape[2:]
        if len(bottom) == 2:
            self.check(bottom[1].num_axes == 4, f"bottom 1 (the size to unpool to) must have 4 axes; "
                                                f"got {bottom[1].shape}")
            axes = [self._geometry_from(s, t) for s, t in zip(size, bottom[1].shape[2:])]
            self.kernel, self.stride, self.pad = (tuple(a[i] for a in axes) for i in range(3))
        if any(self.pad):
            self.check(all(p < k for p, k in zip(self.pad, self.kernel)),
                       f"out_pad {self.pad} must be smaller than out_kernel {self.kernel}")
        self.out = tuple((s - 1) * st - 2 * p + k for s, st, p, k in zip(size, self.stride, self.pad, self.kernel))
        self.check(min(self.out) > 0, f"the unpooled size {self.out} of input {bottom[0].shape} is empty")
        top[0].reshape(bottom[0].shape[:2] + self.out)
        self._tables = None

    def _axis_tables(self, xp, dtype):
        """Per axis: the window matrix (out x in), scaled by 1 / window size for DIV, and covering counts;
        for FIXED, the (target, source) index pairs that survive overwriting."""
        FIXED, DIV = self._caffe_pb2.UnPoolingParameter.FIXED, self._caffe_pb2.UnPoolingParameter.DIV
        tables = []
        for size, out, k, s, p in zip(self.in_size, self.out, self.kernel, self.stride, self.pad):
            start = np.arange(size) * s - p
            if self.method == FIXED:
                middle = np.clip(np.trunc((2 * start + k - 1) / 2).astype(np.int64), 0, out - 1)
                winner = {}  # target -> the last source writing it
                for source, target in enumerate(middle):
                    winner[int(target)] = source
                targets = np.array(sorted(winner), dtype=np.int64)
                tables.append((xp.asarray(targets), xp.asarray([winner[t] for t in targets.tolist()])))
                continue
            end = np.minimum(start + k, out + p)
            lo, hi = np.maximum(start, 0), np.minimum(end, out)
            positions = np.arange(out)[:, None]
            window = ((positions >= lo[None, :]) & (positions < hi[None, :])).astype(np.float64)
            counts = window.sum(axis=1)
            if self.method == DIV:
                window = window / (end - start)[None, :]
            tables.append((xp.asarray(window, dtype=dtype), xp.asarray(np.maximum(counts, 1), dtype=dtype)))
        return tables

    def _tables_for(self, array):
        xp = get_array_module(array)
        key = (xp, array.dtype)
        if self._tables is None or self._tables[0] != key:
            self._tables = (key, self._axis_tables(xp, array.dtype))
        return self._tables[1]

    def forward(self, bottom, top):
        x = bottom[0].data
        (rows, row_counts), (cols, col_counts) = self._tables_for(x)
        y = top[0].data
        if self.method == self._caffe_pb2.UnPoolingParameter.FIXED:  # (targets, sources) per axis
            y[...] = 0
            y[:, :, rows[:, None], cols[None, :]] = x[:, :, row_counts[:, None], col_counts[None, :]]
            return
        xp = get_array_module(x)
        spread = xp.matmul(xp.matmul(rows, x), cols.T)
        y[...] = spread / (row_counts[:, None] * col_counts[None, :])

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        dy = top[0].diff
        (rows, row_counts), (cols, col_counts) = self._tables_for(dy)
        dx = bottom[0].diff
        if self.method == self._caffe_pb2.UnPoolingParameter.FIXED:  # (targets, sources) per axis
            dx[...] = 0
            dx[:, :, row_counts[:, None], col_counts[None, :]] = dy[:, :, rows[:, None], cols[None, :]]
            return
        xp = get_array_module(dy)
        shared = dy / (row_counts[:, None] * col_counts[None, :])
        dx[...] = xp.matmul(xp.matmul(rows.T, shared), cols)

    def allow_force_backward(self, bottom_index):
        return bottom_index == 0


@register_layer
class ParseOutputLayer(Layer):
    type = "ParseOutput"
    exact_num_bottom_blobs = 1
    min_top_blobs = 1
    max_top_blobs = 2

    def reshape(self, bottom, top):
        self.check(bottom[0].num_axes == 4, f"needs a num x channels x height x width bottom; "
                                            f"got {bottom[0].shape}")
        num, _, height, width = bottom[0].shape
        for blob in top:
            blob.reshape((num, 1, height, width))

    def forward(self, bottom, top):
        x = bottom[0].data
        xp = get_array_module(x)
        label = xp.argmax(x, axis=1)[:, None]  # the first maximum, as the fork's strict >
        top[0].data[...] = label
        if len(top) > 1:
            top[1].data[...] = xp.take_along_axis(x, label, axis=1)


@register_layer
class ParseEvaluateLayer(Layer):
    type = "ParseEvaluate"
    exact_num_bottom_blobs = 2
    exact_num_top_blobs = 1

    def setup(self, bottom, top):
        p = self.param.parse_evaluate_param
        self.check(p.HasField("num_labels"), "parse_evaluate_param.num_labels is required")
        self.check(p.num_labels > 0, f"num_labels must be positive (got {p.num_labels})")
        self.num_labels = int(p.num_labels)
        self.ignore = sorted(set(p.ignore_label))

    def reshape(self, bottom, top):
        pred, truth = bottom[0].shape, bottom[1].shape
        self.check(len(pred) == 4 and len(truth) == 4 and pred[1] == truth[1] == 1 and pred == truth,
                   f"the predicted and true label maps must both be num x 1 x height x width; "
                   f"got {pred} and {truth}")
        top[0].reshape((1, self.num_labels, 1, 3))

    def forward(self, bottom, top):
        pred = to_host(bottom[0].data).reshape(-1).astype(np.int64)  # C's int conversion truncates
        truth = to_host(bottom[1].data).reshape(-1).astype(np.int64)
        keep = ~np.isin(truth, self.ignore)
        pred, truth = pred[keep], truth[keep]
        for name, labels in (("predicted", pred), ("true", truth)):
            bad = (labels < 0) | (labels >= self.num_labels)
            if bad.any():
                raise self.error(f"{name} label {int(labels[bad][0])} outside [0, {self.num_labels - 1}]")
        counts = np.zeros((self.num_labels, 3))
        counts[:, 0] = np.bincount(truth[pred == truth], minlength=self.num_labels)
        counts[:, 1] = np.bincount(truth, minlength=self.num_labels)
        counts[:, 2] = np.bincount(pred, minlength=self.num_labels)
        xp = get_array_module(top[0].data)
        top[0].data[...] = xp.asarray(counts.reshape(1, self.num_labels, 1, 3), dtype=top[0].data.dtype)


__all__ = ["ParseEvaluateLayer", "ParseOutputLayer", "UnPoolingLayer"]
