"""PSPNet's layers (hszhao/PSPNet): BN with running statistics, and Interp.

BN (bn_param: momentum, eps, frozen), blobs slope, bias, running mean and
running variance, each 1 x C x 1 x 1, as PSPNet's .caffemodel files store
them. In TRAIN (not frozen) it normalizes with the batch's mean and biased
variance over (num, spatial) and moves the running ones:
running = (1 - momentum) * batch + momentum * running. In TEST, or when
frozen, it uses the running statistics. The statistics never learn (set-up
forces lr_mult and decay_mult 0 on blobs 2 and 3, as the fork does), nor do
slope and bias when frozen; frozen, the backward only scales the top diff.
In TEST without frozen the fork's backward applies the batch formula to
running statistics; here the bottom diff is the exact gradient, slope / std.

Interp: bilinear resizing with aligned corners (the fork's caffe_cpu_interp2):
output pixel i reads input coordinate i * (in - 1) / (out - 1), computed in
float32 as the fork does. The output size is, by precedence: shrink_factor
alone, (in - 1) / shrink + 1; zoom_factor alone, in + (in - 1)(zoom - 1);
height and width; both factors, shrink then zoom. Non-positive pad_beg /
pad_end crop the input first. The resize is separable, so forward and
backward are two matrix products each (the backward with the transposes).
"""

import numpy as np

from ..backend import get_array_module
from ..fillers import fill
from .base import Layer, register_layer
from .bn import BNLayer, channel_view


class PSPNetBNLayer(BNLayer):
    """BN as PSPNet has it (chosen by bn.BNLayer)."""

    exact_num_top_blobs = 1

    def setup(self, bottom, top):
        p = self.param.bn_param
        self.frozen = p.frozen
        self.momentum = p.momentum
        self.eps = p.eps
        self.check(bottom[0].num_axes >= 2, f"needs a bottom with a channel axis; got {bottom[0].shape}")
        self.channels = bottom[0].shape[1]
        if not len(self.blobs):
            for filler in (p.slope_filler, p.bias_filler):
                fill(self.blobs.add_blob(1, self.channels, 1, 1).data, filler)
            for value in (0, 1 if self.frozen else 0):
                self.blobs.add_blob(1, self.channels, 1, 1).data[...] = value
        self.check(len(self.blobs) == 4, "PSPNet's BN has 4 blobs (slope, bias, running mean, running "
                                         f"variance); {len(self.blobs)} given")
        for index, blob in enumerate(self.blobs):
            self.check(blob.count == self.channels,
                       f"blob {index} has shape {blob.shape}; 1 x {self.channels} x 1 x 1 expected")
        while len(self.param.param) < 4:
            self.param.param.add()
        for index in (0, 1, 2, 3) if self.frozen else (2, 3):
            self.param.param[index].lr_mult = 0
            self.param.param[index].decay_mult = 0

    def reshape(self, bottom, top):
        self.check_channels(bottom)
        top[0].reshape(bottom[0].shape)

    def _per_channel(self, index):
        return self.blobs[index].data.reshape(1, -1, 1)

    @property
    def global_stats(self):
        return self.frozen or self.phase == self._caffe_pb2.TEST

    def forward(self, bottom, top):
        x = channel_view(bottom[0].data)
        xp = get_array_module(x)
        dtype = x.dtype.type
        if self.global_stats:
            mean, variance = self._per_channel(2), self._per_channel(3)
        else:
            mean = x.mean(axis=(0, 2), keepdims=True)
            centered = x - mean
            variance = (centered * centered).mean(axis=(0, 2), keepdims=True)
            for index, value in ((2, mean), (3, variance)):
                running = self.blobs[index].data
                running[...] = (dtype(1) - dtype(self.momentum)) * value.reshape(running.shape) + \
                    dtype(self.momentum) * running
        self.inv_std = (variance + dtype(self.eps)) ** dtype(-0.5)
        self.x_norm = (x - mean) * self.inv_std
        xp.add(self._per_channel(0) * self.x_norm, self._per_channel(1), out=channel_view(top[0].data))

    def backward(self, top, propagate_down, bottom):
        dy = channel_view(top[0].diff)
        if self.frozen:
            if propagate_down[0]:
                inv_std = (self._per_channel(3) + dy.dtype.type(self.eps)) ** dy.dtype.type(-0.5)
                channel_view(bottom[0].diff)[...] = dy * (self._per_channel(0) * inv_std)
            return
        if self.param_propagate_down[0]:
            self.blobs[0].diff[...] += (self.x_norm * dy).sum(axis=(0, 2)).reshape(self.blobs[0].shape)
        if self.param_propagate_down[1]:
            self.blobs[1].diff[...] += dy.sum(axis=(0, 2)).reshape(self.blobs[1].shape)
        if not propagate_down[0]:
            return
        scaled = dy * self._per_channel(0)
        dx = channel_view(bottom[0].diff)
        if self.global_stats:
            dx[...] = scaled * self.inv_std
            return
        mean_scaled = scaled.mean(axis=(0, 2), keepdims=True)
        mean_product = (scaled * self.x_norm).mean(axis=(0, 2), keepdims=True)
        dx[...] = (scaled - mean_scaled - self.x_norm * mean_product) * self.inv_std


def interp_matrix(size_in, size_out, dtype):
    """(size_out, size_in) weights of the fork's aligned-corners interpolation along one axis."""
    matrix = np.zeros((size_out, size_in), dtype=dtype)
    if size_in == size_out:  # the fork's copy
        np.fill_diagonal(matrix, 1)
        return matrix
    ratio = np.float32(size_in - 1) / np.float32(size_out - 1) if size_out > 1 else np.float32(0)
    position = ratio * np.arange(size_out, dtype=np.float32)
    low = position.astype(np.int64)  # truncation, as the fork's int conversion
    step = (low < size_in - 1).astype(np.int64)
    upper = (position - low.astype(np.float32)).astype(dtype)
    rows = np.arange(size_out)
    np.add.at(matrix, (rows, low), dtype(1) - upper)
    np.add.at(matrix, (rows, low + step), upper)
    return matrix


@register_layer
class InterpLayer(Layer):
    type = "Interp"
    exact_num_bottom_blobs = 1
    exact_num_top_blobs = 1

    def setup(self, bottom, top):
        p = self.param.interp_param
        self.pad_beg, self.pad_end = p.pad_beg, p.pad_end
        self.check(self.pad_beg <= 0 and self.pad_end <= 0,
                   f"Only supports non-pos padding (cropping) for now (pad_beg {self.pad_beg}, "
                   f"pad_end {self.pad_end})")
        has = p.HasField
        self.check(has("shrink_factor") or has("zoom_factor") or (has("height") and has("width")),
                   "interp_param needs zoom_factor, shrink_factor, or height and width")
        if has("shrink_factor"):
            self.check(p.shrink_factor >= 1, f"Shrink factor must be positive (got {p.shrink_factor})")
        if has("zoom_factor"):
            self.check(p.zoom_factor >= 1, f"Zoom factor must be positive (got {p.zoom_factor})")
        self._matrices = None

    def _output_size(self, size):
        p = self.param.interp_param
        shrink, zoom = p.HasField("shrink_factor"), p.HasField("zoom_factor")
        if shrink:
            size = [(s - 1) // p.shrink_factor + 1 for s in size]
        if zoom:
            size = [s + (s - 1) * (p.zoom_factor - 1) for s in size]
        if not (shrink or zoom):
            size = [p.height, p.width]
        return tuple(size)

    def reshape(self, bottom, top):
        shape = bottom[0].shape
        self.check(len(shape) == 4, f"Input must have 4 axes (num, channels, height, width); got {shape}")
        self.crop = tuple(d + self.pad_beg + self.pad_end for d in shape[2:])
        self.check(min(self.crop) > 0, f"the input {shape[2]} x {shape[3]} cropped by pad_beg {self.pad_beg} "
                                       f"and pad_end {self.pad_end} leaves no pixel")
        out = self._output_size(self.crop)
        self.check(min(out) > 0, f"the output size {out[0]} x {out[1]} must be positive")
        top[0].reshape(shape[:2] + out)
        self._matrices = None

    def _weights(self, like):
        """The two axes' matrices on `like`'s device and dtype, kept until the shapes change."""
        xp = get_array_module(like)
        key = (xp.__name__, like.dtype)
        if self._matrices is None or self._matrices[0] != key:
            out = self._output_size(self.crop)
            pair = [xp.asarray(interp_matrix(i, o, like.dtype.type)) for i, o in zip(self.crop, out)]
            self._matrices = (key, pair)
        return self._matrices[1]

    def _window(self, array):
        begin = -self.pad_beg
        return array[:, :, begin:begin + self.crop[0], begin:begin + self.crop[1]]

    def forward(self, bottom, top):
        rows, cols = self._weights(bottom[0].data)
        xp = get_array_module(bottom[0].data)
        top[0].data[...] = xp.matmul(xp.matmul(rows, self._window(bottom[0].data)), cols.T)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        rows, cols = self._weights(top[0].diff)
        xp = get_array_module(top[0].diff)
        bottom[0].diff[...] = 0
        self._window(bottom[0].diff)[...] = xp.matmul(xp.matmul(rows.T, top[0].diff), cols)
