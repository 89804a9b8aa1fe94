"""SegNet's layers (alexgkendall/caffe-segnet; ENet's caffe-enet has the same two).

BN (bn_param.bn_mode), blobs scale and shift, each 1 x C x 1 x 1:
- LEARN normalizes with the batch's statistics over (num, spatial), the
  variance taken as E(x^2) - E(x)^2 (biased) and eps 1e-9, then scales and
  shifts; optional tops 1 and 2 receive the batch mean and variance (1 x C x
  1 x 1). SegNet keeps no running statistics: its compute_bn_statistics.py
  folds the data set's into scale and shift, for INFERENCE.
- INFERENCE is top = scale * x + shift, in any phase.
The parameter gradients add into the diffs (the fork overwrites them, which
only differs with iter_size > 1); in place, INFERENCE keeps its input for
the scale's gradient, where the fork reads the overwritten output.

Upsample: max-unpooling. Bottom 1 is a Pooling layer's mask top (Caffe's MAX
index h * W + w within each channel); each input goes to that index of a
zeroed top of upsample_h x upsample_w, or of scale x the input size (minus
one with pad_out_*). Where windows overlapped and two inputs share an index,
the later one wins, as in the fork's CPU loop. The backward gathers.
"""

import numpy as np

from ..backend import get_array_module
from ..fillers import fill
from .base import Layer, register_layer
from .bn import BNLayer, channel_view

VAR_EPS = 1e-9  # the fork's var_eps_


class SegNetBNLayer(BNLayer):
    """BN as SegNet has it (chosen by bn.BNLayer)."""

    min_top_blobs = 1

    @property
    def max_top_blobs(self):
        return 3 if self.learn else 1

    @property
    def learn(self):
        return self.param.bn_param.bn_mode == self._caffe_pb2.BNParameter.LEARN

    def setup(self, bottom, top):
        p = self.param.bn_param
        self.check(bottom[0].num_axes >= 2, f"needs a bottom with a channel axis; got {bottom[0].shape}")
        self.channels = bottom[0].shape[1]
        if not len(self.blobs):
            for filler in (p.scale_filler, p.shift_filler):
                fill(self.blobs.add_blob(1, self.channels, 1, 1).data, filler)
        self.check(len(self.blobs) == 2, f"SegNet's BN has 2 blobs (scale, shift); {len(self.blobs)} given")
        for index, blob in enumerate(self.blobs):
            self.check(blob.count == self.channels,
                       f"blob {index} has shape {blob.shape}; 1 x {self.channels} x 1 x 1 expected")

    def reshape(self, bottom, top):
        self.check_channels(bottom)
        top[0].reshape(bottom[0].shape)
        for blob in top[1:]:
            blob.reshape((1, self.channels, 1, 1))

    def _per_channel(self, index):
        return self.blobs[index].data.reshape(1, -1, 1)

    def forward(self, bottom, top):
        x = channel_view(bottom[0].data)
        xp = get_array_module(x)
        scale, shift = self._per_channel(0), self._per_channel(1)
        y = channel_view(top[0].data)
        if not self.learn:
            self._input = x.copy() if top[0] is bottom[0] else None
            xp.add(scale * x, shift, out=y)
            return
        mean = x.mean(axis=(0, 2), keepdims=True)
        variance = (x * x).mean(axis=(0, 2), keepdims=True) - mean * mean
        for blob, value in zip(top[1:], (mean, variance)):
            blob.data[...] = value.reshape(blob.shape)
        self.std = xp.sqrt(variance + x.dtype.type(VAR_EPS))
        self.x_norm = (x - mean) / self.std
        xp.add(scale * self.x_norm, shift, out=y)

    def backward(self, top, propagate_down, bottom):
        dy = channel_view(top[0].diff)
        xp = get_array_module(dy)
        if self.learn:
            source = self.x_norm
        else:
            source = self._input if getattr(self, "_input", None) is not None else channel_view(bottom[0].data)
        if self.param_propagate_down[0]:
            self.blobs[0].diff[...] += (source * dy).sum(axis=(0, 2)).reshape(self.blobs[0].shape)
        if self.param_propagate_down[1]:
            self.blobs[1].diff[...] += dy.sum(axis=(0, 2)).reshape(self.blobs[1].shape)
        if not propagate_down[0]:
            return
        scaled = dy * self._per_channel(0)
        dx = channel_view(bottom[0].diff)
        if not self.learn:
            dx[...] = scaled
            return
        mean_scaled = scaled.mean(axis=(0, 2), keepdims=True)
        mean_product = (scaled * self.x_norm).mean(axis=(0, 2), keepdims=True)
        xp.divide(scaled - mean_scaled - self.x_norm * mean_product, self.std, out=dx)


@register_layer
class UpsampleLayer(Layer):
    type = "Upsample"
    exact_num_bottom_blobs = 2
    exact_num_top_blobs = 1

    def setup(self, bottom, top):
        p = self.param.upsample_param
        has = p.HasField
        self.check((has("upsample_h") and has("upsample_w"))
                   or (not has("scale") and has("scale_h") and has("scale_w"))
                   or (not has("scale_h") and not has("scale_w")),
                   "upsample_h & upsample_w are required, else (DEPRECATED) scale OR scale_h & scale_w "
                   "are required.")
        self.size = None
        if has("upsample_h") and has("upsample_w"):
            self.size = (p.upsample_h, p.upsample_w)
            self.check(min(self.size) > 1, f"upsample_h and upsample_w must be above 1; got {self.size}")
            return
        self.scale = (p.scale_h, p.scale_w) if has("scale_h") else (p.scale, p.scale)
        self.check(min(self.scale) > 1, f"the scale must be above 1; got {self.scale}")
        self.pad_out = (int(p.pad_out_h), int(p.pad_out_w))
        for pad, scale, axis in zip(self.pad_out, self.scale, "hw"):
            self.check(not pad or scale == 2, f"Output {axis} padding compensation (pad_out_{axis}) requires "
                                              f"scale_{axis} == 2, otherwise the output size is ill-defined.")

    def reshape(self, bottom, top):
        x, mask = bottom[0].shape, bottom[1].shape
        self.check(len(x) == 4, f"Input must have 4 axes, corresponding to (num, channels, height, width); "
                                f"bottom 0 has shape {x}")
        self.check(mask == x, f"the mask (bottom 1, shape {mask}) must have the input's shape {x}: "
                              "the second top of the Pooling layer that made the input")
        size = self.size or tuple(d * s - p for d, s, p in zip(x[2:], self.scale, self.pad_out))
        top[0].reshape(x[:2] + size)

    def _indices(self, bottom, top):
        """Each input's flat index into its top plane, (planes, inputs), range-checked."""
        xp = get_array_module(bottom[1].data)
        mask = bottom[1].data.reshape(bottom[1].shape[0] * bottom[1].shape[1], -1)
        index = mask.astype(np.int64)  # the fork's static_cast<int>
        plane = top[0].shape[2] * top[0].shape[3]
        low, high = int(index.min()), int(index.max())
        if low < 0 or high >= plane:
            bad = low if low < 0 else high
            raise self.error(f"upsample top index {bad} out of range for the {top[0].shape[2]} x "
                             f"{top[0].shape[3]} top - check scale settings match input pooling layer's "
                             "downsample setup")
        return xp, index, plane

    def forward(self, bottom, top):
        xp, index, plane = self._indices(bottom, top)
        planes, inputs = index.shape
        flat = (index + xp.arange(planes, dtype=np.int64)[:, None] * plane).reshape(-1)
        # Per top element, the last input that maps to it (-1: none).
        source = xp.full(planes * plane, -1, dtype=np.int64)
        xp.maximum.at(source, flat, xp.arange(planes * inputs, dtype=np.int64))
        values = bottom[0].data.reshape(-1)[xp.maximum(source, 0)]
        top[0].data.reshape(-1)[...] = xp.where(source >= 0, values, 0)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        xp, index, plane = self._indices(bottom, top)
        dy = top[0].diff.reshape(index.shape[0], plane)
        bottom[0].diff.reshape(index.shape)[...] = xp.take_along_axis(dy, index, axis=1)

    def allow_force_backward(self, bottom_index):
        return bottom_index == 0
