"""PReLU: a ReLU whose negative slope is learned, per channel or shared.

As Caffe: the slopes are one blob of shape (C,) (or shape () when
channel_shared), filled by prelu_param.filler or with 0.25; the channel axis
is axis 1; in place, forward keeps a copy of the input for the backward.
"""

from ..backend import get_array_module
from ..fillers import fill
from .base import register_layer
from .neuron import NeuronLayer


@register_layer
class PReLULayer(NeuronLayer):
    type = "PReLU"

    def setup(self, bottom, top):
        p = self.param.prelu_param
        self.check(bottom[0].num_axes >= 2, "Number of axes of bottom blob must be >=2.")
        self.channel_shared = p.channel_shared
        channels = bottom[0].shape[1]
        if not len(self.blobs):
            self.blobs.add_blob(*(() if self.channel_shared else (channels,)))
            if p.HasField("filler"):
                fill(self.blobs[0].data, p.filler)
            else:
                self.blobs[0].data[...] = 0.25
        want = 1 if self.channel_shared else channels
        self.check(self.blobs[0].count == want,
                   "Negative slope size is inconsistent with prototxt config: "
                   f"{self.blobs[0].count} slope(s) for {want}")

    def reshape(self, bottom, top):
        self.check(bottom[0].num_axes >= 2, "Number of axes of bottom blob must be >=2.")
        self.check(self.channel_shared or bottom[0].shape[1] == self.blobs[0].count,
                   f"bottom has {bottom[0].shape[1]} channels, the layer {self.blobs[0].count} slopes")
        super().reshape(bottom, top)

    def _slope(self, x):
        """The slopes shaped to broadcast against x (channel axis 1)."""
        slope = self.blobs[0].data
        if self.channel_shared:
            return slope.reshape(())
        return slope.reshape((1, -1) + (1,) * (x.ndim - 2))

    def forward(self, bottom, top):
        xp = get_array_module(bottom[0].data)
        self.remember_input(bottom, top)
        x = bottom[0].data
        slope = self._slope(x).astype(x.dtype, copy=False)
        top[0].data[...] = xp.maximum(x, 0) + slope * xp.minimum(x, 0)

    def backward(self, top, propagate_down, bottom):
        x = self.input_data(bottom)
        dy = top[0].diff
        negative = x <= 0
        if self.param_propagate_down[0]:
            contrib = dy * x * negative
            if self.channel_shared:
                self.blobs[0].diff[...] += contrib.sum()
            else:
                n, c = x.shape[0], x.shape[1]
                self.blobs[0].diff[...] += contrib.reshape(n, c, -1).sum(axis=(0, 2))
        if propagate_down[0]:
            slope = self._slope(x)
            bottom[0].diff[...] = dy * ((x > 0) + slope * negative)
