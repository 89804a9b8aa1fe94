"""The ONNX graph under construction and the table of per-type converters.

A converter is one function per Caffe layer type, registered with
`@converter("Type", ...)`. It receives a `LayerContext` (the built layer, its
bottoms' tensor names and shapes, its tops' shapes, its parameter blobs as
NumPy arrays) and emits ONNX nodes through `ctx.op(...)`, returning one
tensor name per top. Shapes are the net's own static shapes, so shape
arithmetic (pooling's end padding, crop windows, reshape targets) is done
here in Python, exactly as the engine did it when it built the net.
"""

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from ..backend import to_host
from ..errors import NetError

CONVERTERS = {}
FLT_MAX = float(np.finfo(np.float32).max)


class ExportError(NetError):
    """A net or layer that has no ONNX form; the message names the layer."""


def converter(*types):
    """Register the decorated function as the converter of the given Caffe layer types."""
    def register(function):
        for name in types:
            CONVERTERS[name] = function
        return function
    return register


class Graph:
    """Nodes, initializers and names of the ONNX graph being built."""

    def __init__(self, opset):
        self.opset = opset
        self.nodes = []
        self.initializers = []
        self.used = set()
        self._counter = 0

    def fresh(self, hint):
        """A tensor name not used yet, derived from `hint`."""
        name = hint
        while name in self.used:
            self._counter += 1
            name = f"{hint}_{self._counter}"
        self.used.add(name)
        return name

    def const(self, array, hint, dtype=np.float32):
        """An initializer holding `array` (float32 unless told), by name."""
        name = self.fresh(hint)
        self.initializers.append(numpy_helper.from_array(np.asarray(array, dtype=dtype), name))
        return name

    def ints(self, values, hint):
        return self.const(np.asarray(values, dtype=np.int64), hint, dtype=np.int64)

    def add(self, op_type, inputs, outputs, name, **attrs):
        attrs = {k: v for k, v in attrs.items() if v is not None}
        self.nodes.append(helper.make_node(op_type, list(inputs), list(outputs), name=self.node_name(name),
                                           **attrs))

    def node_name(self, hint):
        name = f"node:{hint}"
        return self.fresh(name)


class LayerContext:
    """What a converter sees of one layer, and where it writes."""

    def __init__(self, graph, layer, bottoms, bottom_shapes, top_shapes, top_names, bottom_blobs=(),
                 top_blobs=()):
        self.graph = graph
        self.layer = layer
        self.param = layer.param
        self.name = layer.name
        self.type = layer.type
        self.bottoms = bottoms
        self.bottom_shapes = [tuple(s) for s in bottom_shapes]
        self.top_shapes = [tuple(s) for s in top_shapes]
        self._top_names = top_names
        self.blobs = [to_host(blob.data).astype(np.float32, copy=False) for blob in layer.blobs]
        # The engine's Blobs, for layers whose output depends on shapes only (computed once, here).
        self.bottom_blobs, self.top_blobs = list(bottom_blobs), list(top_blobs)

    @property
    def opset(self):
        return self.graph.opset

    def out(self, index=0):
        """The tensor name that top `index` must end up in."""
        return self._top_names[index]

    def error(self, message):
        return ExportError(f"layer '{self.name}' ({self.type}): {message}")

    def tmp(self, suffix):
        return self.graph.fresh(f"{self.name}/{suffix}")

    def const(self, array, suffix, dtype=np.float32):
        return self.graph.const(array, f"{self.name}/{suffix}", dtype)

    def ints(self, values, suffix):
        return self.graph.ints(values, f"{self.name}/{suffix}")

    def scalar(self, value, suffix="c"):
        return self.const(np.float32(value), suffix)

    def op(self, op_type, inputs, out=None, outputs=1, **attrs):
        """Emit one node; returns its output name (or names when `outputs` > 1).

        `out` fixes the (single) output's name, e.g. `ctx.out(0)` for a top.
        """
        if out is not None:
            names = [out]
        else:
            names = [self.tmp(op_type.lower()) for _ in range(outputs)]
        self.graph.add(op_type, inputs, names, f"{self.name}/{op_type}", **attrs)
        return names[0] if len(names) == 1 else names

    def reshape(self, x, shape, out=None):
        return self.op("Reshape", [x, self.ints(list(shape), "shape")], out=out)

    def reduce(self, op_type, x, axes, keepdims=1, out=None):
        """Reduce* over `axes`, as an input (opset 18+, ReduceSum 13+) or an attribute before."""
        if op_type == "ReduceSum" or self.opset >= 18:
            return self.op(op_type, [x, self.ints(list(axes), "axes")], out=out, keepdims=keepdims)
        return self.op(op_type, [x], out=out, axes=list(axes), keepdims=keepdims)

    def identity(self, x, index=0):
        return self.op("Identity", [x], out=self.out(index))


def float_input(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape))
