"""SENet's Axpy (hujie-frank/SENet): top = a * x + y, a channel-wise scale.

Bottoms: a (num, channels, or num x channels x 1 x 1), x and y of one shape
(num, channels, ...). It fuses the squeeze-and-excitation scale with the
residual sum.
"""

from ..backend import get_array_module
from .base import Layer, register_layer


@register_layer
class AxpyLayer(Layer):
    type = "Axpy"
    exact_num_bottom_blobs = 3
    exact_num_top_blobs = 1

    def reshape(self, bottom, top):
        a, x, y = (b.shape for b in bottom)
        self.check(len(x) >= 2, f"x (bottom 1) needs a channel axis (num, channels, ...); got {x}")
        self.check(len(a) >= 2 and a[:2] == x[:2] and bottom[0].count == x[0] * x[1],
                   f"the scale (bottom 0, shape {a}) must be num x channels (x 1 x 1) of x "
                   f"(bottom 1, shape {x})")
        self.check(x == y, f"x (bottom 1, shape {x}) and y (bottom 2, shape {y}) must have the same shape")
        top[0].reshape(x)

    def _scale(self, bottom):
        """The scale as (num, channels, 1, ...), broadcasting over x's trailing axes."""
        x = bottom[1]
        return bottom[0].data.reshape(x.shape[:2] + (1,) * (x.num_axes - 2))

    def forward(self, bottom, top):
        xp = get_array_module(bottom[1].data)
        xp.add(self._scale(bottom) * bottom[1].data, bottom[2].data, out=top[0].data)

    def backward(self, top, propagate_down, bottom):
        dy = top[0].diff
        if propagate_down[0]:
            x = bottom[1].data
            product = (dy * x).reshape(x.shape[:2] + (-1,))
            bottom[0].diff[...] = product.sum(axis=2).reshape(bottom[0].shape)
        if propagate_down[1]:
            bottom[1].diff[...] = self._scale(bottom) * dy
        if propagate_down[2] and bottom[2] is not top[0]:
            bottom[2].diff[...] = dy
