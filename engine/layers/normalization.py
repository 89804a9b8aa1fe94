"""Normalization layers: BatchNorm (batch or running statistics) and MVN.

Both follow Caffe's arithmetic exactly, including its deliberate quirks:
BatchNorm keeps *running sums* plus a scale factor rather than averages, and
MVN adds eps to the standard deviation rather than to the variance.

On the GPU, BatchNorm's statistics and gradient sums are one-pass channel
reductions and its maps single elementwise kernels (engine/cuda/channels.py); on
the CPU the same passes run as multi-threaded kernels (engine/cpu/channels.py).
"""

import numpy as np

from .. import cpu
from ..backend import get_array_module
from ..cuda import channels as gpu_channels
from .base import Layer, register_layer


@register_layer
class BatchNormLayer(Layer):
    """Normalizes each channel (axis 1) over the batch and spatial axes.

    Blobs, as Caffe stores them: 0 = running sum of means, 1 = running sum of
    unbiased variances, 2 = a one-element scale factor; the statistics in use
    are blob0 / blob2 and blob1 / blob2 (zero when the factor is zero). They
    are not learned: set-up forces `lr_mult: 0` on them, as Caffe does.
    """

    type = "BatchNorm"
    exact_num_bottom_blobs = 1
    exact_num_top_blobs = 1

    def setup(self, bottom, top):
        p = self.param.batch_norm_param
        self.moving_average_fraction = p.moving_average_fraction
        self.eps = p.eps
        self.check(bottom[0].num_axes >= 1, "BatchNorm needs a bottom of at least 1 axis (num, channels, ...)")
        self.use_global_stats = self.phase == self._caffe_pb2.TEST
        if p.HasField("use_global_stats"):
            self.use_global_stats = p.use_global_stats
        self.channels = 1 if bottom[0].num_axes == 1 else bottom[0].shape[1]
        if not len(self.blobs):
            for shape in ((self.channels,), (self.channels,), (1,)):
                self.blobs.add_blob(*shape)
                self.blobs[-1].data[...] = 0
        # The statistics must never be touched by the solver: Caffe pins their
        # learning rate to zero and refuses any ParamSpec that says otherwise.
        for index in range(len(self.blobs)):
            if len(self.param.param) == index:
                self.param.param.add().lr_mult = 0.0
            elif self.param.param[index].lr_mult != 0:
                raise self.error("Cannot configure batch normalization statistics as layer parameters "
                                 f"(param {index} has lr_mult {self.param.param[index].lr_mult:g})")

    def reshape(self, bottom, top):
        channels = 1 if bottom[0].num_axes == 1 else bottom[0].shape[1]
        self.check(channels == self.channels,
                   f"bottom has {channels} channels (shape {bottom[0].shape}), the layer was set up "
                   f"for {self.channels}")
        self.check(bottom[0].count > 0, f"cannot normalize an empty bottom {bottom[0].shape}")
        top[0].reshape(bottom[0].shape)

    def _grouped(self, array):
        """View (num, channels, spatial): statistics reduce over axes 0 and 2."""
        return array.reshape(array.shape[0], self.channels, -1)

    def _forward_gpu(self, bottom, top, xp):
        x = bottom[0].data
        geometry = (x.shape[0], self.channels, x.size // (x.shape[0] * self.channels))
        if self.use_global_stats:
            mean, variance = self._global_stats(x.dtype.type)
        else:
            count = geometry[0] * geometry[2]
            mean = gpu_channels.channel_sums(x, geometry) / x.dtype.type(count)
            variance = gpu_channels.channel_sums(x, geometry, gpu_channels.CENTERED_SQUARES, mean=mean)
            variance /= x.dtype.type(count)
            self._update_running_sums(mean, variance, bottom[0].count)
        self.std = xp.sqrt(variance + x.dtype.type(self.eps))
        saved = getattr(self, "x_norm", None)
        if saved is None or saved.shape != geometry or get_array_module(saved) is not xp or saved.dtype != x.dtype:
            saved = self.x_norm = xp.empty(geometry, dtype=x.dtype)
        gpu_channels.normalize(x, mean, self.std, geometry[2], self.channels, top[0].data,
                               None if self.use_global_stats else saved.reshape(x.shape))
        self.geometry = geometry

    def _global_stats(self, kind):
        """Mean and variance from the stored running sums and their scale factor."""
        factor = float(self.blobs[2].data.reshape(-1)[0])
        factor = 0.0 if factor == 0 else 1.0 / factor
        return self.blobs[0].data * kind(factor), self.blobs[1].data * kind(factor)

    def forward(self, bottom, top):
        xp = get_array_module(bottom[0].data)
        if xp is not np:
            self._forward_gpu(bottom, top, xp)
            return
        x = self._grouped(bottom[0].data)
        if cpu.usable(x, top[0].data):
            self._forward_cpu(x, top)
            return
        if self.use_global_stats:
            mean, variance = self._global_stats(x.dtype.type)
        else:
            mean = x.mean(axis=(0, 2))
            variance = ((x - mean[None, :, None]) ** 2).mean(axis=(0, 2))
            self._update_running_sums(mean, variance, bottom[0].count)
        self.std = xp.sqrt(variance + x.dtype.type(self.eps))
        # Cached for backward: a later in-place layer may overwrite the top.
        self.x_norm = (x - mean[None, :, None]) / self.std[None, :, None]
        top[0].data[...] = self.x_norm.reshape(top[0].shape)

    def _forward_cpu(self, x, top):
        kernels = cpu.kernels("channels")
        kind = x.dtype.type
        if self.use_global_stats:
            mean, variance = self._global_stats(kind)
        else:
            mean, variance = (value.astype(x.dtype) for value in kernels.moments(x))
            self._update_running_sums(mean, variance, x.size)
        self.std = np.sqrt(variance + kind(self.eps))
        saved = getattr(self, "x_norm", None)
        if not isinstance(saved, np.ndarray) or saved.shape != x.shape or saved.dtype != x.dtype:
            saved = self.x_norm = np.empty_like(x)
        kernels.normalize(x, mean.astype(x.dtype), self.std.astype(x.dtype), self._grouped(top[0].data),
                          saved, True)

    def _update_running_sums(self, mean, variance, count):
        fraction = self.moving_average_fraction
        m = count // self.channels
        correction = m / (m - 1) if m > 1 else 1.0
        sums, squares, factor = (blob.data for blob in self.blobs[:3])
        factor *= fraction
        factor += 1
        sums[...] = mean + fraction * sums
        squares[...] = correction * variance + fraction * squares

    def backward(self, top, propagate_down, bottom):
        # Caffe computes no gradient for the statistics blobs, even when forced.
        if not propagate_down[0]:
            return
        if get_array_module(top[0].diff) is not np:
            self._backward_gpu(top, bottom)
            return
        dy = self._grouped(top[0].diff)
        if cpu.usable(dy, self.x_norm, bottom[0].diff) and not self.use_global_stats:
            kernels = cpu.kernels("channels")
            count = dy.shape[0] * dy.shape[2]
            sum_dy, sum_dy_y = kernels.sums(dy, self.x_norm, True)
            kernels.batch_norm_backward(dy, self.x_norm, (sum_dy / count).astype(dy.dtype),
                                        (sum_dy_y / count).astype(dy.dtype), self.std.astype(dy.dtype),
                                        self._grouped(bottom[0].diff))
            return
        std = self.std[None, :, None]
        if self.use_global_stats:
            bottom[0].diff[...] = (dy / std).reshape(bottom[0].shape)
            return
        y = self.x_norm
        mean_dy = dy.mean(axis=(0, 2), keepdims=True)
        mean_dy_y = (dy * y).mean(axis=(0, 2), keepdims=True)
        dx = (dy - mean_dy - mean_dy_y * y) / std
        bottom[0].diff[...] = dx.reshape(bottom[0].shape)

    def _backward_gpu(self, top, bottom):
        dy, inner, channels = top[0].diff, self.geometry[2], self.channels
        if self.use_global_stats:
            gpu_channels.divide(dy, self.std, inner, channels, bottom[0].diff)
            return
        count = dy.dtype.type(self.geometry[0] * inner)
        y = self.x_norm.reshape(dy.shape)
        sum_dy, sum_dy_y = gpu_channels.channel_sums(dy, self.geometry, gpu_channels.SUM_AND_DOT, b=y)
        gpu_channels.batch_norm_backward(dy, y, sum_dy / count, sum_dy_y / count, self.std, inner, channels,
                                         bottom[0].diff)


@register_layer
class MVNLayer(Layer):
    """Mean (and variance) normalization per image and channel, or per image.

    Caffe's MVN works on legacy 4-axis blobs: the top is always shaped
    (num, channels, height, width), and bottoms of more than 4 axes are refused.
    """

    type = "MVN"
    exact_num_bottom_blobs = 1
    exact_num_top_blobs = 1

    def setup(self, bottom, top):
        p = self.param.mvn_param
        self.normalize_variance = p.normalize_variance
        self.across_channels = p.across_channels
        self.eps = p.eps

    def reshape(self, bottom, top):
        self.check(bottom[0].num_axes <= 4,
                   f"MVN takes blobs of at most 4 axes (num, channels, height, width); got {bottom[0].shape}")
        b = bottom[0]
        top[0].reshape((b.num, b.channels, b.height, b.width))
        self.rows = b.num if self.across_channels else b.num * b.channels
        self.check(self.rows > 0 and b.count > 0, f"cannot normalize an empty bottom {b.shape}")
        self.dim = b.count // self.rows

    def forward(self, bottom, top):
        xp = get_array_module(bottom[0].data)
        x = bottom[0].data.reshape(self.rows, self.dim)
        centred = x - x.mean(axis=1, keepdims=True)
        if self.normalize_variance:
            # eps goes on the standard deviation, not under the square root.
            self.std = xp.sqrt((centred ** 2).mean(axis=1, keepdims=True)) + x.dtype.type(self.eps)
            centred = centred / self.std
        top[0].data[...] = centred.reshape(top[0].shape)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        dy = top[0].diff.reshape(self.rows, self.dim)
        if self.normalize_variance:
            # Caffe's formula, which treats the std (with eps) as sqrt(var):
            # dx = (dy - mean(dy) - mean(dy * y) * y) / (std + eps).
            y = top[0].data.reshape(self.rows, self.dim)
            dx = (dy - dy.mean(axis=1, keepdims=True) - (dy * y).mean(axis=1, keepdims=True) * y) / self.std
        else:
            dx = dy - dy.mean(axis=1, keepdims=True)
        bottom[0].diff[...] = dx.reshape(bottom[0].shape)
