"""Fast/Faster R-CNN's layers (rbgirshick/caffe-fast-rcnn): ROIPooling and SmoothL1Loss.

ROIPooling max-pools each region of interest (bottom[1]: rows of
[batch_index, x1, y1, x2, y2] in image coordinates) into a pooled_h x
pooled_w grid over bottom[0]. As the fork: corners are scaled by
spatial_scale and rounded half away from zero, a region is at least 1 x 1,
bin (ph, pw) spans rows [floor(ph * h / pooled_h), ceil((ph + 1) * h /
pooled_h)) from the region's start, clipped to the map; an empty bin gives 0.
The first maximum in row-major order is the one whose position takes the
gradient. The fork's backward sends nothing back through a region whose
rounded end lies before its start (it forward-pools such a region as 1 x 1).

SmoothL1Loss over d = inside_weights * (pred - target):
    loss = sum(outside_weights * f(d)) / num,
    f(d) = 0.5 * (sigma * d)^2 if |d| < 1 / sigma^2, else |d| - 0.5 / sigma^2,
with the weights optional (both or neither). Gradients flow to pred and
target, scaled by both weights.

SSD (weiliu89/caffe) registers a SmoothL1Loss of its own under the same
name, with one optional weights bottom: d = weights * (pred - target), the
same loss with sigma 1 and no outside weights. Fast R-CNN refuses three
bottoms, so three bottoms mean SSD's layer, and its backward is SSD's too:
f'(d) goes back unscaled by the weights (the fork's gradient leaves them
out; where the weights are 0 or 1, as SSD's masks are, that is exact).
"""

import numpy as np

from ..backend import get_array_module, to_host
from .base import Layer, register_layer
from .loss import LossLayer

# Bytes of gathered window values per chunk of ROIs in ROIPooling's forward.
_GATHER_BUDGET = 1 << 26


def round_half_away(values):
    """C's round(): halves away from zero (NumPy's round goes to even)."""
    low, high = np.floor(values), np.ceil(values)
    up = (values - low) >= 0.5
    down = (high - values) >= 0.5
    return np.where(values >= 0, np.where(up, high, low), np.where(down, low, high))


def check_roi_shape(layer, rois):
    """At reshape: bottom[1] holds 5 values per ROI (batch_index, x1, y1, x2, y2)."""
    shape = tuple(rois.shape)
    layer.check(len(shape) >= 1 and (shape[0] == 0 or rois.count == 5 * shape[0]),
                f"ROI blob must hold 5 values per ROI (batch_index, x1, y1, x2, y2), got shape {shape}")


def roi_rows(layer, rois, num_images):
    """bottom[1] as host rows (R, 5), the batch indices checked."""
    count = rois.shape[0] if rois.ndim else 0
    per_roi = rois.size // count if count else 5
    layer.check(per_roi == 5, f"ROI blob must hold 5 values per ROI (batch_index, x1, y1, x2, y2), "
                              f"got shape {rois.shape}")
    rows = to_host(rois).reshape(count, 5)
    batch = rows[:, 0].astype(np.int64)  # C's int conversion truncates
    bad = (batch < 0) | (batch >= num_images)
    if bad.any():
        raise layer.error(f"ROI {int(np.flatnonzero(bad)[0])} has batch index {rows[bad][0, 0]:g}, "
                          f"outside [0, {num_images - 1}]")
    return rows, batch


@register_layer
class ROIPoolingLayer(Layer):
    type = "ROIPooling"
    exact_num_bottom_blobs = 2
    exact_num_top_blobs = 1

    def setup(self, bottom, top):
        p = self.param.roi_pooling_param
        self.check(p.pooled_h > 0, "roi_pooling_param.pooled_h must be > 0")
        self.check(p.pooled_w > 0, "roi_pooling_param.pooled_w must be > 0")
        self.pooled = (int(p.pooled_h), int(p.pooled_w))
        self.spatial_scale = p.spatial_scale

    def reshape(self, bottom, top):
        self.check(bottom[0].data.ndim == 4, f"bottom[0] must be N x C x H x W, got shape {bottom[0].shape}")
        check_roi_shape(self, bottom[1])
        top[0].reshape((bottom[1].shape[0], bottom[0].shape[1]) + self.pooled)

    def _bins(self, rows, dtype, height, width):
        """Per ROI and bin: [start, end) rows (R, PH) and columns (R, PW), and the well-formed mask."""
        scale = dtype.type(self.spatial_scale)
        corners = round_half_away(rows[:, 1:].astype(dtype) * scale).astype(np.int64)
        start_w, start_h, end_w, end_h = corners.T
        bins = []
        for start, end, pooled, limit in ((start_h, end_h, self.pooled[0], height),
                                          (start_w, end_w, self.pooled[1], width)):
            size = np.maximum(end - start + 1, 1).astype(dtype) / dtype.type(pooled)
            steps = np.arange(pooled + 1, dtype=dtype)[None, :] * size[:, None]
            lo = np.floor(steps[:, :-1]).astype(np.int64) + start[:, None]
            hi = np.ceil(steps[:, 1:]).astype(np.int64) + start[:, None]
            bins.append((np.clip(lo, 0, limit), np.clip(hi, 0, limit)))
        well_formed = (end_w >= start_w) & (end_h >= start_h)
        return bins[0], bins[1], well_formed

    def forward(self, bottom, top):
        x = bottom[0].data
        xp = get_array_module(x)
        num, channels, height, width = x.shape
        rows, batch = roi_rows(self, bottom[1].data, num)
        (h0, h1), (w0, w1), self.well_formed = self._bins(rows, np.dtype(x.dtype), height, width)
        count = len(rows)
        ph, pw = self.pooled
        out = top[0].data
        self.argmax = xp.full((count, channels, ph, pw), -1, dtype=np.int64)
        if count == 0:
            return
        span_h = max(int((h1 - h0).max()), 1)
        span_w = max(int((w1 - w0).max()), 1)
        rows_at = h0[:, :, None] + np.arange(span_h)  # (R, PH, Lh)
        cols_at = w0[:, :, None] + np.arange(span_w)  # (R, PW, Lw)
        valid = (rows_at < h1[:, :, None])[:, :, None, :, None] & (cols_at < w1[:, :, None])[:, None, :, None, :]
        rows_at = np.minimum(rows_at, height - 1)
        cols_at = np.minimum(cols_at, width - 1)
        channels_last = x.transpose(0, 2, 3, 1)
        per_roi = ph * pw * span_h * span_w * channels * x.itemsize
        step = max(1, _GATHER_BUDGET // max(per_roi, 1))
        for first in range(0, count, step):
            part = slice(first, min(first + step, count))
            n = part.stop - part.start
            b = xp.asarray(batch[part])[:, None, None, None, None]
            hh = xp.asarray(rows_at[part])[:, :, None, :, None]
            ww = xp.asarray(cols_at[part])[:, None, :, None, :]
            windows = channels_last[b, hh, ww]  # (n, PH, PW, Lh, Lw, C)
            mask = xp.asarray(valid[part])[..., None]
            windows = xp.where(mask, windows, -xp.inf).reshape(n, ph, pw, span_h * span_w, channels)
            pick = windows.argmax(axis=3)  # first maximum, row-major as the fork's loops
            best = xp.take_along_axis(windows, pick[:, :, :, None, :], axis=3)[:, :, :, 0, :]
            empty = xp.asarray(~valid[part].any(axis=(3, 4)))[..., None]  # (n, PH, PW, 1)
            grid = (xp.asarray(rows_at[part])[:, :, None, :, None] * width
                    + xp.asarray(cols_at[part])[:, None, :, None, :]).reshape(n * ph * pw, span_h * span_w)
            position = grid[xp.arange(n * ph * pw)[:, None], pick.reshape(n * ph * pw, channels)]
            position = position.reshape(n, ph, pw, channels)
            out[part] = xp.where(empty, 0, best).transpose(0, 3, 1, 2)
            self.argmax[part] = xp.where(empty, -1, position).transpose(0, 3, 1, 2)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        x = bottom[0]
        xp = get_array_module(x.data)
        num, channels, height, width = x.shape
        rows, batch = roi_rows(self, bottom[1].data, num)
        count = len(rows)
        if count == 0:
            x.diff[...] = 0
            return
        plane = (xp.asarray(batch)[:, None] * channels + xp.arange(channels)[None, :]) * (height * width)
        keep = (self.argmax >= 0) & xp.asarray(self.well_formed)[:, None, None, None]
        index = xp.where(keep, self.argmax + plane[:, :, None, None], 0).ravel()
        weights = xp.where(keep, top[0].diff, 0).ravel()
        summed = xp.bincount(index, weights=weights, minlength=x.data.size)
        x.diff[...] = summed.reshape(x.shape).astype(x.diff.dtype)


@register_layer
class SmoothL1LossLayer(LossLayer):
    type = "SmoothL1Loss"
    exact_num_bottom_blobs = None
    min_bottom_blobs = 2
    max_bottom_blobs = 4

    def allow_force_backward(self, bottom_index):
        return True

    def setup(self, bottom, top):
        sigma = self.param.smooth_l1_loss_param.sigma
        self.sigma2 = float(sigma) * float(sigma)
        self.has_weights = len(bottom) >= 3
        self.ssd_weights = len(bottom) == 3  # SSD's form: pred, target, weights

    def reshape(self, bottom, top):
        super().reshape(bottom, top)
        legacy = [tuple(b.shape[1:]) + (1,) * (4 - len(b.shape)) for b in bottom]
        names = ["prediction", "target", "weights" if self.ssd_weights else "inside weights", "outside weights"]
        for index in range(1, len(bottom)):
            self.check(bottom[index].shape[:1] == bottom[0].shape[:1] and legacy[index] == legacy[0],
                       f"{names[index]} shape {bottom[index].shape} does not match the prediction's "
                       f"{bottom[0].shape}")

    def forward(self, bottom, top):
        xp = get_array_module(bottom[0].data)
        count = bottom[0].data.size
        diff = bottom[0].data.reshape(count) - bottom[1].data.reshape(count)
        if self.has_weights:
            diff = diff * bottom[2].data.reshape(count)
        self.diff = diff
        magnitude = xp.abs(diff)
        quadratic = magnitude < 1.0 / self.sigma2
        errors = xp.where(quadratic, 0.5 * diff * diff * self.sigma2, magnitude - 0.5 / self.sigma2)
        if len(bottom) == 4:
            errors = errors * bottom[3].data.reshape(count)
        top[0].data[...] = errors.sum() / bottom[0].shape[0]

    def backward(self, top, propagate_down, bottom):
        xp = get_array_module(self.diff)
        diff = self.diff
        slope = xp.where(xp.abs(diff) < 1.0 / self.sigma2, self.sigma2 * diff, xp.sign(diff))
        if len(bottom) == 4:
            count = diff.size
            slope = slope * bottom[2].data.reshape(count) * bottom[3].data.reshape(count)
        weight = top[0].diff.reshape(()) / bottom[0].shape[0]
        for index, sign in ((0, 1), (1, -1)):
            if propagate_down[index]:
                bottom[index].diff[...] = (sign * weight * slope).reshape(bottom[index].shape)
