"""Neuron layers of the form f(shift + scale * x): Power, Exp and Log.

Caffe precomputes the constants its CPU code uses (Power's diff_scale,
Exp's inner and outer scales, Log's base scale) and special-cases the values
that make a term vanish; so do these. Overflow and logs of non-positive
values give inf / NaN silently, as in Caffe. Power and Log read the input in
backward, so in place they keep a copy of it.
"""

import math

import numpy as np

from ..backend import get_array_module
from .base import register_layer
from .neuron import NeuronLayer, quiet


def _log_base(layer, base):
    """log(base), with Caffe's -1 meaning e, and Caffe's checks."""
    if base == -1:
        return 1.0
    layer.check(base > 0, f"base must be strictly positive, got {base}")
    return math.log(base)


@register_layer
class PowerLayer(NeuronLayer):
    """y = (shift + scale * x) ^ power."""

    type = "Power"

    def setup(self, bottom, top):
        p = self.param.power_param
        self.power, self.scale, self.shift = p.power, p.scale, p.shift
        self.diff_scale = self.power * self.scale

    def _base(self, x):
        base = x * self.scale if self.scale != 1 else x
        return base + self.shift if self.shift != 0 else base

    def forward(self, bottom, top):
        xp = get_array_module(bottom[0].data)
        self.remember_input(bottom, top)
        if self.diff_scale == 0:
            # The output does not depend on x: 1 for power 0, shift ^ power for scale 0.
            with quiet(np):
                value = 1.0 if self.power == 0 else float(np.power(self.shift, self.power))
            top[0].data[...] = value
            return
        base = self._base(bottom[0].data)
        with quiet(xp):
            top[0].data[...] = base if self.power == 1 else xp.power(base, self.power)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        xp = get_array_module(top[0].diff)
        dy = top[0].diff
        if self.diff_scale == 0 or self.power == 1:
            bottom[0].diff[...] = dy * self.diff_scale
            return
        base = self._base(self.input_data(bottom))
        if self.power == 2:
            grad = self.diff_scale * base
        else:
            # Caffe divides y by the base here; the power form is the same away
            # from base = 0 and stays finite where that quotient is 0 / 0.
            with quiet(xp):
                grad = self.diff_scale * xp.power(base, self.power - 1)
        bottom[0].diff[...] = dy * grad


@register_layer
class ExpLayer(NeuronLayer):
    """y = base ^ (shift + scale * x) = outer * exp(inner * x); the gradient is inner * y."""

    type = "Exp"

    def setup(self, bottom, top):
        p = self.param.exp_param
        log_base = _log_base(self, p.base)
        self.inner = log_base * p.scale
        if p.shift == 0:
            self.outer = 1.0
        else:
            self.outer = math.exp(p.shift) if p.base == -1 else p.base ** p.shift

    def forward(self, bottom, top):
        xp = get_array_module(bottom[0].data)
        x = bottom[0].data
        with quiet(xp):
            y = xp.exp(x if self.inner == 1 else x * self.inner)
            top[0].data[...] = y if self.outer == 1 else y * self.outer

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            grad = top[0].diff * top[0].data
            bottom[0].diff[...] = grad if self.inner == 1 else grad * self.inner


@register_layer
class LogLayer(NeuronLayer):
    """y = log_base(shift + scale * x); base -1 is e."""

    type = "Log"

    def setup(self, bottom, top):
        p = self.param.log_param
        log_base = _log_base(self, p.base)
        self.check(log_base != 0, f"Inf result: 1/log(base) = 1/log({p.base}) = inf")
        self.base_scale = 1.0 / log_base
        self.scale, self.shift = p.scale, p.shift
        self.backward_scale = self.scale / log_base

    def _inner(self, x):
        inner = x * self.scale if self.scale != 1 else x
        return inner + self.shift if self.shift != 0 else inner

    def forward(self, bottom, top):
        xp = get_array_module(bottom[0].data)
        self.remember_input(bottom, top)
        with quiet(xp):
            y = xp.log(self._inner(bottom[0].data))
            top[0].data[...] = y if self.base_scale == 1 else y * self.base_scale

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        xp = get_array_module(top[0].diff)
        with quiet(xp):
            bottom[0].diff[...] = top[0].diff * self.backward_scale / self._inner(self.input_data(bottom))
