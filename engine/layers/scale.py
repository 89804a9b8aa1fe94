"""Scale and Bias: multiply / add a blob broadcast along some axes of bottom[0].

The operand is either a learned parameter blob or bottom[1]. It lines up with
bottom[0]'s axes `axis` .. `axis + operand.num_axes - 1`, so bottom[0] is viewed
as (outer, dim, inner) and the operand as (1, dim, 1). A scalar operand
(0 axes) applies everywhere, whatever `axis` says.

On the GPU, Scale's product and its gradient sums run as single kernels
(engine/cuda/channels.py) when the bias, if any, spans the scale's axes; on the
CPU, the same passes run as multi-threaded kernels (engine/cpu/channels.py).
"""

import numpy as np

from .. import cpu
from ..backend import get_array_module
from ..cuda import channels as gpu_channels
from ..fillers import fill
from .base import Layer, register_layer


class _BroadcastLayer(Layer):
    """Shared geometry of Scale and Bias."""

    min_bottom_blobs = 1
    max_bottom_blobs = 2
    exact_num_top_blobs = 1

    def _axis(self, blob, axis):
        try:
            return blob.canonical_axis(axis)
        except IndexError as exc:
            raise self.error(str(exc)) from None

    def _learned_shape(self, bottom0, axis, num_axes, what):
        """Shape of a learned operand: `num_axes` axes of bottom[0] from `axis` (-1: to the end)."""
        axis = self._axis(bottom0, axis)
        self.check(num_axes >= -1, "num_axes must be non-negative, or -1 to extend to the end of bottom[0]")
        if num_axes >= 0:
            self.check(bottom0.num_axes >= axis + num_axes,
                       f"{what} blob's shape extends past bottom[0]'s shape {bottom0.shape} when applied "
                       f"starting with bottom[0] axis = {axis}")
            return bottom0.shape[axis:axis + num_axes]
        return bottom0.shape[axis:]

    def _geometry(self, bottom0, operand, axis_param, what):
        """(outer, dim, inner) of bottom[0] around `operand`; checks the shapes line up."""
        axis = 0 if operand.num_axes == 0 else self._axis(bottom0, axis_param)
        self.check(bottom0.num_axes >= axis + operand.num_axes,
                   f"{what} blob's shape {operand.shape} extends past bottom[0]'s shape {bottom0.shape} when "
                   f"applied starting with bottom[0] axis = {axis}")
        for i, size in enumerate(operand.shape):
            self.check(bottom0.shape[axis + i] == size,
                       f"dimension mismatch between bottom[0]->shape({axis + i}) = {bottom0.shape[axis + i]} "
                       f"and {what}->shape({i}) = {size}")
        return (bottom0.count_range(0, axis), operand.count, bottom0.count_range(axis + operand.num_axes))

    @staticmethod
    def _view(array, geometry):
        return array.reshape(geometry)

    @staticmethod
    def _column(array):
        return array.reshape(1, -1, 1)

    @staticmethod
    def _reduce(product):
        """Sum over the outer and inner axes, leaving the operand's elements."""
        return product.sum(axis=(0, 2))


@register_layer
class BiasLayer(_BroadcastLayer):
    """top = bottom[0] + bias, the bias learned or given as bottom[1]."""

    type = "Bias"

    def setup(self, bottom, top):
        p = self.param.bias_param
        if len(bottom) == 1 and not len(self.blobs):
            shape = self._learned_shape(bottom[0], p.axis, p.num_axes, "bias")
            self.blobs.add_blob(*shape)
            fill(self.blobs[0].data, p.filler)

    def _operand(self, bottom):
        return bottom[1] if len(bottom) > 1 else self.blobs[0]

    def reshape(self, bottom, top):
        self.geometry = self._geometry(bottom[0], self._operand(bottom), self.param.bias_param.axis, "bias")
        if top[0] is not bottom[0]:
            top[0].reshape(bottom[0].shape)

    def forward(self, bottom, top):
        bias = self._column(self._operand(bottom).data)
        top[0].data[...] = (self._view(bottom[0].data, self.geometry) + bias).reshape(top[0].shape)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0] and top[0] is not bottom[0]:
            bottom[0].diff[...] = top[0].diff
        learned = len(bottom) == 1
        if learned and self.param_propagate_down[0]:
            self.blobs[0].diff[...] += self._reduce(self._view(top[0].diff, self.geometry)).reshape(
                self.blobs[0].shape)
        elif not learned and propagate_down[1]:
            bottom[1].diff[...] = self._reduce(self._view(top[0].diff, self.geometry)).reshape(bottom[1].shape)


@register_layer
class ScaleLayer(_BroadcastLayer):
    """top = bottom[0] * scale (+ bias), the scale learned or given as bottom[1].

    With `bias_term` a learned bias follows the scale, as Caffe's internal
    Bias layer: it spans bottom[1]'s axes, or `num_axes` axes for a learned
    scale, and is the last parameter blob.
    """

    type = "Scale"

    def setup(self, bottom, top):
        p = self.param.scale_param
        if len(self.blobs):
            self.bias_index = len(self.blobs) - 1 if p.bias_term else None
            return
        if len(bottom) == 1:
            shape = self._learned_shape(bottom[0], p.axis, p.num_axes, "scale")
            self.blobs.add_blob(*shape)
            filler = p.filler
            if not p.HasField("filler"):
                # Default to ones: an untrained Scale is the identity.
                filler = self._caffe_pb2.FillerParameter(type="constant", value=1.0)
            fill(self.blobs[0].data, filler)
        self.bias_index = None
        if p.bias_term:
            num_axes = bottom[1].num_axes if len(bottom) > 1 else p.num_axes
            shape = self._learned_shape(bottom[0], p.axis, num_axes, "bias")
            self.blobs.add_blob(*shape)
            fill(self.blobs[-1].data, p.bias_filler)
            self.bias_index = len(self.blobs) - 1

    def _scale(self, bottom):
        return bottom[1] if len(bottom) > 1 else self.blobs[0]

    def reshape(self, bottom, top):
        axis = self.param.scale_param.axis
        self.geometry = self._geometry(bottom[0], self._scale(bottom), axis, "scale")
        if self.bias_index is not None:
            self.bias_geometry = self._geometry(bottom[0], self.blobs[self.bias_index], axis, "bias")
        if top[0] is not bottom[0]:
            top[0].reshape(bottom[0].shape)

    def _on_gpu(self, array):
        return get_array_module(array) is not np and (self.bias_index is None or
                                                     self.bias_geometry == self.geometry)

    def forward(self, bottom, top):
        if self._on_gpu(bottom[0].data):
            x = bottom[0].data
            if top[0] is bottom[0]:
                self.saved_input = x.copy()
            bias = self.blobs[self.bias_index].data if self.bias_index is not None else None
            _, dim, inner = self.geometry
            gpu_channels.scale(x, self._scale(bottom).data, inner, dim, top[0].data, bias)
            return
        x = self._view(bottom[0].data, self.geometry)
        if self._on_cpu_kernels(x, self._scale(bottom).data):
            self._forward_cpu(x, bottom, top)
            return
        if top[0] is bottom[0]:
            # In place the input is about to be overwritten; backward needs it.
            self.saved_input = x.copy()
        y = x * self._column(self._scale(bottom).data)
        if self.bias_index is not None:
            y = y.reshape(self.bias_geometry) + self._column(self.blobs[self.bias_index].data)
        top[0].data[...] = y.reshape(top[0].shape)

    def _on_cpu_kernels(self, *arrays):
        return (self.bias_index is None or self.bias_geometry == self.geometry) and cpu.usable(*arrays)

    def _forward_cpu(self, x, bottom, top):
        kernels = cpu.kernels("channels")
        saved, save = x, top[0] is bottom[0]
        if save:
            # In place the input is about to be overwritten; backward needs it (saved on the same pass).
            saved = getattr(self, "saved_input", None)
            if not isinstance(saved, np.ndarray) or saved.shape != x.shape or saved.dtype != x.dtype:
                saved = self.saved_input = np.empty_like(x)
        factor = self._scale(bottom).data.reshape(-1)
        bias = self.blobs[self.bias_index].data.reshape(-1) if self.bias_index is not None else factor
        kernels.scale(x, factor, bias, self.bias_index is not None, self._view(top[0].data, self.geometry),
                      saved, save)

    def _backward_cpu(self, top, propagate_down, bottom):
        kernels = cpu.kernels("channels")
        dy, scale, learned = self._view(top[0].diff, self.geometry), self._scale(bottom), len(bottom) == 1
        want_bias = self.bias_index is not None and self.param_propagate_down[self.bias_index]
        want_scale = (learned and self.param_propagate_down[0]) or (not learned and propagate_down[1])
        if want_scale or want_bias:
            x = self.saved_input if top[0] is bottom[0] else self._view(bottom[0].data, self.geometry)
            if propagate_down[0]:  # the sums and the bottom diff in one pass over the top diff
                factor = scale.data.reshape(-1)
                sum_dy, sum_dy_x = kernels.scale_backward(dy, x, factor, want_scale,
                                                          self._view(bottom[0].diff, self.geometry))
            else:
                sum_dy, sum_dy_x = kernels.sums(dy, x, want_scale)
            if want_bias:
                bias = self.blobs[self.bias_index]
                bias.diff[...] += sum_dy.astype(dy.dtype).reshape(bias.shape)
            if want_scale:
                grad = sum_dy_x.astype(dy.dtype).reshape(scale.shape)
                if learned:
                    scale.diff[...] += grad
                else:
                    scale.diff[...] = grad
        elif propagate_down[0]:
            factor = scale.data.reshape(-1)
            kernels.scale(dy, factor, factor, False, self._view(bottom[0].diff, self.geometry), dy, False)

    def _backward_gpu(self, top, propagate_down, bottom):
        dy, scale, learned = top[0].diff, self._scale(bottom), len(bottom) == 1
        _, dim, inner = self.geometry
        want_bias = self.bias_index is not None and self.param_propagate_down[self.bias_index]
        want_scale = (learned and self.param_propagate_down[0]) or (not learned and propagate_down[1])
        if want_scale or want_bias:
            x = self.saved_input if top[0] is bottom[0] else bottom[0].data
            sum_dy, sum_dy_x = gpu_channels.channel_sums(dy, self.geometry, gpu_channels.SUM_AND_DOT, b=x)
            if want_bias:
                bias = self.blobs[self.bias_index]
                bias.diff[...] += sum_dy.reshape(bias.shape)
            if want_scale:
                if learned:
                    scale.diff[...] += sum_dy_x.reshape(scale.shape)
                else:
                    scale.diff[...] = sum_dy_x.reshape(scale.shape)
        if propagate_down[0]:
            gpu_channels.scale(dy, scale.data, inner, dim, bottom[0].diff)

    def backward(self, top, propagate_down, bottom):
        dy = top[0].diff
        if self._on_gpu(dy):
            self._backward_gpu(top, propagate_down, bottom)
            return
        if self._on_cpu_kernels(dy, self._scale(bottom).data):
            self._backward_cpu(top, propagate_down, bottom)
            return
        if self.bias_index is not None and self.param_propagate_down[self.bias_index]:
            bias = self.blobs[self.bias_index]
            bias.diff[...] += self._reduce(dy.reshape(self.bias_geometry)).reshape(bias.shape)
        learned = len(bottom) == 1
        scale = self._scale(bottom)
        if (learned and self.param_propagate_down[0]) or (not learned and propagate_down[1]):
            x = self.saved_input if top[0] is bottom[0] else self._view(bottom[0].data, self.geometry)
            grad = self._reduce(self._view(dy, self.geometry) * x).reshape(scale.shape)
            if learned:
                scale.diff[...] += grad
            else:
                scale.diff[...] = grad
        if propagate_down[0]:
            dx = self._view(dy, self.geometry) * self._column(scale.data)
            bottom[0].diff[...] = dx.reshape(bottom[0].shape)
