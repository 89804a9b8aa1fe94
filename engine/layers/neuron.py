"""Elementwise neuron layers: one bottom, one top of the same shape, in place allowed.

Formulas follow Caffe's CPU code (sigmoid as 0.5 * tanh(0.5 x) + 0.5, BNLL's
exp clamp at 50, ELU's gradient through the output). Where a backward needs
the input but Caffe would read it after an in-place forward overwrote it,
these layers keep a copy of the input instead, as Caffe's PReLU does.
"""

import contextlib

import numpy as np

from .. import cpu
from ..backend import get_array_module, random_module
from ..cuda import neuron as gpu_neuron
from .base import Layer, register_layer

BNLL_THRESHOLD = 50.0  # Caffe's kBNLL_THRESHOLD: exp() clamp in BNLL's gradient


def quiet(xp):
    """Silence NumPy's overflow / invalid warnings where Caffe yields inf or NaN silently."""
    return np.errstate(all="ignore") if xp is np else contextlib.nullcontext()


def sigmoid(x):
    """Caffe's sigmoid, written through tanh so that it never overflows."""
    xp = get_array_module(x)
    return 0.5 * xp.tanh(0.5 * x) + 0.5


class NeuronLayer(Layer):
    """Base of elementwise layers: the top takes the bottom's shape."""

    exact_num_bottom_blobs = 1
    exact_num_top_blobs = 1
    # Layers whose backward needs the input set this; in place, forward then keeps a copy.
    needs_input = False

    def reshape(self, bottom, top):
        top[0].reshape(bottom[0].shape)

    def remember_input(self, bottom, top):
        """Call at the start of forward: keeps the input when it is about to be overwritten."""
        self._saved_input = bottom[0].data.copy() if top[0] is bottom[0] else None

    def input_data(self, bottom):
        """The forward input, also after an in-place forward."""
        saved = getattr(self, "_saved_input", None)
        return bottom[0].data if saved is None else saved

    def refuse_in_place(self, bottom, top):
        if top[0] is bottom[0]:
            raise self.error(f"{self.type} Layer does not allow in-place computation.")


@register_layer
class ReLULayer(NeuronLayer):
    type = "ReLU"

    def setup(self, bottom, top):
        self.slope = self.param.relu_param.negative_slope

    def forward(self, bottom, top):
        xp = get_array_module(bottom[0].data)
        x = bottom[0].data
        if cpu.usable(x, top[0].data):
            cpu.kernels("neuron").relu_forward(x.reshape(-1), float(self.slope), top[0].data.reshape(-1))
            return
        if self.slope:
            top[0].data[...] = xp.where(x > 0, x, x * self.slope)
        else:
            xp.maximum(x, 0, out=top[0].data)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        # In place, bottom data already holds the output; its sign is the input's.
        x = bottom[0].data
        if get_array_module(x) is not np:
            gpu_neuron.relu_backward(x, top[0].diff, self.slope, bottom[0].diff)
            return
        if cpu.usable(x, top[0].diff, bottom[0].diff):
            cpu.kernels("neuron").relu_backward(x.reshape(-1), top[0].diff.reshape(-1), float(self.slope),
                                                bottom[0].diff.reshape(-1))
            return
        gate = (x > 0).astype(x.dtype)
        if self.slope:
            gate += self.slope * (x <= 0)
        bottom[0].diff[...] = top[0].diff * gate


@register_layer
class ELULayer(NeuronLayer):
    """y = x for x > 0, alpha (exp(x) - 1) otherwise; the gradient reads y, so in place is safe."""

    type = "ELU"

    def setup(self, bottom, top):
        self.alpha = self.param.elu_param.alpha

    def forward(self, bottom, top):
        xp = get_array_module(bottom[0].data)
        x = bottom[0].data
        top[0].data[...] = xp.maximum(x, 0) + self.alpha * xp.expm1(xp.minimum(x, 0))

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        xp = get_array_module(top[0].diff)
        x, y = bottom[0].data, top[0].data  # in place x is y: same sign either way
        bottom[0].diff[...] = top[0].diff * xp.where(x > 0, 1, self.alpha + y)


@register_layer
class SigmoidLayer(NeuronLayer):
    type = "Sigmoid"

    def forward(self, bottom, top):
        top[0].data[...] = sigmoid(bottom[0].data)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            y = top[0].data
            bottom[0].diff[...] = top[0].diff * y * (1 - y)


@register_layer
class TanHLayer(NeuronLayer):
    type = "TanH"

    def forward(self, bottom, top):
        xp = get_array_module(bottom[0].data)
        xp.tanh(bottom[0].data, out=top[0].data)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            y = top[0].data
            bottom[0].diff[...] = top[0].diff * (1 - y * y)


@register_layer
class AbsValLayer(NeuronLayer):
    type = "AbsVal"

    def setup(self, bottom, top):
        self.refuse_in_place(bottom, top)

    def forward(self, bottom, top):
        xp = get_array_module(bottom[0].data)
        xp.abs(bottom[0].data, out=top[0].data)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            xp = get_array_module(top[0].diff)
            bottom[0].diff[...] = top[0].diff * xp.sign(bottom[0].data)


@register_layer
class BNLLLayer(NeuronLayer):
    """Binomial normal log-likelihood, log(1 + exp(x)), computed without overflow."""

    type = "BNLL"

    def forward(self, bottom, top):
        xp = get_array_module(bottom[0].data)
        self.remember_input(bottom, top)
        x = bottom[0].data
        top[0].data[...] = xp.maximum(x, 0) + xp.log1p(xp.exp(-xp.abs(x)))

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        xp = get_array_module(top[0].diff)
        e = xp.exp(xp.minimum(self.input_data(bottom), BNLL_THRESHOLD))
        bottom[0].diff[...] = top[0].diff * e / (e + 1)


@register_layer
class ClipLayer(NeuronLayer):
    """y = max(min, min(x, max)); the gradient passes where min <= x <= max."""

    type = "Clip"

    def setup(self, bottom, top):
        p = self.param.clip_param
        self.check(p.HasField("min") and p.HasField("max"), "clip_param needs both min and max")
        self.low, self.high = p.min, p.max

    def forward(self, bottom, top):
        xp = get_array_module(bottom[0].data)
        self.remember_input(bottom, top)
        top[0].data[...] = xp.maximum(self.low, xp.minimum(bottom[0].data, self.high))

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            x = self.input_data(bottom)
            bottom[0].diff[...] = top[0].diff * ((x >= self.low) & (x <= self.high))


@register_layer
class SwishLayer(NeuronLayer):
    """y = x sigmoid(beta x); the gradient needs only y and the cached sigmoid."""

    type = "Swish"

    def setup(self, bottom, top):
        self.beta = self.param.swish_param.beta

    def forward(self, bottom, top):
        x = bottom[0].data
        self.sig = sigmoid(self.beta * x)
        top[0].data[...] = x * self.sig

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            by = self.beta * top[0].data
            bottom[0].diff[...] = top[0].diff * (by + self.sig * (1 - by))


@register_layer
class ThresholdLayer(NeuronLayer):
    """y = 1 where x > threshold, else 0. Caffe implements no backward for it."""

    type = "Threshold"

    def setup(self, bottom, top):
        self.threshold = self.param.threshold_param.threshold

    def forward(self, bottom, top):
        x = bottom[0].data
        top[0].data[...] = x > self.threshold

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            raise self.error("Backward is not implemented (Caffe's Threshold has no gradient)")

    def allow_force_backward(self, bottom_index):
        # Caffe aborts here under force_backward; leaving the bottom out lets such nets run.
        return False


@register_layer
class DropoutLayer(NeuronLayer):
    """TRAIN: keep each value with probability 1 - ratio, scaled by 1 / (1 - ratio); TEST: identity.

    Schemas that carry `scale_train: false` (some Caffe forks) move the scaling
    to TEST instead: TRAIN masks only, TEST multiplies by 1 - ratio.
    """

    type = "Dropout"

    def setup(self, bottom, top):
        p = self.param.dropout_param
        self.ratio = p.dropout_ratio
        self.check(0.0 <= self.ratio < 1.0, f"dropout_ratio must be in [0, 1), got {self.ratio}")
        fields = p.DESCRIPTOR.fields_by_name
        self.scale_train = bool(p.scale_train) if "scale_train" in fields else True
        self.scale = 1.0 / (1.0 - self.ratio)
        self.mask = None

    def _train(self):
        return self.phase == self._caffe_pb2.TRAIN

    def _test_factor(self):
        return 1.0 if self.scale_train else 1.0 - self.ratio

    def forward(self, bottom, top):
        x = bottom[0].data
        if not self._train():
            factor = self._test_factor()
            top[0].data[...] = x if factor == 1.0 else x * factor
            return
        xp = get_array_module(x)
        scale = self.scale if self.scale_train else 1.0
        if xp is not np:
            uniform = random_module(xp).random(x.shape, dtype=np.float32)
            self.mask = xp.empty(x.shape, dtype=bool)
            gpu_neuron.dropout_forward(x, uniform, self.ratio, scale, top[0].data, self.mask)
            return
        uniform = random_module(xp).random(x.shape)
        self.mask = xp.asarray(uniform >= self.ratio)  # keep probability 1 - ratio
        top[0].data[...] = x * self.mask * scale

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        dy = top[0].diff
        if not self._train():
            factor = self._test_factor()
            bottom[0].diff[...] = dy if factor == 1.0 else dy * factor
            return
        scale = self.scale if self.scale_train else 1.0
        if get_array_module(dy) is not np:
            gpu_neuron.dropout_backward(dy, self.mask, scale, bottom[0].diff)
            return
        bottom[0].diff[...] = dy * self.mask * scale
