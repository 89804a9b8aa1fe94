"""LSTMUnit: one LSTM time step, and the step arithmetic the LSTM layer reuses.

Gate pre-activations arrive as one (N, 4H) block in Caffe's order i, f, o, g.
The sequence indicator `cont` (0 where a sequence starts) zeroes the forget
gate, so no cell state leaks across sequences:

    i = s(x_i)  f = cont * s(x_f)  o = s(x_o)  g = tanh(x_g)
    c = f * c_prev + i * g         h = o * tanh(c)
"""

from ..backend import get_array_module
from .base import Layer, register_layer


def sigmoid(x):
    """Logistic function in its tanh form: no overflow for large |x|."""
    xp = get_array_module(x)
    half = x.dtype.type(0.5)
    return half * xp.tanh(half * x) + half


def lstm_step(c_prev, gates, cont):
    """Forward one step for N streams.

    `c_prev` (N, H), `gates` (N, 4H) pre-activations, `cont` (N,). Returns
    (c, h, acts, tanh_c) where `acts` is (N, 4H) holding i, f, o, g after
    their non-linearities (f already multiplied by cont).
    """
    xp = get_array_module(gates)
    hidden = c_prev.shape[-1]
    acts = xp.empty_like(gates)
    acts[:, :3 * hidden] = sigmoid(gates[:, :3 * hidden])
    acts[:, 3 * hidden:] = xp.tanh(gates[:, 3 * hidden:])
    keep = cont.reshape(-1, 1).astype(gates.dtype)
    acts[:, hidden:2 * hidden] = xp.where(keep == 0, 0, keep * acts[:, hidden:2 * hidden])
    i, f, o, g = (acts[:, k * hidden:(k + 1) * hidden] for k in range(4))
    c = f * c_prev + i * g
    tanh_c = xp.tanh(c)
    return c, o * tanh_c, acts, tanh_c


def lstm_step_backward(dc, dh, c_prev, acts, tanh_c):
    """Gradients of one step: returns (d c_prev, d gates (N, 4H)).

    `dc` and `dh` are the diffs arriving at this step's c and h. Like Caffe,
    the forget-gate derivative is f * (1 - f) with f = cont * s(x_f), which is
    exact for the usual binary cont.
    """
    xp = get_array_module(acts)
    hidden = c_prev.shape[-1]
    i, f, o, g = (acts[:, k * hidden:(k + 1) * hidden] for k in range(4))
    c_term = dc + dh * o * (1 - tanh_c * tanh_c)
    dgates = xp.empty_like(acts)
    dgates[:, :hidden] = c_term * g * i * (1 - i)
    dgates[:, hidden:2 * hidden] = c_term * c_prev * f * (1 - f)
    dgates[:, 2 * hidden:3 * hidden] = dh * tanh_c * o * (1 - o)
    dgates[:, 3 * hidden:] = c_term * i * (1 - g * g)
    return c_term * f, dgates


@register_layer
class LSTMUnitLayer(Layer):
    """Bottoms c_prev (1, N, H), gates (1, N, 4H), cont (1, N); tops c, h (1, N, H)."""

    type = "LSTMUnit"
    exact_num_bottom_blobs = 3
    exact_num_top_blobs = 2

    def allow_force_backward(self, bottom_index):
        return bottom_index != 2

    def reshape(self, bottom, top):
        streams = bottom[0].shape[1] if bottom[0].num_axes > 1 else -1
        for index, blob in enumerate(bottom):
            axes = 2 if index == 2 else 3
            self.check(blob.num_axes == axes and blob.shape[0] == 1 and blob.shape[1] == streams,
                       f"bottom[{index}] must be shaped (1, N{', D' if axes == 3 else ''}) with N = {streams} "
                       f"streams; got {blob.shape}")
        self.hidden = bottom[0].shape[2]
        self.check(bottom[1].shape[2] == 4 * self.hidden,
                   f"bottom[1] must hold 4 * {self.hidden} gate inputs per stream; got {bottom[1].shape}")
        top[0].reshape(bottom[0].shape)
        top[1].reshape(bottom[0].shape)

    def forward(self, bottom, top):
        c_prev = bottom[0].data[0]
        c, h, self.acts, self.tanh_c = lstm_step(c_prev, bottom[1].data[0], bottom[2].data[0])
        top[0].data[0] = c
        top[1].data[0] = h

    def backward(self, top, propagate_down, bottom):
        if propagate_down[2]:
            raise self.error("Cannot backpropagate to sequence indicators.")
        if not (propagate_down[0] or propagate_down[1]):
            return
        dc_prev, dgates = lstm_step_backward(top[0].diff[0], top[1].diff[0], bottom[0].data[0], self.acts,
                                             self.tanh_c)
        if propagate_down[0]:
            bottom[0].diff[0] = dc_prev
        if propagate_down[1]:
            bottom[1].diff[0] = dgates
