"""Export a deploy net and its weights to an ONNX model (`tools/export_onnx`).

The net is built here in TEST phase with its own input shapes (Input layers
or the input header), so every blob shape is known; each layer then goes
through its type's converter (engine/export/onnx_*.py), which writes ONNX
nodes with Caffe's exact arithmetic. Shapes in the model are static, as the
net's are. A layer with no ONNX form is a one-line error naming it.
"""

import argparse
import sys

import numpy as np

from .. import caffe_pb2, formats, netgraph
from ..errors import CaffeError
from .onnx_graph import CONVERTERS, ExportError, Graph, LayerContext, float_input
from . import onnx_forks, onnx_layers, onnx_neurons, onnx_vision  # noqa: F401  (register converters)

# ONNX Runtime 1.20 and later implement every operator of this opset.
DEFAULT_OPSET = 21
MIN_OPSET = 17
# Layers that read files or generate batches: a deploy net has Input layers instead.
DATA_TYPES = {"Data", "ImageData", "HDF5Data", "MemoryData", "WindowData", "DummyData", "AnnotatedData",
              "DenseImageData", "VideoData", "HDF5Output"}


def supported_types():
    """Caffe layer types with a converter."""
    return sorted(CONVERTERS)


def _where(source, layer_name):
    if not source:
        return ""
    line = formats.locate_layer(source, layer_name)
    return f"{source}:{line}: " if line else f"{source}: "


def check_deploy(param, source=None):
    """Refuse data layers (and other input-less layers ONNX cannot feed) before building."""
    state = caffe_pb2.NetState(phase=caffe_pb2.TEST)
    for layer in netgraph.filter_net(param, state).layer:
        if layer.type in DATA_TYPES or (layer.type == "Python" and not len(layer.bottom)):
            raise ExportError(f"{_where(source, layer.name)}layer '{layer.name}' ({layer.type}): a data layer "
                              "has no ONNX form; export a deploy net whose inputs are Input layers or an "
                              "input header")


def _last_writers(net):
    last = {}
    for index, tops in enumerate(net.top_names.values()):
        for name in tops:
            last[name] = index
    return last


def export_net(net, opset=DEFAULT_OPSET, source=None, outputs=None):
    """The ONNX ModelProto computing `net`'s outputs from its Input blobs, with its weights.

    `outputs` names the blobs the model returns (default: the net's outputs);
    each is the blob's final value, after any in-place layers.
    """
    import onnx
    from onnx import helper

    source = source if source is not None else getattr(net, "source", None)
    if source and source.startswith("<"):
        source = None
    if not MIN_OPSET <= opset <= onnx.defs.onnx_opset_version():
        raise ExportError(f"opset {opset} is not supported: choose {MIN_OPSET} to "
                          f"{onnx.defs.onnx_opset_version()}")
    graph = Graph(opset)
    tensors, inputs = {}, []
    last = _last_writers(net)
    blobs = net.blobs
    graph.used.update(blobs)  # a blob's name is kept for its final value
    for index, (layer, bottom_names, top_names) in enumerate(
            zip(net.layers, net.bottom_names.values(), net.top_names.values())):
        if layer.type == "Input":
            for name in top_names:
                tensors[name] = name
                inputs.append(float_input(tensors[name], blobs[name].shape))
            continue
        outs = [name if last[name] == index and name not in tensors else graph.fresh(f"{name}/{layer.name}")
                for name in top_names]
        function = CONVERTERS.get(layer.type)
        if function is None:
            raise ExportError(f"{_where(source, layer.name)}layer '{layer.name}' ({layer.type}): "
                              "no ONNX equivalent")
        ctx = LayerContext(graph, layer, [tensors[name] for name in bottom_names],
                           [blobs[name].shape for name in bottom_names],
                           [blobs[name].shape for name in top_names], outs)
        try:
            produced = function(ctx)
        except ExportError as exc:
            raise ExportError(f"{_where(source, layer.name)}{exc}") from None
        for position, name in enumerate(top_names):
            if produced is not None and produced[position] != outs[position]:
                graph.add("Identity", [produced[position]], [outs[position]], f"{layer.name}/Identity")
            tensors[name] = outs[position]
    outputs = [name for name in (outputs or net.outputs) if tensors[name] not in {i.name for i in inputs}]
    onnx_graph = helper.make_graph(graph.nodes, net.name or "net", inputs,
                                   [float_input(tensors[name], blobs[name].shape) for name in outputs],
                                   graph.initializers)
    opset_ids = [helper.make_opsetid("", opset)]
    model = helper.make_model(onnx_graph, opset_imports=opset_ids, producer_name="caffe-engine",
                              doc_string=f"exported from {source}" if source else "")
    model.ir_version = helper.find_min_ir_version_for(opset_ids)
    # An output renamed because its blob is also an input (modified in place) says which blob it is.
    helper.set_model_props(model, {f"blob:{tensors[name]}": name for name in outputs if tensors[name] != name})
    onnx.checker.check_model(model)
    return model


def build_net(model, weights=None):
    """The deploy net `model` in TEST phase, with `weights` (a .caffemodel or HDF5 file) if given."""
    from ..net import TEST, Net

    param = formats.read_net(model)
    check_deploy(param, str(model))
    return Net(param, phase=TEST, weights=weights, source=str(model))


def run_onnx(model, feeds):
    """Outputs of `model` under ONNX Runtime's CPU provider, by output name."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    session = onnxruntime.InferenceSession(model.SerializeToString(), options,
                                           providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feeds)))


def agreement(net, model, seed=0):
    """Relative difference max|ours - onnx| / max|ours| per model output, on one random input."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for name in net.inputs or [n for layer, tops in zip(net.layers, net.top_names.values())
                               if layer.type == "Input" for n in tops]:
        feeds[name] = rng.standard_normal(net.blobs[name].shape).astype(np.float32)
        net.blobs[name].data[...] = feeds[name]
    net.forward()
    theirs = run_onnx(model, feeds)
    result = {}
    renamed = {prop.key[len("blob:"):]: prop.value for prop in model.metadata_props if prop.key.startswith("blob:")}
    for name, value in theirs.items():
        ours = np.asarray(net.blobs[renamed.get(name, name)].data, dtype=np.float64)
        scale = max(float(np.max(np.abs(ours))) if ours.size else 0.0, 1e-30)
        result[name] = float(np.max(np.abs(ours - value))) / scale if ours.size else 0.0
    return result


def main(argv=None):
    """`export_onnx --model DEPLOY --weights W --output X.onnx [--opset N] [--check]`."""
    parser = argparse.ArgumentParser(prog="export_onnx", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="deploy net prototxt (Input layers or input header)")
    parser.add_argument("--weights", required=True, help=".caffemodel or HDF5 weights")
    parser.add_argument("--output", required=True, help="the .onnx file to write")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET,
                        help=f"ONNX opset ({MIN_OPSET} or newer; default {DEFAULT_OPSET})")
    parser.add_argument("--check", action="store_true",
                        help="run the model in ONNX Runtime on a random input and print its agreement "
                             "with this engine")
    args = parser.parse_args(argv)
    import onnx

    try:
        net = build_net(args.model, args.weights)
        model = export_net(net, args.opset, source=args.model)
        onnx.save(model, args.output)
        print(f"wrote {args.output}: {len(model.graph.node)} nodes, opset {args.opset}")
        if args.check:
            for name, error in agreement(net, model).items():
                print(f"output {name}: max |engine - onnxruntime| / max |engine| = {error:.2e}")
    except CaffeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
