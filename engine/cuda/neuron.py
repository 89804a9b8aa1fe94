"""Elementwise kernels for neuron layers whose array form takes several passes on the GPU."""

from . import elementwise


def relu_backward(x, dy, slope, dx):
    """dx = dy where x > 0, else slope * dy: one pass instead of four (mask, cast, scale, product)."""
    elementwise("engine_relu_backward", "T x, T dy, T slope", "T dx",
                "dx = x > 0 ? dy : dy * slope")(x, dy, x.dtype.type(slope), dx)


def dropout_forward(x, uniform, ratio, scale, y, mask):
    """Keep where uniform >= ratio (the mask), scaled: the draw, compare and product in one pass."""
    elementwise("engine_dropout_forward", "T x, float32 u, float32 ratio, T scale", "T y, bool mask",
                "mask = u >= ratio; y = mask ? x * scale : (T)0")(x, uniform, ratio, x.dtype.type(scale), y, mask)


def dropout_backward(dy, mask, scale, dx):
    elementwise("engine_dropout_backward", "T dy, bool mask, T scale", "T dx",
                "dx = mask ? dy * scale : (T)0")(dy, mask, dy.dtype.type(scale), dx)
