"""Converters for the vision layers: convolutions, Im2col, pooling, SPP, LRN, Crop.

Pooling is where Caffe and ONNX differ most. Caffe's output size ceils and
drops a last window that would start in the end padding; ONNX pools with
explicit begin/end pads and floors, so the end pad is chosen to give
Caffe's size exactly. AVE divides by the window clipped to the padded input
[-pad, size + pad), padding counted: that is a plain zero-padded average
followed by a constant correction map (kernel area / Caffe's divisor) where
the two differ. MAX ignores padding in both.
"""

import math

import numpy as np

from ..geometry import pool_window_sizes
from .onnx_graph import FLT_MAX, converter

MAX, AVE = 0, 1


def _batched(ctx, x, shape, channel_axis):
    """View a bottom with channel axis `channel_axis` as (batch, channels, *spatial)."""
    if channel_axis == 1:
        return x
    batched = (math.prod(shape[:channel_axis]),) + tuple(shape[channel_axis:])
    return ctx.reshape(x, batched)


@converter("Convolution", "Deconvolution")
def convolution(ctx):
    layer = ctx.layer
    # The forks' depthwise types are Convolutions too (registered in onnx_forks).
    op_type = "ConvTranspose" if ctx.type == "Deconvolution" else "Conv"
    inputs = [ctx.const(ctx.blobs[0], "weight")]
    if layer.bias_term:
        inputs.append(ctx.const(ctx.blobs[1], "bias"))
    outs = []
    for index, (x, shape) in enumerate(zip(ctx.bottoms, ctx.bottom_shapes)):
        direct = layer.channel_axis == 1
        y = ctx.op(op_type, [_batched(ctx, x, shape, layer.channel_axis)] + inputs,
                   out=ctx.out(index) if direct else None,
                   kernel_shape=list(layer.kernel), strides=list(layer.stride),
                   pads=list(layer.pad) * 2, dilations=list(layer.dilation), group=layer.group)
        outs.append(y if direct else ctx.reshape(y, ctx.top_shapes[index], out=ctx.out(index)))
    return outs


@converter("Im2col")
def im2col(ctx):
    """Caffe's column buffer as a grouped Conv whose filters pick one kernel offset each: output
    channel c * K + k (K = prod(kernel), k row-major) holds channel c at offset k, Caffe's order."""
    layer = ctx.layer
    shape = ctx.bottom_shapes[0]
    channels, offsets = shape[layer.channel_axis], math.prod(layer.kernel)
    picks = np.zeros((channels * offsets, 1) + tuple(layer.kernel), np.float32)
    flat = picks.reshape(channels, offsets, offsets)
    flat[:, np.arange(offsets), np.arange(offsets)] = 1
    direct = layer.channel_axis == 1
    y = ctx.op("Conv", [_batched(ctx, ctx.bottoms[0], shape, layer.channel_axis), ctx.const(picks, "picks")],
               out=ctx.out(0) if direct else None, kernel_shape=list(layer.kernel), strides=list(layer.stride),
               pads=list(layer.pad) * 2, dilations=list(layer.dilation), group=channels)
    return [y if direct else ctx.reshape(y, ctx.top_shapes[0], out=ctx.out(0))]


def _end_pad(size, kernel, stride, pad, out):
    """End padding that makes ONNX's floor rule give Caffe's `out` windows (never negative)."""
    return max((out - 1) * stride + kernel - size - pad, 0)


def pool(ctx, x, shape, pooling, out=None, mask=None):
    """Caffe's Pooling (`pooling`: the engine's built PoolingLayer) of `x`, of 4-D `shape`.

    `mask` names a tensor for MAX's second top: each maximum's index h * W + w
    in its input plane, as a float (ONNX's indices run over the whole tensor).
    """
    spatial = shape[2:]
    if pooling.method not in (MAX, AVE):
        raise ctx.error("STOCHASTIC pooling has no ONNX equivalent")
    if pooling.global_pooling and mask is None:
        return ctx.op("GlobalMaxPool" if pooling.method == MAX else "GlobalAveragePool", [x], out=out)
    kernel, stride, begin = list(pooling.kernel), list(pooling.stride), list(pooling.pad)
    out_shape = list(pooling.out_shape)
    end = [_end_pad(s, k, st, p, o) for s, k, st, p, o in zip(spatial, kernel, stride, begin, out_shape)]
    for s, k, st, b, e, o in zip(spatial, kernel, stride, begin, end, out_shape):
        if (s + b + e - k) // st + 1 != o:
            raise ctx.error(f"no ONNX padding gives Caffe's output size {o} (size {s}, kernel {k}, "
                            f"stride {st}, pad {b})")
    attrs = dict(kernel_shape=kernel, strides=stride)
    if mask is not None:
        if any(b >= k or e >= k for b, e, k in zip(begin, end, kernel)):
            raise ctx.error("the argmax mask top of a pooling whose windows lie wholly in the padding "
                            "has no ONNX equivalent")
        y, index = ctx.op("MaxPool", [x], outputs=2, pads=begin + end, **attrs)
        plane = ctx.ints([spatial[0] * spatial[1]], "plane")
        ctx.op("Cast", [ctx.op("Mod", [index, plane])], out=mask, to=1)
        return ctx.op("Identity", [y], out=out)
    if pooling.method == MAX:
        if any(begin + end) and all(b < k and e < k for b, e, k in zip(begin, end, kernel)):
            return ctx.op("MaxPool", [x], out=out, pads=begin + end, **attrs)
        if any(begin + end):
            # A window lying wholly in the padding: Caffe's maximum starts at -FLT_MAX.
            x = ctx.op("Pad", [x, ctx.ints([0, 0] + begin + [0, 0] + end, "pads"), ctx.scalar(-FLT_MAX)])
        return ctx.op("MaxPool", [x], out=out, **attrs)
    if any(begin + end):
        x = ctx.op("Pad", [x, ctx.ints([0, 0] + begin + [0, 0] + end, "pads"), ctx.scalar(0.0)])
    sizes = [pool_window_sizes(s, k, p, st, o) for s, k, p, st, o in zip(spatial, kernel, begin, stride, out_shape)]
    divisor = np.multiply.outer(np.asarray(sizes[0], np.float64), np.asarray(sizes[1], np.float64))
    area = kernel[0] * kernel[1]
    if np.all(divisor == area):
        return ctx.op("AveragePool", [x], out=out, **attrs)
    y = ctx.op("AveragePool", [x], **attrs)
    correction = np.where(divisor > 0, area / np.where(divisor > 0, divisor, 1), 0.0)
    return ctx.op("Mul", [y, ctx.const(correction.reshape(1, 1, *correction.shape), "ave_divisor")], out=out)


@converter("Pooling")
def pooling(ctx):
    mask = ctx.out(1) if len(ctx.top_shapes) > 1 else None
    return [pool(ctx, ctx.bottoms[0], ctx.bottom_shapes[0], ctx.layer, out=ctx.out(0), mask=mask)] + \
        ([mask] if mask else [])


@converter("SPP")
def spp(ctx):
    num = ctx.bottom_shapes[0][0]
    parts = []
    for level, (layer, pooled) in enumerate(ctx.layer.levels):
        y = pool(ctx, ctx.bottoms[0], ctx.bottom_shapes[0], layer)
        parts.append(ctx.reshape(y, (num, -1)) if len(ctx.layer.levels) > 1 else y)
    if len(parts) == 1:
        return parts
    return [ctx.op("Concat", parts, out=ctx.out(0), axis=1)]


@converter("LRN")
def lrn(ctx):
    p = ctx.param.lrn_param
    x = ctx.bottoms[0]
    if p.norm_region == p.ACROSS_CHANNELS:
        return [ctx.op("LRN", [x], out=ctx.out(0), size=p.local_size, alpha=p.alpha, beta=p.beta, bias=p.k)]
    # WITHIN_CHANNEL, as Caffe composes it: x * (1 + alpha * box_average(x^2))^-beta, the n x n box
    # average over the zero-padded plane (its divisor is n^2 everywhere), k unused.
    n, half = p.local_size, (p.local_size - 1) // 2
    squares = ctx.op("Mul", [x, x])
    padded = ctx.op("Pad", [squares, ctx.ints([0, 0, half, half, 0, 0, half, half], "pads"), ctx.scalar(0.0)])
    box = ctx.op("AveragePool", [padded], kernel_shape=[n, n], strides=[1, 1])
    base = ctx.op("Add", [ctx.op("Mul", [box, ctx.scalar(p.alpha, "alpha")]), ctx.scalar(1.0, "one")])
    scale = ctx.op("Pow", [base, ctx.scalar(-p.beta, "power")])
    return [ctx.op("Mul", [x, scale], out=ctx.out(0))]


@converter("Crop")
def crop(ctx):
    window = ctx.layer.window
    axes = [i for i, s in enumerate(window) if (s.start, s.stop) != (0, ctx.bottom_shapes[0][i])]
    if not axes:
        return [ctx.identity(ctx.bottoms[0])]
    return [ctx.op("Slice", [ctx.bottoms[0], ctx.ints([window[a].start for a in axes], "starts"),
                             ctx.ints([window[a].stop for a in axes], "ends"), ctx.ints(axes, "axes")],
                   out=ctx.out(0))]
