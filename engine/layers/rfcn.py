"""R-FCN's position-sensitive ROI pooling (daijifeng001/caffe-rfcn): PSROIPooling.

bottom[0] holds output_dim x group_size^2 score maps, bottom[1] ROIs as rows
[batch_index, x1, y1, x2, y2]. Each ROI is cut into a group_size x
group_size grid, and output channel k at bin (i, j) averages map
(k * group_size + i) * group_size + j over that bin. As the fork: corners
are rounded (half away from zero) before scaling by spatial_scale, the
region is [x1, x2 + 1) x [y1, y2 + 1) scaled, at least 0.1 wide and high;
bin (i, j) spans [floor(i * bin + y1), ceil((i + 1) * bin + y1)) clipped to
the map, and an empty bin gives 0.

Bin sums come from a summed-area table of the maps (one gather for all ROIs
and bins), the backward's spreading of each bin's gradient from a
difference table summed the same way, both in float64.
"""

import numpy as np

from ..backend import get_array_module
from .base import Layer, register_layer
from .fast_rcnn import check_roi_shape, roi_rows, round_half_away


@register_layer
class PSROIPoolingLayer(Layer):
    type = "PSROIPooling"
    exact_num_bottom_blobs = 2
    exact_num_top_blobs = 1

    def allow_force_backward(self, bottom_index):
        return bottom_index == 0

    def setup(self, bottom, top):
        p = self.param.psroi_pooling_param
        for field in ("spatial_scale", "output_dim", "group_size"):
            self.check(p.HasField(field), f"psroi_pooling_param.{field} is required")
        self.check(p.output_dim > 0, "psroi_pooling_param.output_dim must be > 0")
        self.check(p.group_size > 0, "psroi_pooling_param.group_size must be > 0")
        self.spatial_scale = p.spatial_scale
        self.output_dim = int(p.output_dim)
        self.group = int(p.group_size)

    def reshape(self, bottom, top):
        self.check(bottom[0].data.ndim == 4, f"bottom[0] must be N x C x H x W, got shape {bottom[0].shape}")
        channels = bottom[0].shape[1]
        self.check(channels == self.output_dim * self.group * self.group,
                   f"input channel number does not match layer parameters: {channels} channels, "
                   f"output_dim * group_size^2 = {self.output_dim * self.group ** 2}")
        check_roi_shape(self, bottom[1])
        top[0].reshape((bottom[1].shape[0], self.output_dim, self.group, self.group))

    def _geometry(self, bottom):
        """Flat corner indices into the (N, C, H + 1, W + 1) tables and bin areas, per output element."""
        num, channels, height, width = bottom[0].shape
        rows, batch = roi_rows(self, bottom[1].data, num)
        dtype = np.dtype(bottom[0].data.dtype)
        scale = dtype.type(self.spatial_scale)
        corners = round_half_away(rows[:, 1:].astype(dtype))
        start_w, start_h = corners[:, 0] * scale, corners[:, 1] * scale
        end_w, end_h = (corners[:, 2] + 1) * scale, (corners[:, 3] + 1) * scale
        g = self.group
        steps = np.arange(g + 1, dtype=dtype)[None, :]
        edges = []
        for start, end, limit in ((start_h, end_h, height), (start_w, end_w, width)):
            size = np.maximum(end - start, dtype.type(0.1)) / dtype.type(g)
            at = steps * size[:, None] + start[:, None]
            lo = np.clip(np.floor(at[:, :-1]).astype(np.int64), 0, limit)
            hi = np.clip(np.ceil(at[:, 1:]).astype(np.int64), 0, limit)
            edges.append((lo, hi))
        (h0, h1), (w0, w1) = edges
        # Output (r, k, i, j) reads map (k * g + i) * g + j of image batch[r].
        maps = (np.arange(self.output_dim)[:, None, None] * g + np.arange(g)[None, :, None]) * g \
            + np.arange(g)[None, None, :]
        plane = (batch[:, None, None, None] * channels + maps[None]) * ((height + 1) * (width + 1))
        rows_lo, rows_hi = h0[:, None, :, None], h1[:, None, :, None]
        cols_lo, cols_hi = w0[:, None, None, :], w1[:, None, None, :]
        stride = width + 1
        corners = [plane + rows_hi * stride + cols_hi, plane + rows_lo * stride + cols_hi,
                   plane + rows_hi * stride + cols_lo, plane + rows_lo * stride + cols_lo]
        area = np.broadcast_to((h1 - h0)[:, None, :, None] * (w1 - w0)[:, None, None, :], plane.shape)
        return corners, area

    def forward(self, bottom, top):
        x = bottom[0].data
        xp = get_array_module(x)
        num, channels, height, width = x.shape
        corners, area = self._geometry(bottom)
        table = xp.zeros((num, channels, height + 1, width + 1), dtype=np.float64)
        table[:, :, 1:, 1:] = x.astype(np.float64).cumsum(axis=2).cumsum(axis=3)
        flat = table.ravel()
        total = (flat[xp.asarray(corners[0])] - flat[xp.asarray(corners[1])]
                 - flat[xp.asarray(corners[2])] + flat[xp.asarray(corners[3])])
        area = xp.asarray(area)
        top[0].data[...] = xp.where(area > 0, total / xp.maximum(area, 1), 0)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        x = bottom[0]
        xp = get_array_module(x.data)
        num, channels, height, width = x.shape
        corners, area = self._geometry(bottom)
        area = xp.asarray(area)
        share = xp.where(area > 0, top[0].diff.astype(np.float64) / xp.maximum(area, 1), 0).ravel()
        size = num * channels * (height + 1) * (width + 1)
        index = xp.asarray(np.concatenate([c.ravel() for c in corners]))
        weights = xp.concatenate([share, -share, -share, share])
        table = xp.bincount(index, weights=weights, minlength=size)
        table = table.reshape(num, channels, height + 1, width + 1)
        # x[h, w] enters every table entry (a, b) with a > h and b > w, so its gradient
        # is the marked table summed over those entries: running sums from the far ends.
        spread = table[:, :, ::-1, ::-1].cumsum(axis=2).cumsum(axis=3)[:, :, ::-1, ::-1]
        x.diff[...] = spread[:, :, 1:, 1:].astype(x.diff.dtype)
