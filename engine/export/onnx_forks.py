"""Converters for layers of Caffe's forks, under the forks' type names.

MobileNet's depthwise convolutions are grouped convolutions (onnx_vision);
SegNet's Upsample scatters into a zeroed top through the indices of the
Pooling mask top (onnx_vision.pool); SSD's PriorBox depends only on shapes
and becomes a constant. Layers with no ONNX counterpart (DetectionOutput's
NMS rules, PSROIPooling, the margin layers' label-dependent scores) have no
converter: onnx_export.REFUSALS says why, in an error naming the layer.
"""

import math

import numpy as np

from ..backend import to_host
from .onnx_graph import converter
from .onnx_vision import convolution

converter("ConvolutionDepthwise", "DepthwiseConvolution")(convolution)


@converter("ReLU6")
def relu6(ctx):
    x, slope = ctx.bottoms[0], ctx.layer.slope
    if slope == 0:
        return [ctx.op("Clip", [x, ctx.scalar(0.0, "min"), ctx.scalar(6.0, "max")], out=ctx.out(0))]
    leaky = ctx.op("LeakyRelu", [x], alpha=float(slope))
    return [ctx.op("Min", [leaky, ctx.scalar(6.0, "max")], out=ctx.out(0))]


@converter("ShuffleChannel")
def shuffle_channel(ctx):
    shape, group = ctx.bottom_shapes[0], ctx.layer.group
    grid = ctx.reshape(ctx.bottoms[0], (shape[0], group, shape[1] // group, math.prod(shape[2:])))
    swapped = ctx.op("Transpose", [grid], perm=[0, 2, 1, 3])
    return [ctx.reshape(swapped, ctx.top_shapes[0], out=ctx.out(0))]


@converter("Axpy")
def axpy(ctx):
    a, x, y = ctx.bottoms
    shape = ctx.bottom_shapes[1]
    scale = ctx.reshape(a, shape[:2] + (1,) * (len(shape) - 2))
    return [ctx.op("Add", [ctx.op("Mul", [scale, x]), y], out=ctx.out(0))]


@converter("Permute")
def permute(ctx):
    return [ctx.op("Transpose", [ctx.bottoms[0]], out=ctx.out(0), perm=list(ctx.layer.order))]


@converter("Normalize")
def normalize(ctx):
    p = ctx.param.norm_param
    shape = ctx.bottom_shapes[0]
    x = ctx.reshape(ctx.bottoms[0], (shape[0], shape[1], -1))
    squares = ctx.reduce("ReduceSum", ctx.op("Mul", [x, x]), [1, 2] if p.across_spatial else [1])
    norm = ctx.op("Sqrt", [ctx.op("Add", [squares, ctx.scalar(p.eps, "eps")])])
    scale = ctx.blobs[0].reshape(() if p.channel_shared else (1, -1, 1))
    y = ctx.op("Mul", [ctx.op("Div", [x, norm]), ctx.const(scale, "scale")])
    return [ctx.reshape(y, ctx.top_shapes[0], out=ctx.out(0))]


@converter("PriorBox")
def prior_box(ctx):
    # The boxes depend on the bottoms' shapes only: run the layer once and keep its output.
    ctx.layer.forward(ctx.bottom_blobs, ctx.top_blobs)
    return [ctx.identity(ctx.const(to_host(ctx.top_blobs[0].data), "priors"))]


@converter("BN")
def bn(ctx):
    layer = ctx.layer
    x = ctx.bottoms[0]
    rank = len(ctx.bottom_shapes[0])
    channel = (1, -1) + (1,) * (rank - 2)
    if len(ctx.top_shapes) > 1:
        raise ctx.error("the batch statistics tops of SegNet's BN (LEARN) have no use in a deploy net")
    scale, shift = (ctx.const(blob.reshape(channel), name) for blob, name in zip(ctx.blobs[:2], ("scale", "shift")))
    if hasattr(layer, "learn") and not layer.learn:
        # SegNet's INFERENCE: scale * x + shift.
        return [ctx.op("Add", [ctx.op("Mul", [x, scale]), shift], out=ctx.out(0))]
    axes = [0] + list(range(2, rank))
    if hasattr(layer, "learn"):
        # SegNet's LEARN: the batch's statistics, the variance as E(x^2) - E(x)^2, eps 1e-9.
        from ..layers.segnet import VAR_EPS

        mean = ctx.reduce("ReduceMean", x, axes)
        variance = ctx.op("Sub", [ctx.reduce("ReduceMean", ctx.op("Mul", [x, x]), axes), ctx.op("Mul", [mean, mean])])
        inv_std = ctx.op("Reciprocal", [ctx.op("Sqrt", [ctx.op("Add", [variance, ctx.scalar(VAR_EPS, "eps")])])])
    elif layer.global_stats:
        # PSPNet's running statistics: slope * (x - mean) / sqrt(var + eps) + bias.
        mean = ctx.const(ctx.blobs[2].reshape(channel), "mean")
        inv = (ctx.blobs[3].astype(np.float32) + np.float32(layer.eps)) ** np.float32(-0.5)
        inv_std = ctx.const(inv.reshape(channel), "inv_std")
    else:
        mean = ctx.reduce("ReduceMean", x, axes)
        centred = ctx.op("Sub", [x, mean])
        variance = ctx.reduce("ReduceMean", ctx.op("Mul", [centred, centred]), axes)
        inv_std = ctx.op("Pow", [ctx.op("Add", [variance, ctx.scalar(layer.eps, "eps")]), ctx.scalar(-0.5, "power")])
    normed = ctx.op("Mul", [ctx.op("Sub", [x, mean]), inv_std])
    return [ctx.op("Add", [ctx.op("Mul", [normed, scale]), shift], out=ctx.out(0))]


@converter("Interp")
def interp(ctx):
    layer = ctx.layer
    x, shape = ctx.bottoms[0], ctx.bottom_shapes[0]
    if layer.pad_beg or layer.pad_end:
        begin = -layer.pad_beg
        x = ctx.op("Slice", [x, ctx.ints([begin, begin], "starts"),
                             ctx.ints([begin + layer.crop[0], begin + layer.crop[1]], "ends"),
                             ctx.ints([2, 3], "axes")])
    # The fork's caffe_cpu_interp2: aligned corners, bilinear.
    return [ctx.op("Resize", [x, "", "", ctx.ints(ctx.top_shapes[0], "sizes")], out=ctx.out(0),
                   mode="linear", coordinate_transformation_mode="align_corners")]


@converter("Upsample")
def upsample(ctx):
    x, mask = ctx.bottoms
    top = ctx.top_shapes[0]
    num, channels = top[:2]
    plane = top[2] * top[3]
    # Flat top index of every input: its plane's offset plus the mask's h * W + w.
    offsets = (np.arange(num * channels, dtype=np.int64) * plane).reshape(num, channels, 1, 1)
    index = ctx.op("Add", [ctx.op("Cast", [mask], to=7), ctx.const(offsets, "plane_offsets", dtype=np.int64)])
    zeros = ctx.op("ConstantOfShape", [ctx.ints([math.prod(top)], "size")])
    flat = ctx.op("ScatterElements", [zeros, ctx.reshape(index, (-1,)), ctx.reshape(x, (-1,))], axis=0)
    return [ctx.reshape(flat, top, out=ctx.out(0))]


@converter("ROIPooling")
def roi_pooling(ctx):
    p = ctx.param.roi_pooling_param
    return [ctx.op("MaxRoiPool", ctx.bottoms[:2], out=ctx.out(0), pooled_shape=[p.pooled_h, p.pooled_w],
                   spatial_scale=float(p.spatial_scale))]


@converter("UnPooling")
def unpooling(ctx):
    """ParseNet's UnPooling: separable per axis, so the top is A x B^T per plane, with the
    layer's own window tables (FIXED: 0/1 matrices of the surviving source per target;
    REP and DIV: the window matrices, then the division by the covering counts)."""
    layer = ctx.layer
    tables = layer._axis_tables(np, np.float32)
    fixed = layer.method == ctx.param.unpooling_param.FIXED
    matrices = []
    for (first, second), size, out in zip(tables, layer.in_size, layer.out):
        if fixed:
            matrix = np.zeros((out, size), np.float32)
            matrix[np.asarray(first), np.asarray(second)] = 1
            matrices.append(matrix)
        else:
            matrices.append(np.asarray(first, np.float32))
    rows = ctx.op("MatMul", [ctx.const(matrices[0], "rows"), ctx.bottoms[0]])
    spread = ctx.op("MatMul", [rows, ctx.const(matrices[1].T, "columns")], out=ctx.out(0) if fixed else None)
    if fixed:
        return [spread]
    counts = np.multiply.outer(np.asarray(tables[0][1], np.float32), np.asarray(tables[1][1], np.float32))
    return [ctx.op("Div", [spread, ctx.const(counts, "counts")], out=ctx.out(0))]


@converter("ParseOutput")
def parse_output(ctx):
    # The first channel of highest score, as ArgMax's default among equal values.
    label = ctx.op("ArgMax", [ctx.bottoms[0]], axis=1, keepdims=1, select_last_index=0)
    outs = [ctx.op("Cast", [label], out=ctx.out(0), to=1)]
    if len(ctx.top_shapes) > 1:
        outs.append(ctx.reduce("ReduceMax", ctx.bottoms[0], [1], out=ctx.out(1)))
    return outs
