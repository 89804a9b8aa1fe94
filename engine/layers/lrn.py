"""LRN: local response normalization, both of Caffe's regions.

ACROSS_CHANNELS: scale = k + alpha / n * (sum of x^2 over the n channels
centred on each channel, zeros beyond the ends); top = x * scale^-beta.

WITHIN_CHANNEL: Caffe builds it from Split, Power (x^2), AVE Pooling (n x n,
pad (n - 1) / 2, stride 1), Power (shift 1, scale alpha, power -beta) and an
Eltwise product, and `k` plays no part. With that pad and stride every
pooling window reaches exactly n cells into the padded bottom, so Caffe's
padded-window divisor is n^2 everywhere: top = x * (1 + alpha / n^2 * box
sum of x^2)^-beta. The composition is computed directly here, with the same
numbers and the gradient the composed layers give.

On the GPU, ACROSS_CHANNELS runs as Caffe's does: one kernel slides the
window along the channels for the forward, one for the backward
(engine/cuda/lrn.py). On the CPU it runs as multi-threaded kernels with the
NumPy code's operations (engine/cpu/lrn.py).
"""

import numpy as np

from .. import caffe_pb2, cpu
from ..backend import get_array_module
from ..cuda import lrn as gpu_lrn
from .base import Layer, register_layer

ACROSS = caffe_pb2.LRNParameter.ACROSS_CHANNELS
WITHIN = caffe_pb2.LRNParameter.WITHIN_CHANNEL


def _window_sum(a, axis, size):
    """Sum of `a` over a centred window of odd `size` along `axis`, zeros beyond the ends."""
    half = (size - 1) // 2
    length = a.shape[axis]
    total = a.copy()

    def part(start, stop):
        index = [slice(None)] * a.ndim
        index[axis] = slice(start, stop)
        return tuple(index)

    for shift in range(1, min(half, length - 1) + 1):
        total[part(0, length - shift)] += a[part(shift, length)]
        total[part(shift, length)] += a[part(0, length - shift)]
    return total


def _negative_power(base, beta):
    """base ** -beta; the exponents LRN nets use (0.75 above all) through square roots.

    Two square roots and a reciprocal cost a fifth of a general power and
    stay within a few ulp of it.
    """
    xp = get_array_module(base)
    if beta == 0.75:
        root = xp.sqrt(base)
        root *= xp.sqrt(root)
        return xp.reciprocal(root, out=root)
    if beta == 0.5:
        root = xp.sqrt(base)
        return xp.reciprocal(root, out=root)
    if beta == 1:
        return xp.reciprocal(base)
    return xp.power(base, base.dtype.type(-beta))


@register_layer
class LRNLayer(Layer):
    type = "LRN"
    exact_num_bottom_blobs = 1
    exact_num_top_blobs = 1

    def setup(self, bottom, top):
        p = self.param.lrn_param
        self.size = p.local_size
        self.check(self.size % 2 == 1, f"LRN only supports odd values for local_size (got {self.size})")
        self.alpha, self.beta, self.k = p.alpha, p.beta, p.k
        self.region = p.norm_region
        self.check(self.region in (ACROSS, WITHIN), f"Unknown normalization region {self.region}.")
        self._saved = None

    def reshape(self, bottom, top):
        self.check(bottom[0].num_axes == 4, "Input must have 4 axes, corresponding to "
                   f"(num, channels, height, width); bottom shape is {bottom[0].shape}")
        top[0].reshape(bottom[0].shape)

    def forward(self, bottom, top):
        x = bottom[0].data
        dtype = x.dtype.type
        xp = get_array_module(x)
        if self.region == ACROSS and xp is not np:
            scale = xp.empty_like(x)
            gpu_lrn.forward(x, self.size, self.alpha, self.beta, self.k, top[0].data, scale)
            self._saved = (scale, None)
            return
        if self.region == ACROSS and cpu.usable(x, top[0].data):
            shape = x.shape[:2] + (-1,)
            scale = np.empty_like(x)
            cpu.kernels("lrn").forward(x.reshape(shape), self.size, self.alpha / self.size, self.beta, self.k,
                                       top[0].data.reshape(shape), scale.reshape(shape))
            self._saved = (scale, None)
            return
        if self.region == ACROSS:
            scale = _window_sum(x * x, 1, self.size)
            scale *= dtype(self.alpha / self.size)
            scale += dtype(self.k)
            factor = _negative_power(scale, self.beta)
            self._saved = (scale, factor)
        else:
            box = _window_sum(_window_sum(x * x, 2, self.size), 3, self.size)
            base = box * dtype(self.alpha / (self.size * self.size))
            base += dtype(1)
            factor = _negative_power(base, self.beta)
            self._saved = (base, factor)
        top[0].data[...] = x * factor

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        self.check(self._saved is not None, "backward called before forward")
        x, dy = bottom[0].data, top[0].diff
        dtype = x.dtype.type
        if self.region == ACROSS and get_array_module(dy) is not np:
            gpu_lrn.backward(x, top[0].data, self._saved[0], dy, self.size, self.alpha, self.beta, bottom[0].diff)
            return
        if self.region == ACROSS and self._saved[1] is None and cpu.usable(x, dy, bottom[0].diff):
            shape = x.shape[:2] + (-1,)
            cpu.kernels("lrn").backward(x.reshape(shape), top[0].data.reshape(shape), self._saved[0].reshape(shape),
                                        dy.reshape(shape), self.size, self.beta,
                                        2 * self.alpha * self.beta / self.size, bottom[0].diff.reshape(shape))
            return
        if self.region == ACROSS:
            scale, factor = self._saved
            if factor is None:
                factor = _negative_power(scale, self.beta)
            # d top_j / d x_i over the window: -2 alpha beta / n * x_i * top_j / scale_j.
            ratio = _window_sum(dy * top[0].data / scale, 1, self.size)
            ratio *= x
            ratio *= dtype(2 * self.alpha * self.beta / self.size)
            bottom[0].diff[...] = dy * factor - ratio
        else:
            base, factor = self._saved
            inner = dy * x * factor / base
            spread = _window_sum(_window_sum(inner, 2, self.size), 3, self.size)
            spread *= x
            spread *= dtype(2 * self.alpha * self.beta / (self.size * self.size))
            bottom[0].diff[...] = dy * factor - spread
