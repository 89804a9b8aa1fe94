"""Layers that route whole rows or blobs: Filter, BatchReindex, Parameter, Silence.

Filter and BatchReindex read their index bottom (a selector or a list of
row indices) and never take a gradient into it; `allow_force_backward` says
so, which lets force_backward nets use them where Caffe would stop.
"""

import numpy as np

from ..backend import get_array_module
from .base import Layer, register_layer


def scatter_add_rows(indices, rows, num_rows):
    """out[i] = sum of rows[j] with indices[j] == i, for i < num_rows (duplicates add up).

    One bincount over (row, column) pairs, so it is one code path for NumPy and CuPy.
    """
    xp = get_array_module(rows)
    width = rows.shape[1]
    flat = (indices.astype(np.int64)[:, None] * width + xp.arange(width)).ravel()
    summed = xp.bincount(flat, weights=rows.ravel(), minlength=num_rows * width)
    return summed.reshape(num_rows, width).astype(rows.dtype, copy=False)


@register_layer
class FilterLayer(Layer):
    """Keeps the items (rows along axis 0) whose selector value, in the last bottom, is non-zero.

    Top i takes bottom i's rows; the backward writes zeros into the rows that
    were dropped. Before any data (at setup) the tops take the full batch, as Caffe's.
    """

    type = "Filter"
    min_bottom_blobs = 2
    min_top_blobs = 1

    def setup(self, bottom, top):
        self.check(len(top) == len(bottom) - 1, "Top number should be equal to bottom number minus one "
                                                f"({len(top)} tops, {len(bottom)} bottoms)")
        self.first_reshape = True

    def reshape(self, bottom, top):
        selector = bottom[-1]
        self.check(all(d == 1 for d in selector.shape[1:]),
                   f"Selector blob dimensions must be singletons (1), except the first: {selector.shape}")
        for index, blob in enumerate(bottom[:-1]):
            self.check(blob.num_axes >= 1 and blob.shape[0] == selector.shape[0],
                       f"Each bottom should have the same 0th dimension as the selector blob: bottom[{index}] "
                       f"{blob.shape}, selector {selector.shape}")
        xp = get_array_module(selector.data)
        self.kept = xp.flatnonzero(selector.data.reshape(-1))
        rows = int(self.kept.size)
        if self.first_reshape:
            rows = bottom[0].shape[0]
            self.first_reshape = False
        for blob, out in zip(bottom, top):
            out.reshape((rows,) + blob.shape[1:])

    def forward(self, bottom, top):
        for blob, out in zip(bottom, top):
            out.data[...] = blob.data[self.kept]

    def backward(self, top, propagate_down, bottom):
        if propagate_down[len(bottom) - 1]:
            raise self.error("Filter Layer cannot backpropagate to filter index inputs")
        for i, out in enumerate(top):
            if propagate_down[i]:
                diff = bottom[i].diff
                diff[...] = 0
                diff[self.kept] = out.diff

    def allow_force_backward(self, bottom_index):
        return bottom_index != len(self.param.bottom) - 1


@register_layer
class BatchReindexLayer(Layer):
    """top[i] = bottom[0][bottom[1][i]]: selects, reorders or repeats items of a batch."""

    type = "BatchReindex"
    exact_num_bottom_blobs = 2
    exact_num_top_blobs = 1

    def reshape(self, bottom, top):
        self.check(bottom[1].num_axes == 1, f"the index bottom must have exactly one axis, got {bottom[1].shape}")
        top[0].reshape((bottom[1].shape[0],) + bottom[0].shape[1:])

    def _indices(self, bottom):
        xp = get_array_module(bottom[1].data)
        index = bottom[1].data.astype(np.int64)
        if int((index < 0).sum()):
            raise self.error("Index specified for reindex layer was negative.")
        if int((index >= bottom[0].shape[0]).sum()):
            raise self.error(f"Index specified for reindex layer was greater than batch size "
                             f"({bottom[0].shape[0]}).")
        return xp.asarray(index)

    def forward(self, bottom, top):
        top[0].data[...] = bottom[0].data[self._indices(bottom)]

    def backward(self, top, propagate_down, bottom):
        if propagate_down[1]:
            raise self.error("Cannot backprop to index.")
        if not propagate_down[0]:
            return
        n = bottom[0].shape[0]
        rows = top[0].diff.reshape(top[0].shape[0], -1)
        bottom[0].diff.reshape(n, -1)[...] = scatter_add_rows(self._indices(bottom), rows, n)

    def allow_force_backward(self, bottom_index):
        return bottom_index != 1


@register_layer
class ParameterLayer(Layer):
    """Outputs its own parameter blob (shape from parameter_param.shape): the top shares
    the parameter's data and diff, so gradients into the top are the parameter's."""

    type = "Parameter"
    exact_num_bottom_blobs = 0
    exact_num_top_blobs = 1

    def setup(self, bottom, top):
        if not len(self.blobs):
            self.blobs.add_blob(*self.param.parameter_param.shape.dim)

    def reshape(self, bottom, top):
        # Shared again on every pass: the net may swap in a blob shared by name after setup.
        top[0].reshape(self.blobs[0].shape)
        top[0].share_data(self.blobs[0])
        top[0].share_diff(self.blobs[0])

    def forward(self, bottom, top):
        """The top already shares the parameter."""


@register_layer
class SilenceLayer(Layer):
    """Consumes blobs so that they are not net outputs; their gradient is zero."""

    type = "Silence"
    min_bottom_blobs = 1
    exact_num_top_blobs = 0

    def reshape(self, bottom, top):
        """No top."""

    def forward(self, bottom, top):
        """Nothing to compute."""

    def backward(self, top, propagate_down, bottom):
        for blob, down in zip(bottom, propagate_down):
            if down:
                blob.diff[...] = 0
