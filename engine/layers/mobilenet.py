"""The MobileNet forks' layers: two depthwise convolutions and ReLU6.

Both depthwise types are Convolution with one group per input channel, the
weights shaped (channels, 1, *kernel) as grouped convolution stores them, so
the Convolution layer's code (and its cuDNN, Winograd and im2col paths) runs
them:
- ConvolutionDepthwise (farmingyard's caffe-mobilenet, used by ShuffleNet's
  prototxts) takes only the geometry from convolution_param: it ignores
  num_output and group, and its top has the bottom's channel count.
- DepthwiseConvolution (yonghenglh6/DepthwiseConvolution) reads
  convolution_param as Convolution does; its GPU kernel assumes group =
  num_output = channels, so anything else is an error here.

ReLU6 (eric612/MobileNet-YOLO) is min(ReLU(x), 6), with ReLU's negative_slope
read from relu6_param; its gradient is zero from 6 up.
"""

from ..backend import get_array_module
from .base import register_layer
from .conv import ConvolutionLayer
from .neuron import NeuronLayer


@register_layer
class ConvolutionDepthwiseLayer(ConvolutionLayer):
    type = "ConvolutionDepthwise"
    exact_num_bottom_blobs = 1
    exact_num_top_blobs = 1

    def output_channels_and_group(self, p):
        return self.channels, self.channels


@register_layer
class DepthwiseConvolutionLayer(ConvolutionLayer):
    type = "DepthwiseConvolution"

    def output_channels_and_group(self, p):
        num_output, group = super().output_channels_and_group(p)
        self.check(group == self.channels and num_output == self.channels,
                   f"DepthwiseConvolution needs group and num_output equal to the bottom's channels "
                   f"({self.channels}); got group {group}, num_output {num_output}")
        return num_output, group


@register_layer
class ReLU6Layer(NeuronLayer):
    type = "ReLU6"

    def setup(self, bottom, top):
        self.slope = self.param.relu6_param.negative_slope

    def forward(self, bottom, top):
        # With a negative slope the output's sign is not the input's: keep the input.
        if self.slope < 0:
            self.remember_input(bottom, top)
        xp = get_array_module(bottom[0].data)
        x = bottom[0].data
        if self.slope:
            y = xp.where(x > 0, x, x * x.dtype.type(self.slope))
        else:
            y = xp.maximum(x, 0)
        xp.minimum(y, 6, out=top[0].data)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        # In place, bottom data holds the output: positive and below 6 exactly where the input is.
        x = self.input_data(bottom) if self.slope < 0 else bottom[0].data
        gate = (x > 0).astype(x.dtype)
        if self.slope:
            gate += x.dtype.type(self.slope) * (x <= 0)
        gate *= x < 6
        bottom[0].diff[...] = top[0].diff * gate
