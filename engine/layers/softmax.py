"""Softmax over one axis, and the helper SoftmaxWithLoss shares."""

import math

from .. import cpu
from ..backend import get_array_module
from .base import Layer, register_layer


def softmax(x, axis):
    """Numerically stable softmax of `x` along `axis` (subtract the max, as Caffe).

    On the CPU, one multi-threaded kernel pass (engine/cpu/softmax.py).
    """
    xp = get_array_module(x)
    if x.ndim and x.shape[axis] and cpu.usable(x) and x.flags.c_contiguous:
        outer = math.prod(x.shape[:axis])
        y = xp.empty_like(x)
        cpu.kernels("softmax").forward(x.reshape(outer, x.shape[axis], -1), y.reshape(outer, x.shape[axis], -1))
        return y
    shifted = x - x.max(axis=axis, keepdims=True)
    e = xp.exp(shifted)
    e /= e.sum(axis=axis, keepdims=True)
    return e


@register_layer
class SoftmaxLayer(Layer):
    type = "Softmax"
    exact_num_bottom_blobs = 1
    exact_num_top_blobs = 1

    def reshape(self, bottom, top):
        self.axis = bottom[0].canonical_axis(self.param.softmax_param.axis)
        top[0].reshape(bottom[0].shape)

    def forward(self, bottom, top):
        top[0].data[...] = softmax(bottom[0].data, self.axis)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        y, dy = top[0].data, top[0].diff
        dot = (dy * y).sum(axis=self.axis, keepdims=True)
        bottom[0].diff[...] = (dy - dot) * y
