"""Convolution and Deconvolution, over one shared base as in Caffe.

Caffe runs im2col and one GEMM per image and group. Here the columns of a
whole batch (or of a large chunk of it) are laid out as (K, num * out_spatial)
per group, so each pass is one batched matrix product over the groups:
`W (G, Og, Kg) @ cols (G, Kg, num*P)`. The same four steps serve both layers;
Deconvolution is Convolution with forward and backward-data swapped, which is
why its weights are shaped (channels, num_output / group, *kernel).

Batches whose columns exceed COLUMN_BUFFER_LIMIT elements run in chunks of
images, which bounds the memory a layer keeps. When the whole batch fits,
Convolution's forward leaves its columns in the buffer and the weight
gradient reuses them, where Caffe recomputes the same values from the same
bottom (a net never changes a bottom between its forward and backward).

On the GPU, Convolution runs through cuDNN (engine/cuda/cudnn.py) when the
cuDNN frontend package is installed and supports the geometry: forward,
backward-data and backward-filter are one cuDNN call each, groups included.
Otherwise the column arithmetic below runs on CuPy with cuBLAS products.

On the CPU, Convolution's 2-D 3x3 stride-1 layers take Winograd F(2x2, 3x3)
instead (engine/winograd.py; WINOGRAD below), 5x5 ones F(2x2, 5x5) where it
pays (_winograd_pays), and other stride-1 layers
compute the bottom diff as a correlation of the top diff (im2col + GEMM)
rather than by col2im's strided additions, when its columns fit the buffer.
Layers on a few input channels (a first layer on an image) run image by
image on the pool's threads instead, each image's columns multiplied while
they are in cache, and so do pointwise layers (1 x 1, stride 1) on large
maps, whose columns are the image itself (engine/cpu/conv_images.py;
_image_by_image).

`force_nd_im2col` and `engine` select implementations in Caffe, not results;
they are accepted and have no effect here.
"""

import math

import numpy

from .. import cpu, winograd
from ..cpu import products
from ..backend import get_array_module
from ..cuda import cudnn
from ..fillers import fill
from ..geometry import GeometryError, conv_output_size, conv_spatial_params, deconv_output_size, is_pointwise
from ..im2col import col2im, im2col
from .base import Layer, register_layer

# Largest column buffer, in elements, built in one piece; bigger batches go in chunks.
COLUMN_BUFFER_LIMIT = 1 << 25
# A weight diff whose inner dimension (images x output pixels) is at most this many terms is computed in
# the weights' own layout. Computing its transpose and adding that back, column by column, took longer than
# the product itself: ResNet-18's res5 shape (128 terms) 15.8 against 5.5 ms, res4's (392) 4.4 against 3.6
# on two threads; from res2's 6,272 terms the transposed product is faster (bench/README.md).
SHORT_INNER = 2048
# Layers on at most this many input channels (one group) run image by image (engine/cpu/conv_images.py),
# where one image's columns take IMAGE_COLUMNS elements (from, to): fewer, and the calls per image cost more
# than they save (LeNet's conv1, 14,400: 3.3 -> 3.8 ms forward + backward on two threads).
IMAGE_CHANNELS = 4
IMAGE_COLUMNS = (1 << 15, 1 << 22)
# Pointwise layers (1 x 1, stride 1, no padding) over at least this many pixels also run image by image.
# Forward / backward, two threads, ms, batch columns and rows against image by image (MobileNet v1's):
# conv2_1/sep (32 -> 64 channels, 8 x 112 x 112) 7.4-10.9 / 12.8-19.1 -> 4.0-4.5 / 8.6-10.6,
# conv3_1/sep (128, 56 x 56) 6.9-10.9 / 16.3-20.7 -> 5.3-5.8 / 10.7-12.0, conv4_1/sep (128 -> 256,
# 28 x 28) 3.3-5.4 / 6.9-9.6 -> 2.5-2.6 / 5.7-5.9. On 14 x 14 maps the backward was as fast or slower
# (conv5_x/sep, 512 channels: 10.6-12.0 -> 12.1-12.5), on 7 x 7 slower (5.9 -> 6.8).
POINTWISE_PIXELS = 512

# Convolution's Winograd path (engine/winograd.py) for 2-D 3x3 and 5x5 stride-1 kernels:
# "auto" takes it on the CPU where it is faster (see _winograd_pays), "always" wherever the
# geometry allows (CPU or GPU), "never" keeps im2col + GEMM everywhere.
WINOGRAD = "auto"


def setup_conv_geometry(layer, bottom):
    """Read convolution_param's axis, kernel, stride, pad and dilation onto `layer`.

    Shared by the convolution layers and Im2col, which take the same geometry.
    """
    p = layer.param.convolution_param
    try:
        layer.channel_axis = bottom.canonical_axis(p.axis)
    except IndexError as exc:
        raise layer.error(str(exc)) from None
    layer.num_spatial_axes = bottom.num_axes - layer.channel_axis - 1
    layer.check(layer.num_spatial_axes >= 1,
                f"needs at least one spatial axis after the channel axis {layer.channel_axis} "
                f"(bottom shape {bottom.shape})")
    try:
        layer.kernel, layer.stride, layer.pad, layer.dilation = conv_spatial_params(p, layer.num_spatial_axes)
    except GeometryError as exc:
        raise layer.error(str(exc)) from None
    return p


def _shape_string(shape):
    return " ".join(str(d) for d in shape) + f" ({math.prod(shape)})"


def _batched_product(a, b, out=None):
    """a @ b over stacked matrices; an outer product (inner size 1) is a broadcast multiply."""
    xp = get_array_module(a)
    if a.shape[-1] == 1:
        return xp.multiply(a, b, out=out)
    return products.for_module(xp)(a, b, out=out)


class BaseConvolutionLayer(Layer):
    """Parameters, blob shapes and the column arithmetic shared by both layers."""

    min_bottom_blobs = 1
    min_top_blobs = 1
    equal_num_bottom_top_blobs = True
    reverse_dimensions = False  # True for Deconvolution

    # -- set-up -----------------------------------------------------------------------
    def setup(self, bottom, top):
        p = setup_conv_geometry(self, bottom[0])
        self.channels = bottom[0].shape[self.channel_axis]
        self.num_output, self.group = self.output_channels_and_group(p)
        self.check(self.group > 0, "convolution_param.group must be positive")
        self.check(self.channels % self.group == 0,
                   f"channels ({self.channels}) must be a multiple of group ({self.group})")
        self.check(self.num_output % self.group == 0,
                   f"Number of output should be multiples of group (num_output {self.num_output}, "
                   f"group {self.group}).")
        if self.reverse_dimensions:
            self.conv_out_channels, self.conv_in_channels = self.channels, self.num_output
        else:
            self.conv_out_channels, self.conv_in_channels = self.num_output, self.channels
        weight_shape = (self.conv_out_channels, self.conv_in_channels // self.group) + self.kernel
        self.bias_term = p.bias_term
        bias_shape = (self.num_output,)
        if len(self.blobs):
            self.check(len(self.blobs) == 1 + self.bias_term, "Incorrect number of weight blobs.")
            self.check(self.blobs[0].shape == weight_shape,
                       f"Incorrect weight shape: expected shape {_shape_string(weight_shape)}; "
                       f"instead, shape was {_shape_string(self.blobs[0].shape)}")
            self.check(not self.bias_term or self.blobs[1].shape == bias_shape,
                       f"Incorrect bias shape: expected shape {_shape_string(bias_shape)}; "
                       f"instead, shape was {_shape_string(self.blobs[1].shape)}")
        else:
            fill(self.blobs.add_blob(*weight_shape).data, p.weight_filler)
            if self.bias_term:
                fill(self.blobs.add_blob(*bias_shape).data, p.bias_filler)
        # Per group: Og output rows, Kg = (input channels / group) * kernel size columns.
        self.kernel_dim = (self.conv_in_channels // self.group) * math.prod(self.kernel)
        self._cache = None

    def output_channels_and_group(self, p):
        """(num_output, group) from convolution_param; the depthwise forks derive them instead."""
        self.check(p.num_output > 0, "convolution_param.num_output must be positive")
        return p.num_output, p.group

    def compute_output_shape(self, spatial):
        raise NotImplementedError

    def reshape(self, bottom, top):
        first_spatial = self.channel_axis + 1
        self.check(bottom[0].num_axes == first_spatial + self.num_spatial_axes,
                   f"bottom num_axes may not change (was {first_spatial + self.num_spatial_axes}, "
                   f"now {bottom[0].num_axes})")
        self.check(bottom[0].shape[self.channel_axis] == self.channels,
                   f"Input size incompatible with convolution kernel: bottom has "
                   f"{bottom[0].shape[self.channel_axis]} channels, the layer was set up for {self.channels}")
        for index, blob in enumerate(bottom[1:], 1):
            self.check(blob.shape == bottom[0].shape,
                       f"All inputs must have the same shape (bottom 0 {bottom[0].shape}, "
                       f"bottom {index} {blob.shape})")
        in_spatial = bottom[0].shape[first_spatial:]
        try:
            out_spatial = tuple(self.compute_output_shape(in_spatial))
        except GeometryError as exc:
            raise self.error(f"bottom shape {bottom[0].shape}: {exc}") from None
        self.num = bottom[0].count_range(0, self.channel_axis)
        top_shape = bottom[0].shape[:self.channel_axis] + (self.num_output,) + out_spatial
        for blob in top:
            blob.reshape(top_shape)
        # The image im2col reads (conv input) and the grid it produces (conv output).
        if self.reverse_dimensions:
            self.image_spatial, self.col_spatial = out_spatial, tuple(in_spatial)
        else:
            self.image_spatial, self.col_spatial = tuple(in_spatial), out_spatial
        self._cache = None

    # -- the column arithmetic, on (n, channels, *spatial) arrays ------------------------
    def _weights(self):
        w = self.blobs[0].data
        return w.reshape(self.group, self.conv_out_channels // self.group, self.kernel_dim)

    def _chunks(self):
        """Batch slices whose columns stay under COLUMN_BUFFER_LIMIT elements."""
        per_item = self.kernel_dim * self.group * math.prod(self.col_spatial)
        step = max(1, COLUMN_BUFFER_LIMIT // max(per_item, 1))
        return [slice(start, min(start + step, self.num)) for start in range(0, self.num, step)]

    def _column_space(self, n, like, size=None):
        """The layer's reused column buffer, sized for n images: a flat array of `like`'s kind."""
        xp = get_array_module(like)
        self._cache = None  # the buffer is about to hold other columns
        if size is None:
            size = self.kernel_dim * self.group * n * math.prod(self.col_spatial)
        buffer = getattr(self, "_col_buffer", None)
        if buffer is None or buffer.size < size or buffer.dtype != like.dtype or \
                get_array_module(buffer) is not xp:
            buffer = self._col_buffer = None  # let the old one go first
            buffer = self._col_buffer = xp.empty(size, dtype=like.dtype)
        return buffer[:size]

    def _image_to_cols(self, image):
        """im2col of a conv-input chunk: (G, Kg, n * P), in the layer's reused buffer."""
        cols = im2col(image, self.kernel, self.pad, self.stride, self.dilation,
                      batch_first=False, out=self._column_space(image.shape[0], image))
        return cols.reshape(self.group, self.kernel_dim, -1)

    def _outputs_to_rows(self, outputs):
        """A conv-output chunk (n, conv_out, *P) as rows (G, Og, n * P)."""
        xp = get_array_module(outputs)
        n = outputs.shape[0]
        blob = outputs.reshape(n, self.conv_out_channels, -1)
        if cpu.usable(blob) and blob.flags.c_contiguous:
            rows = xp.empty((self.conv_out_channels, n, blob.shape[2]), dtype=blob.dtype)
            cpu.kernels("layout").blob_to_rows(blob, rows)
            return rows.reshape(self.group, self.conv_out_channels // self.group, -1)
        rows = xp.ascontiguousarray(blob.swapaxes(0, 1))
        return rows.reshape(self.group, self.conv_out_channels // self.group, -1)

    def _rows_to_outputs(self, rows, out, bias=None):
        """Write rows (G, Og, n * P) into the conv-output chunk `out` (n, conv_out, *P)."""
        n = out.shape[0]
        target = out.reshape(n, self.conv_out_channels, -1)
        if cpu.usable(rows, target) and target.flags.c_contiguous and rows.flags.c_contiguous:
            source = rows.reshape(self.conv_out_channels, n, -1)
            cpu.kernels("layout").rows_to_blob(source, source[0, 0] if bias is None else bias.reshape(-1),
                                               bias is not None, target)
            return
        values = rows.reshape(self.conv_out_channels, n, -1).swapaxes(0, 1)
        if bias is None:
            target[...] = values
        else:
            get_array_module(out).add(values, bias.reshape(1, -1, 1), out=target)

    def _rows_to_image(self, rows, out, bias=None):
        """Backward-data GEMM and col2im: rows (G, Og, n * P) into `out` (n, conv_in, *image).

        The product goes into the column buffer (whose columns the caller has used by now).
        """
        space = self._column_space(out.shape[0], rows).reshape(self.group, self.kernel_dim, -1)
        cols = _batched_product(self._weights().swapaxes(1, 2), rows, out=space)
        shape = out.shape[:2] + self.image_spatial
        image = col2im(cols, shape, self.kernel, self.pad, self.stride, self.dilation, batch_first=False,
                       out=out if out.flags.c_contiguous else None)
        column = None if bias is None else bias.reshape((1, -1) + (1,) * self.num_spatial_axes)
        if image is out:
            if column is not None:
                out += column
        elif column is None:
            out[...] = image
        else:
            get_array_module(out).add(image, column, out=out)

    def _accumulate_weight_diff(self, rows, cols):
        diff = self.blobs[0].diff.reshape(self.group, self.conv_out_channels // self.group, self.kernel_dim)
        xp = get_array_module(rows)
        if xp is numpy and rows.shape[-1] > SHORT_INNER:
            # OpenBLAS runs a long inner dimension faster with the columns as the left operand; the
            # transposed addition that follows costs little beside it.
            diff += products.matmul(cols, rows.swapaxes(1, 2)).swapaxes(1, 2)
            return
        diff += products.for_module(xp)(rows, cols.swapaxes(1, 2))

    def _accumulate_bias_diff(self, top_diff):
        xp = get_array_module(top_diff)
        spatial = top_diff.reshape(top_diff.shape[0], self.num_output, -1)
        if cpu.usable(spatial):
            total = cpu.kernels("channels").sums(spatial, spatial, False)[0]
            self.blobs[1].diff[...] += total.astype(spatial.dtype)
            return
        self.blobs[1].diff[...] += xp.sum(spatial, axis=(0, 2))

    def _as_batch(self, array, channels, spatial):
        return array.reshape((self.num, channels) + tuple(spatial))


@register_layer
class ConvolutionLayer(BaseConvolutionLayer):
    type = "Convolution"

    def compute_output_shape(self, spatial):
        return [conv_output_size(size, k, p, s, d)
                for size, k, p, s, d in zip(spatial, self.kernel, self.pad, self.stride, self.dilation)]

    def reshape(self, bottom, top):
        super().reshape(bottom, top)
        self._winograd = None
        if self.num_spatial_axes == 2 and winograd.supported(self.kernel, self.stride, self.dilation, self.pad):
            self._winograd = winograd.WinogradConvolution(self.pad, self.group, self.kernel[0])
        self._winograd_index = None

    def _winograd_pays(self):
        """On the CPU, whether Winograd beats im2col + GEMM for this layer's forward and weight diff
        (measured, see bench/README.md).

        F(2x2, 3x3) always does. F(2x2, 5x5)'s 36 GEMMs have only `channels` terms each: it pays
        where im2col's GEMM is short too (few outputs) and there are channels enough for its own:
        cifar10's conv2 and conv3 (32 in, 32 and 64 out) twice as fast forward and backward,
        LeNet's conv2 (20 in, 50 out) and GoogLeNet-like 16 to 24 in, 32 to 64 out, 1.6 to 2
        times on the forward and weight diff. CaffeNet's grouped conv2 (48 in, 128 out per group)
        measured within 10% either way and keeps im2col.
        """
        if self.kernel[0] == 3:
            return True
        return self.group == 1 and self.channels >= 16 and self.num_output <= 64

    def _winograd_bottom_diff(self):
        """Whether the Winograd layer's bottom diff is Winograd's too, else im2col's.

        The bottom diff correlates the top diff padded by k - 1 - pad. A 5x5 layer without
        "same" padding (pad < 2) has more tiles there than in its forward (LeNet's conv2: 12x12
        bottom diffs from 8x8 top diffs), and im2col's route ran it faster (5.5 against 6.3 ms on
        one thread, 3.0 against 3.5 on two).
        """
        return self.kernel[0] == 3 or min(self.pad) >= 2

    def _image_by_image(self, array):
        """Whether the layer runs image by image on the CPU (engine/cpu/conv_images.py): one group, 2-D,
        NumPy arrays the kernels serve, and either

        - at most IMAGE_CHANNELS input channels: there the columns are many times the input and their
          product short; writing the batch's columns to memory and reading them back cost more than
          recomputing them for the weight diff (forward + weight diff, two threads: ResNet-18's conv1
          10.0 -> 8.7 ms, cifar10_quick's 15.0 -> 12.1, MobileNet v1's 9.1 -> 6.8); or
        - a pointwise layer (1 x 1, stride 1, no padding) over at least POINTWISE_PIXELS pixels, and no
          more outputs than pixels: its columns are the image itself, and each image's products go straight
          between the blobs, without the batch's columns and rows moved to and from blob order (see
          POINTWISE_PIXELS).
        """
        if not (self.group == 1 and self.num_spatial_axes == 2 and self.channel_axis == 1
                and cpu.usable(array, self.blobs[0].data) and array.dtype == self.blobs[0].data.dtype):
            return False
        if self._pointwise():
            # The weight diff's fixed groups hold a weight-sized sum each (engine/cpu/conv_images.py): with at
            # most as many outputs as pixels they take no more memory than the batch path's columns.
            pixels = math.prod(self.col_spatial)
            return pixels >= POINTWISE_PIXELS and self.num_output <= pixels
        columns = self.kernel_dim * math.prod(self.col_spatial)
        return self.channels <= IMAGE_CHANNELS and IMAGE_COLUMNS[0] <= columns <= IMAGE_COLUMNS[1]

    def _pointwise(self):
        return is_pointwise(self.kernel, self.pad, self.stride)

    def _use_winograd(self, xp):
        if self._winograd is None or WINOGRAD == "never":
            return False
        if WINOGRAD == "always":
            return True
        return xp is numpy and self._winograd_pays()

    # -- cuDNN (GPU) ------------------------------------------------------------------
    def _cudnn_plan(self, kind, array):
        """The cuDNN plan for `kind` on this layer's shapes, or None (CPU, no cuDNN, unsupported)."""
        if get_array_module(array) is numpy or self.channel_axis != 1 or self.num_spatial_axes not in (2, 3):
            return None
        x_shape = (self.num, self.channels) + self.image_spatial
        y_shape = (self.num, self.num_output) + self.col_spatial
        return cudnn.plan(kind, x_shape, self.blobs[0].shape, y_shape, self.pad, self.stride, self.dilation,
                          array.dtype)

    def _cudnn_forward(self, plan, bottom, top):
        for b, t in zip(bottom, top):
            plan.run(b.data, self.blobs[0].data, t.data)
            if self.bias_term:
                t.data[...] += self.blobs[1].data.reshape((1, -1) + (1,) * self.num_spatial_axes)

    def _cudnn_backward(self, top, propagate_down, bottom):
        """Both cuDNN plans, or False when either is missing (the caller falls back)."""
        data_plan = self._cudnn_plan("backward_data", top[0].diff) if any(propagate_down) else None
        filter_plan = self._cudnn_plan("backward_filter", top[0].diff) if self.param_propagate_down[0] else None
        if (any(propagate_down) and data_plan is None) or (self.param_propagate_down[0] and filter_plan is None):
            return False
        weight_diff = self.blobs[0].diff
        scratch = get_array_module(weight_diff).empty_like(weight_diff) if filter_plan is not None else None
        for index, (t, b) in enumerate(zip(top, bottom)):
            if filter_plan is not None:
                filter_plan.run(b.data, t.diff, scratch)  # cuDNN overwrites; Caffe accumulates
                weight_diff += scratch
            if propagate_down[index]:
                data_plan.run(t.diff, self.blobs[0].data, b.diff)
        return True

    def forward(self, bottom, top):
        bias = self.blobs[1].data if self.bias_term else None
        plan = self._cudnn_plan("forward", bottom[0].data)
        if plan is not None:
            self._cache = None
            self._cudnn_forward(plan, bottom, top)
            return
        if self._depthwise(bottom[0].data):
            self._cache = None
            kernels = cpu.kernels("depthwise")
            weight = self.blobs[0].data.reshape((self.num_output,) + self.kernel)
            for b, t in zip(bottom, top):
                x = self._as_batch(b.data, self.channels, self.image_spatial)
                y = self._as_batch(t.data, self.num_output, self.col_spatial)
                kernels.forward(x, weight, weight.reshape(-1) if bias is None else bias, bias is not None,
                                *self.stride, *self.pad, *self.dilation, y)
            return
        if self._use_winograd(get_array_module(bottom[0].data)):
            self._cache = None
            for index, (b, t) in enumerate(zip(bottom, top)):
                x = self._as_batch(b.data, self.channels, self.image_spatial)
                y = self._as_batch(t.data, self.num_output, self.col_spatial)
                self._winograd.forward(x, self.blobs[0].data, bias, out=y)
            # The transformed input (or its column phases) of the last bottom stays for its backward.
            self._winograd_index = len(bottom) - 1
            return
        if self._image_by_image(bottom[0].data):
            self._cache = None
            weight = self.blobs[0].data.reshape(self.num_output, self.kernel_dim)
            for b, t in zip(bottom, top):
                cpu.kernels("conv_images").forward(
                    self._as_batch(b.data, self.channels, self.image_spatial), weight, bias, self.kernel, self.pad,
                    self.stride, self.dilation, self._as_batch(t.data, self.num_output, self.col_spatial))
            return
        weights = self._weights()
        chunks = self._chunks()
        self._cache = None
        for index, (b, t) in enumerate(zip(bottom, top)):
            x = self._as_batch(b.data, self.channels, self.image_spatial)
            y = self._as_batch(t.data, self.num_output, self.col_spatial)
            for part in chunks:
                cols = self._image_to_cols(x[part])
                self._rows_to_outputs(_batched_product(weights, cols), y[part], bias)
            # Backward reuses the columns when the whole batch fit in one buffer.
            self._cache = (index, cols) if len(chunks) == 1 else None

    def backward(self, top, propagate_down, bottom):
        want_weights = self.param_propagate_down[0]
        if self.bias_term and self.param_propagate_down[1]:
            for t in top:
                self._accumulate_bias_diff(t.diff)
        if self._cudnn_plan("forward", top[0].diff) is not None and self._cudnn_backward(top, propagate_down, bottom):
            return
        if self._depthwise(top[0].diff):
            self._depthwise_backward(top, propagate_down, bottom)
            return
        if self._use_winograd(get_array_module(top[0].diff)):
            self._winograd_backward(top, propagate_down, bottom)
            return
        if self._image_by_image(top[0].diff):
            self._image_by_image_backward(top, propagate_down, bottom)
            return
        chunks = self._chunks()
        for index, (t, b) in enumerate(zip(top, bottom)):
            if not (want_weights or propagate_down[index]):
                continue
            dy = self._as_batch(t.diff, self.num_output, self.col_spatial)
            x = self._as_batch(b.data, self.channels, self.image_spatial)
            dx = self._as_batch(b.diff, self.channels, self.image_spatial)
            for part in chunks:
                rows = self._outputs_to_rows(dy[part])
                if want_weights:
                    cached = self._cache is not None and self._cache[0] == index and len(chunks) == 1
                    cols = self._cache[1] if cached else self._image_to_cols(x[part])
                    self._accumulate_weight_diff(rows, cols)
                if propagate_down[index]:
                    self._data_diff_of_part(dy[part], dx[part], rows)
        self._cache = None

    def _image_by_image_backward(self, top, propagate_down, bottom):
        """The weight diff image by image (engine/cpu/conv_images.py), the bottom diff by im2col's route (a
        pointwise layer's: one product per image)."""
        diff = self.blobs[0].diff.reshape(self.num_output, self.kernel_dim)
        for index, (t, b) in enumerate(zip(top, bottom)):
            dy = self._as_batch(t.diff, self.num_output, self.col_spatial)
            x = self._as_batch(b.data, self.channels, self.image_spatial)
            if self.param_propagate_down[0]:
                cpu.kernels("conv_images").weight_diff(x, dy, self.kernel, self.pad, self.stride, self.dilation, diff)
            if propagate_down[index]:
                dx = self._as_batch(b.diff, self.channels, self.image_spatial)
                if self._pointwise():  # dx[n] = W^T dy[n], each image's product between the blobs
                    weight = self.blobs[0].data.reshape(self.num_output, self.channels)
                    products.matmul(weight.T, dy.reshape(self.num, self.num_output, -1),
                                    out=dx.reshape(self.num, self.channels, -1))
                    continue
                for part in self._chunks():
                    self._data_diff_of_part(dy[part], dx[part])

    def _data_diff_of_part(self, dy, dx, rows=None):
        """The bottom diff of a batch chunk by im2col's route: a correlation of the top diff, or GEMM and
        col2im of its rows (`rows`, when the caller has them already)."""
        if self._correlate_backward_data():
            self._data_diff_by_correlation(dy, dx)
        else:
            self._rows_to_image(self._outputs_to_rows(dy) if rows is None else rows, dx)

    def _depthwise(self, array):
        """Whether the direct depthwise kernels (engine/cpu/depthwise.py) serve: one input channel per group."""
        return (self.group > 1 and self.group == self.channels and self.num_spatial_axes == 2
                and self.channel_axis == 1 and cpu.usable(array, self.blobs[0].data))

    def _depthwise_backward(self, top, propagate_down, bottom):
        kernels = cpu.kernels("depthwise")
        geometry = (*self.stride, *self.pad, *self.dilation)
        weight = self.blobs[0].data.reshape((self.num_output,) + self.kernel)
        weight_diff = self.blobs[0].diff.reshape(weight.shape)
        for index, (t, b) in enumerate(zip(top, bottom)):
            dy = self._as_batch(t.diff, self.num_output, self.col_spatial)
            if self.param_propagate_down[0]:
                x = self._as_batch(b.data, self.channels, self.image_spatial)
                kernels.backward_weight(x, dy, *geometry, weight_diff)
            if propagate_down[index]:
                dx = self._as_batch(b.diff, self.channels, self.image_spatial)
                kernels.backward_data(dy, weight, *geometry, dx)

    def _correlate_backward_data(self):
        """Whether the bottom diff goes as a stride-1 correlation of the top diff (im2col + GEMM).

        With stride 1, dx = dy padded by d(k-1) - p, correlated with the weights rotated by 180
        degrees and channels swapped: im2col copies run faster than col2im's strided additions.
        Taken when the top diff's columns fit in the forward's column buffer, and, for kernels larger than
        1 x 1 (whose rotated weights are a copy), when the weights are not larger than those columns: with
        512 x 512 x 3 x 3 weights over 8 x 4 x 4 maps (ResNet-18's res5) the copy alone took longer than
        col2im.
        """
        if any(s != 1 for s in self.stride) or any(d * (k - 1) < p for k, p, d in
                                                     zip(self.kernel, self.pad, self.dilation)):
            return False
        taps = math.prod(self.kernel)
        if taps > 1 and self.blobs[0].count > taps * self.num_output * self.num * math.prod(self.image_spatial):
            return False
        return self.num_output * math.prod(self.image_spatial) <= self.channels * math.prod(self.col_spatial)

    def _data_diff_by_correlation(self, dy, dx):
        xp = get_array_module(dy)
        n, g = dy.shape[0], self.group
        og, cg = self.num_output // g, self.channels // g
        k = math.prod(self.kernel)
        pad = tuple(d * (kk - 1) - p for kk, p, d in zip(self.kernel, self.pad, self.dilation))
        size = self.num_output * k * n * math.prod(self.image_spatial)
        cols = im2col(dy, self.kernel, pad, (1,) * self.num_spatial_axes, self.dilation, batch_first=False,
                      out=self._column_space(n, dy, size)).reshape(g, og * k, -1)
        w = self.blobs[0].data.reshape((g, og, cg) + self.kernel)
        flip = (slice(None),) * 3 + (slice(None, None, -1),) * self.num_spatial_axes
        # A view where the kernel is 1 x 1 (BLAS reads it transposed); a transposing copy of a large
        # weight took longer than the product (MobileNet v1's fc7, 1000 x 1024: 3.9 ms).
        rotated = w[flip].swapaxes(1, 2).reshape(g, cg, og * k)
        product = _batched_product(rotated, cols)
        self._rows_to_outputs_of(product.reshape(self.channels, n, -1), dx.reshape(n, self.channels, -1))

    @staticmethod
    def _rows_to_outputs_of(rows, target):
        """target (n, C, P) = rows (C, n, P) swapped."""
        if cpu.usable(rows, target) and target.flags.c_contiguous and rows.flags.c_contiguous:
            cpu.kernels("layout").rows_to_blob(rows, rows[0, 0], False, target)
        else:
            target[...] = rows.swapaxes(0, 1)

    def _winograd_backward(self, top, propagate_down, bottom):
        conv = self._winograd
        weight_diff = self.blobs[0].diff if self.param_propagate_down[0] else None
        # The last bottom first: its transformed input (or column phases) is still held from the forward.
        for index in reversed(range(len(top))):
            if index != self._winograd_index:
                conv.release()
            self._winograd_index = None
            if weight_diff is None and not propagate_down[index]:
                continue
            t, b = top[index], bottom[index]
            dy = self._as_batch(t.diff, self.num_output, self.col_spatial)
            x = self._as_batch(b.data, self.channels, self.image_spatial)
            dx = self._as_batch(b.diff, self.channels, self.image_spatial) if propagate_down[index] else None
            by_winograd = propagate_down[index] and self._winograd_bottom_diff()
            conv.backward(x, dy, self.blobs[0].data, weight_diff, need_bottom=by_winograd, out=dx)
            if propagate_down[index] and not by_winograd:
                for part in self._chunks():
                    self._data_diff_of_part(dy[part], dx[part])
        conv.release()


@register_layer
class DeconvolutionLayer(BaseConvolutionLayer):
    """The transpose of Convolution: its forward is Convolution's backward-data."""

    type = "Deconvolution"
    reverse_dimensions = True

    def compute_output_shape(self, spatial):
        return [deconv_output_size(size, k, p, s, d)
                for size, k, p, s, d in zip(spatial, self.kernel, self.pad, self.stride, self.dilation)]

    def forward(self, bottom, top):
        bias = self.blobs[1].data if self.bias_term else None
        for b, t in zip(bottom, top):
            x = self._as_batch(b.data, self.channels, self.col_spatial)
            y = self._as_batch(t.data, self.num_output, self.image_spatial)
            for part in self._chunks():
                self._rows_to_image(self._outputs_to_rows(x[part]), y[part], bias)

    def backward(self, top, propagate_down, bottom):
        want_weights = self.param_propagate_down[0]
        if self.bias_term and self.param_propagate_down[1]:
            for t in top:
                self._accumulate_bias_diff(t.diff)
        weights = self._weights()
        for index, (t, b) in enumerate(zip(top, bottom)):
            if not (want_weights or propagate_down[index]):
                continue
            dy = self._as_batch(t.diff, self.num_output, self.image_spatial)
            x = self._as_batch(b.data, self.channels, self.col_spatial)
            dx = self._as_batch(b.diff, self.channels, self.col_spatial)
            for part in self._chunks():
                cols = self._image_to_cols(dy[part])
                if want_weights:
                    self._accumulate_weight_diff(self._outputs_to_rows(x[part]), cols)
                if propagate_down[index]:
                    self._rows_to_outputs(_batched_product(weights, cols), dx[part])
