"""Converters for the elementwise neuron layers (ReLU, PReLU, ELU, Power, Exp, Log, ...)."""


import numpy as np

from .onnx_graph import converter


def _unary(op_type, **attrs):
    def convert(ctx):
        return [ctx.op(op_type, [ctx.bottoms[0]], out=ctx.out(0), **attrs)]
    return convert


converter("Sigmoid")(_unary("Sigmoid"))
converter("TanH")(_unary("Tanh"))
converter("AbsVal")(_unary("Abs"))
# Caffe's BNLL is log(1 + exp(x)), computed without overflow: ONNX's Softplus.
converter("BNLL")(_unary("Softplus"))


@converter("ReLU")
def relu(ctx):
    slope = ctx.layer.slope
    if slope == 0:
        return [ctx.op("Relu", [ctx.bottoms[0]], out=ctx.out(0))]
    return [ctx.op("LeakyRelu", [ctx.bottoms[0]], out=ctx.out(0), alpha=float(slope))]


@converter("PReLU")
def prelu(ctx):
    slope = ctx.blobs[0]
    rank = len(ctx.bottom_shapes[0])
    shape = () if ctx.layer.channel_shared else (slope.size,) + (1,) * (rank - 2)
    return [ctx.op("PRelu", [ctx.bottoms[0], ctx.const(slope.reshape(shape), "slope")], out=ctx.out(0))]


@converter("ELU")
def elu(ctx):
    return [ctx.op("Elu", [ctx.bottoms[0]], out=ctx.out(0), alpha=float(ctx.layer.alpha))]


@converter("Clip")
def clip(ctx):
    return [ctx.op("Clip", [ctx.bottoms[0], ctx.scalar(ctx.layer.low, "min"), ctx.scalar(ctx.layer.high, "max")],
                   out=ctx.out(0))]


@converter("Swish")
def swish(ctx):
    x, beta = ctx.bottoms[0], ctx.layer.beta
    scaled = x if beta == 1 else ctx.op("Mul", [x, ctx.scalar(beta, "beta")])
    return [ctx.op("Mul", [x, ctx.op("Sigmoid", [scaled])], out=ctx.out(0))]


@converter("Threshold")
def threshold(ctx):
    above = ctx.op("Greater", [ctx.bottoms[0], ctx.scalar(ctx.layer.threshold, "threshold")])
    return [ctx.op("Cast", [above], out=ctx.out(0), to=1)]


def _affine(ctx, x, scale, shift):
    """shift + scale * x, leaving out the terms that vanish (as Caffe does)."""
    if scale != 1:
        x = ctx.op("Mul", [x, ctx.scalar(scale, "scale")])
    if shift != 0:
        x = ctx.op("Add", [x, ctx.scalar(shift, "shift")])
    return x


@converter("Power")
def power(ctx):
    layer = ctx.layer
    if layer.diff_scale == 0:
        # The output does not depend on x: 1 for power 0, shift ^ power for scale 0.
        with np.errstate(all="ignore"):
            value = 1.0 if layer.power == 0 else float(np.power(np.float32(layer.shift), np.float32(layer.power)))
        return [ctx.op("Expand", [ctx.scalar(value, "value"), ctx.ints(ctx.top_shapes[0], "shape")],
                       out=ctx.out(0))]
    base = _affine(ctx, ctx.bottoms[0], layer.scale, layer.shift)
    if layer.power == 1:
        return [ctx.identity(base)]
    return [ctx.op("Pow", [base, ctx.scalar(layer.power, "power")], out=ctx.out(0))]


@converter("Exp")
def exp(ctx):
    layer = ctx.layer
    inner = _affine(ctx, ctx.bottoms[0], layer.inner, 0)
    if layer.outer == 1:
        return [ctx.op("Exp", [inner], out=ctx.out(0))]
    return [ctx.op("Mul", [ctx.op("Exp", [inner]), ctx.scalar(layer.outer, "outer")], out=ctx.out(0))]


@converter("Log")
def log(ctx):
    layer = ctx.layer
    y = ctx.op("Log", [_affine(ctx, ctx.bottoms[0], layer.scale, layer.shift)])
    if layer.base_scale == 1:
        return [y]
    return [ctx.op("Mul", [y, ctx.scalar(layer.base_scale, "base_scale")], out=ctx.out(0))]


