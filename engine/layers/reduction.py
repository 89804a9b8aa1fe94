"""Layers that reduce over trailing axes: Reduction and ArgMax.

Both keep Caffe's output shapes exactly: Reduction drops every axis from
`axis` on (axis 0 gives a scalar); ArgMax without `axis` writes a blob of at
least three axes, (N, 1 or 2, top_k, 1, ...).
"""

import numpy as np

from ..backend import get_array_module
from .base import Layer, register_layer


@register_layer
class ReductionLayer(Layer):
    """SUM, ASUM (sum of |x|), SUMSQ or MEAN over the axes from `axis` on, times coeff."""

    type = "Reduction"
    exact_num_bottom_blobs = 1
    exact_num_top_blobs = 1

    def setup(self, bottom, top):
        p = self.param.reduction_param
        ops = self._caffe_pb2.ReductionParameter
        self.check(p.operation in (ops.SUM, ops.ASUM, ops.SUMSQ, ops.MEAN),
                   f"Unknown reduction operation: {p.operation}")
        self.op = p.operation
        self.ops = ops

    def reshape(self, bottom, top):
        p = self.param.reduction_param
        try:
            self.axis = bottom[0].canonical_axis(p.axis)
        except IndexError as exc:
            raise self.error(str(exc)) from None
        self.num = bottom[0].count_range(0, self.axis)
        self.dim = bottom[0].count_range(self.axis)
        top[0].reshape(bottom[0].shape[:self.axis])
        self.coeff = p.coeff / self.dim if self.op == self.ops.MEAN else p.coeff

    def forward(self, bottom, top):
        xp = get_array_module(bottom[0].data)
        x = bottom[0].data.reshape(self.num, self.dim)
        if self.op == self.ops.ASUM:
            x = xp.abs(x)
        elif self.op == self.ops.SUMSQ:
            x = x * x
        total = x.sum(axis=1)
        if self.coeff != 1:
            total *= self.coeff
        top[0].data.reshape(self.num)[...] = total

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        xp = get_array_module(top[0].diff)
        scale = (top[0].diff.reshape(self.num, 1) * self.coeff)
        dx = bottom[0].diff.reshape(self.num, self.dim)
        x = bottom[0].data.reshape(self.num, self.dim)
        if self.op == self.ops.ASUM:
            dx[...] = xp.sign(x) * scale
        elif self.op == self.ops.SUMSQ:
            dx[...] = x * (2 * scale)
        else:
            dx[...] = scale


def _top_k_descending(values, k):
    """Indices of the k largest entries of each row, as Caffe's partial_sort with
    std::greater on (value, index) pairs: equal values put the higher index first."""
    xp = get_array_module(values)
    rows, dim = values.shape
    index = xp.broadcast_to(xp.arange(dim, dtype=np.float64), (rows, dim))
    row = xp.broadcast_to(xp.arange(rows, dtype=np.float64)[:, None], (rows, dim))
    # lexsort: the last key is primary; every key ascending, hence the negations.
    keys = xp.stack([-index.ravel(), -values.astype(np.float64).ravel(), row.ravel()])
    order = xp.lexsort(keys).reshape(rows, dim) - (xp.arange(rows) * dim)[:, None]
    return order[:, :k]


@register_layer
class ArgMaxLayer(Layer):
    """Indices (and optionally values) of the top_k largest entries, per item or along `axis`."""

    type = "ArgMax"
    exact_num_bottom_blobs = 1
    exact_num_top_blobs = 1

    def setup(self, bottom, top):
        p = self.param.argmax_param
        self.out_max_val = p.out_max_val
        self.top_k = p.top_k
        self.has_axis = p.HasField("axis")
        self.check(self.top_k >= 1, "top k must not be less than 1.")
        if self.has_axis:
            try:
                self.axis = bottom[0].canonical_axis(p.axis)
            except IndexError as exc:
                raise self.error(str(exc)) from None
            self.check(self.top_k <= bottom[0].shape[self.axis],
                       f"top_k must be less than or equal to the dimension of the axis "
                       f"({self.top_k} > {bottom[0].shape[self.axis]})")
        else:
            self.check(self.top_k <= bottom[0].count_range(1),
                       "top_k must be less than or equal to the dimension of the flattened bottom blob per "
                       f"instance ({self.top_k} > {bottom[0].count_range(1)})")

    def reshape(self, bottom, top):
        if self.has_axis:
            shape = list(bottom[0].shape)
            shape[self.axis] = self.top_k
        else:
            shape = [1] * max(3, bottom[0].num_axes)
            shape[0] = bottom[0].shape[0]
            shape[1] = 2 if self.out_max_val else 1
            shape[2] = self.top_k
        top[0].reshape(shape)

    def forward(self, bottom, top):
        xp = get_array_module(bottom[0].data)
        x = bottom[0].data
        k = self.top_k
        if not self.has_axis:
            rows = x.reshape(x.shape[0], -1)
            index = _top_k_descending(rows, k)
            out = top[0].data.reshape(x.shape[0], -1, k)
            out[:, 0, :] = index
            if self.out_max_val:
                out[:, 1, :] = xp.take_along_axis(rows, index, axis=1)
            return
        moved = xp.moveaxis(x, self.axis, -1)
        rows = moved.reshape(-1, moved.shape[-1])
        index = _top_k_descending(rows, k)
        result = xp.take_along_axis(rows, index, axis=1) if self.out_max_val else index
        top[0].data[...] = xp.moveaxis(result.reshape(moved.shape[:-1] + (k,)), -1, self.axis)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            raise self.error("Backward is not implemented (Caffe's ArgMax has no gradient)")

    def allow_force_backward(self, bottom_index):
        # Caffe aborts here under force_backward; leaving the bottom out lets such nets run.
        return False
