"""Elementwise neuron layers: one bottom, one top of the same shape, in place allowed."""

from ..backend import get_array_module
from .base import Layer, register_layer


class NeuronLayer(Layer):
    """Base of elementwise layers: the top takes the bottom's shape."""

    exact_num_bottom_blobs = 1
    exact_num_top_blobs = 1

    def reshape(self, bottom, top):
        top[0].reshape(bottom[0].shape)


@register_layer
class ReLULayer(NeuronLayer):
    type = "ReLU"

    def setup(self, bottom, top):
        self.slope = self.param.relu_param.negative_slope

    def forward(self, bottom, top):
        xp = get_array_module(bottom[0].data)
        x = bottom[0].data
        if self.slope:
            top[0].data[...] = xp.where(x > 0, x, x * self.slope)
        else:
            xp.maximum(x, 0, out=top[0].data)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        xp = get_array_module(top[0].diff)
        # In place, bottom data already holds the output; its sign is the input's.
        x = bottom[0].data
        gate = (x > 0).astype(x.dtype)
        if self.slope:
            gate += self.slope * (x <= 0)
        bottom[0].diff[...] = top[0].diff * gate
