"""Im2col: the column buffer of a convolution, exposed as a layer.

The top is (num, channels * prod(kernel), *out): for each image the rows are
channel-major, then kernel offsets in row-major order, exactly Caffe's
im2col buffer. Parameters come from convolution_param (kernel, stride, pad,
dilation, axis); num_output and the fillers are not used.
"""

import math

from ..geometry import GeometryError, conv_output_size
from ..im2col import col2im, im2col
from .base import Layer, register_layer
from .conv import setup_conv_geometry


@register_layer
class Im2colLayer(Layer):
    type = "Im2col"
    exact_num_bottom_blobs = 1
    exact_num_top_blobs = 1

    def setup(self, bottom, top):
        setup_conv_geometry(self, bottom[0])

    def reshape(self, bottom, top):
        axis = self.channel_axis
        self.check(bottom[0].num_axes == axis + 1 + self.num_spatial_axes,
                   f"bottom num_axes may not change (bottom shape {bottom[0].shape})")
        self.image_shape = (bottom[0].count_range(0, axis),) + bottom[0].shape[axis:]
        try:
            out = tuple(conv_output_size(size, k, p, s, d) for size, k, p, s, d in
                        zip(bottom[0].shape[axis + 1:], self.kernel, self.pad, self.stride, self.dilation))
        except GeometryError as exc:
            raise self.error(f"bottom shape {bottom[0].shape}: {exc}") from None
        rows = bottom[0].shape[axis] * math.prod(self.kernel)
        top[0].reshape(bottom[0].shape[:axis] + (rows,) + out)

    def forward(self, bottom, top):
        image = bottom[0].data.reshape(self.image_shape)
        im2col(image, self.kernel, self.pad, self.stride, self.dilation, batch_first=True, out=top[0].data)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        cols = top[0].diff
        image = col2im(cols, self.image_shape, self.kernel, self.pad, self.stride, self.dilation,
                       batch_first=True)
        bottom[0].diff.reshape(self.image_shape)[...] = image
