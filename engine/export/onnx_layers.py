"""Converters for Caffe's common, shape and normalization layers.

Shape layers (Reshape, Flatten, Slice, Crop's sibling Concat, Tile) use the
net's static top shapes, so Caffe's axis conventions (negative axes,
num_axes, 0 and -1 in Reshape's shape) are already resolved.
"""

import math

import numpy as np

from .onnx_graph import converter


def _axis(axis, rank):
    return axis + rank if axis < 0 else axis


@converter("Split")
def split(ctx):
    return [ctx.identity(ctx.bottoms[0], i) for i in range(len(ctx.top_shapes))]


@converter("Silence")
def silence(ctx):
    return []


@converter("Parameter")
def parameter(ctx):
    return [ctx.identity(ctx.const(ctx.blobs[0], "value"))]


@converter("Reshape", "Flatten")
def reshape(ctx):
    return [ctx.reshape(ctx.bottoms[0], ctx.top_shapes[0], out=ctx.out(0))]


@converter("Concat")
def concat(ctx):
    if len(ctx.bottoms) == 1:
        return [ctx.identity(ctx.bottoms[0])]
    return [ctx.op("Concat", ctx.bottoms, out=ctx.out(0), axis=ctx.layer.axis)]


@converter("Slice")
def slice_(ctx):
    axis = ctx.layer.axis
    sizes = [shape[axis] for shape in ctx.top_shapes]
    if len(sizes) == 1:
        return [ctx.identity(ctx.bottoms[0])]
    outs = [ctx.out(i) for i in range(len(sizes))]
    ctx.graph.add("Split", [ctx.bottoms[0], ctx.ints(sizes, "split")], outs, f"{ctx.name}/Split", axis=axis)
    return outs


@converter("Tile")
def tile(ctx):
    repeats = [1] * len(ctx.bottom_shapes[0])
    repeats[ctx.layer.axis] = ctx.layer.tiles
    return [ctx.op("Tile", [ctx.bottoms[0], ctx.ints(repeats, "repeats")], out=ctx.out(0))]


@converter("Dropout")
def dropout(ctx):
    # TEST phase: the identity, or a scale by 1 - ratio when the fork's scale_train is off.
    factor = ctx.layer._test_factor()
    if factor == 1.0:
        return [ctx.identity(ctx.bottoms[0])]
    return [ctx.op("Mul", [ctx.bottoms[0], ctx.scalar(factor, "keep")], out=ctx.out(0))]


@converter("InnerProduct")
def inner_product(ctx):
    layer = ctx.layer
    rows = ctx.op("Flatten", [ctx.bottoms[0]], axis=layer.axis)
    inputs = [rows, ctx.const(ctx.blobs[0], "weight")]
    if layer.bias_term:
        inputs.append(ctx.const(ctx.blobs[1], "bias"))
    direct = len(ctx.top_shapes[0]) == 2
    # Caffe's weights are (num_output, K), or (K, num_output) with `transpose`.
    y = ctx.op("Gemm", inputs, out=ctx.out(0) if direct else None, transB=0 if layer.transpose else 1)
    return [y if direct else ctx.reshape(y, ctx.top_shapes[0], out=ctx.out(0))]


@converter("Softmax")
def softmax(ctx):
    return [ctx.op("Softmax", [ctx.bottoms[0]], out=ctx.out(0), axis=ctx.layer.axis)]


@converter("Eltwise")
def eltwise(ctx):
    layer = ctx.layer
    ops = ctx.param.eltwise_param
    if len(ctx.bottoms) == 1:
        x = ctx.bottoms[0]
        if layer.op == ops.SUM and layer.coeffs[0] != 1:
            return [ctx.op("Mul", [x, ctx.scalar(layer.coeffs[0], "coeff")], out=ctx.out(0))]
        return [ctx.identity(x)]
    if layer.op == ops.PROD:
        y = ctx.bottoms[0]
        for index, x in enumerate(ctx.bottoms[1:], 1):
            y = ctx.op("Mul", [y, x], out=ctx.out(0) if index == len(ctx.bottoms) - 1 else None)
        return [y]
    if layer.op == ops.MAX:
        return [ctx.op("Max", ctx.bottoms, out=ctx.out(0))]
    terms = [x if c == 1 else ctx.op("Mul", [x, ctx.scalar(c, "coeff")]) for x, c in zip(ctx.bottoms, layer.coeffs)]
    return [ctx.op("Sum", terms, out=ctx.out(0))]


def _operand_shape(bottom_shape, axis, operand_shape):
    """`operand_shape` placed at `axis` of a bottom, with trailing ones for NumPy-style broadcasting."""
    start = _axis(axis, len(bottom_shape))
    return tuple(operand_shape) + (1,) * (len(bottom_shape) - start - len(operand_shape))


def _broadcast(ctx, operand, operand_shape, axis, suffix):
    """A constant or bottom operand, shaped to broadcast against bottom 0 from `axis`."""
    shape = _operand_shape(ctx.bottom_shapes[0], axis, operand_shape)
    if isinstance(operand, np.ndarray):
        return ctx.const(operand.reshape(shape), suffix)
    return operand if tuple(shape) == tuple(operand_shape) else ctx.reshape(operand, shape)


@converter("Scale")
def scale(ctx):
    p = ctx.param.scale_param
    if len(ctx.bottoms) > 1:
        factor = _broadcast(ctx, ctx.bottoms[1], ctx.bottom_shapes[1], p.axis, "scale")
    else:
        factor = _broadcast(ctx, ctx.blobs[0], ctx.blobs[0].shape, p.axis, "scale")
    if ctx.layer.bias_index is None:
        return [ctx.op("Mul", [ctx.bottoms[0], factor], out=ctx.out(0))]
    bias = ctx.blobs[ctx.layer.bias_index]
    y = ctx.op("Mul", [ctx.bottoms[0], factor])
    return [ctx.op("Add", [y, _broadcast(ctx, bias, bias.shape, p.axis, "bias")], out=ctx.out(0))]


@converter("Bias")
def bias(ctx):
    p = ctx.param.bias_param
    if len(ctx.bottoms) > 1:
        term = _broadcast(ctx, ctx.bottoms[1], ctx.bottom_shapes[1], p.axis, "bias")
    else:
        term = _broadcast(ctx, ctx.blobs[0], ctx.blobs[0].shape, p.axis, "bias")
    return [ctx.op("Add", [ctx.bottoms[0], term], out=ctx.out(0))]


@converter("BatchNorm")
def batch_norm(ctx):
    layer = ctx.layer
    x, shape = ctx.bottoms[0], ctx.bottom_shapes[0]
    if not layer.use_global_stats:
        # Statistics of the batch itself (use_global_stats: false in TEST).
        axes = [0] + list(range(2, len(shape)))
        mean = ctx.reduce("ReduceMean", x, axes)
        centred = ctx.op("Sub", [x, mean])
        variance = ctx.reduce("ReduceMean", ctx.op("Mul", [centred, centred]), axes)
        std = ctx.op("Sqrt", [ctx.op("Add", [variance, ctx.scalar(layer.eps, "eps")])])
        return [ctx.op("Div", [centred, std], out=ctx.out(0))]
    # Caffe stores running sums and a scale factor: the statistics are blob / factor.
    factor = float(ctx.blobs[2].reshape(-1)[0]) if len(ctx.blobs) > 2 else 1.0
    factor = 0.0 if factor == 0 else 1.0 / factor
    mean = (ctx.blobs[0] * np.float32(factor)).reshape(-1)
    variance = (ctx.blobs[1] * np.float32(factor)).reshape(-1)
    channels = mean.size
    if len(shape) >= 2:
        return [ctx.op("BatchNormalization", [x, ctx.const(np.ones(channels), "gamma"),
                                              ctx.const(np.zeros(channels), "beta"), ctx.const(mean, "mean"),
                                              ctx.const(variance, "var")],
                       out=ctx.out(0), epsilon=float(layer.eps))]
    inv_std = 1.0 / np.sqrt(variance.astype(np.float32) + np.float32(layer.eps))
    centred = ctx.op("Sub", [x, ctx.const(mean, "mean")])
    return [ctx.op("Mul", [centred, ctx.const(inv_std, "inv_std")], out=ctx.out(0))]


@converter("MVN")
def mvn(ctx):
    layer = ctx.layer
    x = ctx.reshape(ctx.bottoms[0], (layer.rows, layer.dim))
    centred = ctx.op("Sub", [x, ctx.reduce("ReduceMean", x, [1])])
    if layer.normalize_variance:
        variance = ctx.reduce("ReduceMean", ctx.op("Mul", [centred, centred]), [1])
        std = ctx.op("Add", [ctx.op("Sqrt", [variance]), ctx.scalar(layer.eps, "eps")])
        centred = ctx.op("Div", [centred, std])
    return [ctx.reshape(centred, ctx.top_shapes[0], out=ctx.out(0))]


@converter("Reduction")
def reduction(ctx):
    layer = ctx.layer
    ops = ctx.param.reduction_param
    rows = ctx.reshape(ctx.bottoms[0], (layer.num, layer.dim))
    op_type = {ops.SUM: "ReduceSum", ops.ASUM: "ReduceL1", ops.SUMSQ: "ReduceSumSquare",
               ops.MEAN: "ReduceSum"}[layer.op]
    y = ctx.reduce(op_type, rows, [1], keepdims=0)
    if layer.coeff != 1:
        y = ctx.op("Mul", [y, ctx.scalar(layer.coeff, "coeff")])
    return [ctx.reshape(y, ctx.top_shapes[0], out=ctx.out(0))]


@converter("ArgMax")
def argmax(ctx):
    layer = ctx.layer
    x, shape, k = ctx.bottoms[0], ctx.bottom_shapes[0], layer.top_k
    if layer.has_axis:
        axis = layer.axis
    else:
        x, axis = ctx.reshape(x, (shape[0], math.prod(shape[1:]))), 1
    if k == 1:
        # Caffe sorts (value, index) pairs descending: among equal values the last index wins.
        index = ctx.op("ArgMax", [x], axis=axis, keepdims=1, select_last_index=1)
        values = ctx.op("ReduceMax", [x, ctx.ints([axis], "axes")], keepdims=1) if ctx.opset >= 18 \
            else ctx.op("ReduceMax", [x], axes=[axis], keepdims=1)
    else:
        values, index = ctx.op("TopK", [x, ctx.ints([k], "k")], outputs=2, axis=axis, largest=1, sorted=1)
    index = ctx.op("Cast", [index], to=1)
    if layer.has_axis:
        return [ctx.op("Identity", [values if layer.out_max_val else index], out=ctx.out(0))]
    parts = [ctx.reshape(index, (shape[0], 1, k))]
    if layer.out_max_val:
        parts.append(ctx.reshape(values, (shape[0], 1, k)))
    y = ctx.op("Concat", parts, axis=1) if len(parts) > 1 else parts[0]
    return [ctx.reshape(y, ctx.top_shapes[0], out=ctx.out(0))]


@converter("Embed")
def embed(ctx):
    layer = ctx.layer
    index = ctx.op("Cast", [ctx.bottoms[0]], to=7)
    direct = not layer.bias_term
    y = ctx.op("Gather", [ctx.const(ctx.blobs[0], "weight"), index], out=ctx.out(0) if direct else None, axis=0)
    if direct:
        return [y]
    return [ctx.op("Add", [y, ctx.const(ctx.blobs[1], "bias")], out=ctx.out(0))]


@converter("BatchReindex")
def batch_reindex(ctx):
    index = ctx.op("Cast", [ctx.bottoms[1]], to=7)
    return [ctx.op("Gather", [ctx.bottoms[0], index], out=ctx.out(0), axis=0)]
