"""Embed: a lookup table, row `index` of a (input_dim, num_output) weight per input value.

Equivalent to an InnerProduct on one-hot inputs, without building them. The
inputs are indices, so they take no gradient (Caffe refuses one); the weight
gradient adds each top row into the row it was read from.
"""

import numpy as np

from ..backend import get_array_module
from ..fillers import fill
from .base import Layer, register_layer
from .common import scatter_add_rows


@register_layer
class EmbedLayer(Layer):
    type = "Embed"
    exact_num_bottom_blobs = 1
    exact_num_top_blobs = 1

    def setup(self, bottom, top):
        p = self.param.embed_param
        self.num_output = p.num_output
        self.input_dim = p.input_dim
        self.check(self.num_output > 0, "EmbedLayer num_output must be positive.")
        self.check(self.input_dim > 0, "EmbedLayer input_dim must be positive.")
        self.bias_term = p.bias_term
        if len(self.blobs):
            return
        self.blobs.add_blob(self.input_dim, self.num_output)
        fill(self.blobs[0].data, p.weight_filler)
        if self.bias_term:
            self.blobs.add_blob(self.num_output)
            fill(self.blobs[1].data, p.bias_filler)

    def reshape(self, bottom, top):
        top[0].reshape(bottom[0].shape + (self.num_output,))

    def _indices(self, bottom):
        x = bottom[0].data.reshape(-1)
        index = x.astype(np.int64)
        bad = (index < 0) | (index >= self.input_dim) | (index != x)
        if int(bad.sum()):
            xp = get_array_module(x)
            first = float(x[xp.flatnonzero(bad)[0]])
            raise self.error(f"input values must be integers in [0, {self.input_dim}), got {first}")
        return index

    def forward(self, bottom, top):
        out = top[0].data.reshape(-1, self.num_output)
        out[...] = self.blobs[0].data[self._indices(bottom)]
        if self.bias_term:
            out += self.blobs[1].data

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            raise self.error("Can't backpropagate to EmbedLayer input.")
        dy = top[0].diff.reshape(-1, self.num_output)
        if self.param_propagate_down[0]:
            self.blobs[0].diff[...] += scatter_add_rows(self._indices(bottom), dy, self.input_dim)
        if self.bias_term and self.param_propagate_down[1]:
            self.blobs[1].diff[...] += dy.sum(axis=0)

    def allow_force_backward(self, bottom_index):
        return False
