"""Export a deploy net and its weights to an ONNX model (`tools/export_onnx`).

The net is built here in TEST phase with its own input shapes (Input layers
or the input header), so every blob shape is known; each layer then goes
through its type's converter (engine/export/onnx_*.py), which writes ONNX
nodes with Caffe's exact arithmetic. Shapes in the model are static, as the
net's are. A layer with no ONNX form is a one-line error naming it; when the
model's outputs are chosen, only the layers they depend on are converted,
so a net can be exported up to such a layer (SSD's DetectionOutput).
"""

import numpy as np

from .. import caffe_pb2, formats, netgraph
from ..backend import to_device, to_host
from .onnx_graph import CONVERTERS, ExportError, Graph, LayerContext, float_input
from . import onnx_forks, onnx_layers, onnx_neurons, onnx_vision  # noqa: F401  (register converters)

# ONNX Runtime 1.20 and later implement every operator of this opset.
DEFAULT_OPSET = 21
MIN_OPSET = 17
# Layers that read files or generate batches: a deploy net has Input layers instead.
DATA_TYPES = {"Data", "ImageData", "HDF5Data", "MemoryData", "WindowData", "DummyData", "AnnotatedData",
              "DenseImageData", "ImageLabelmapData", "VideoData", "HDF5Output"}
_LABELLED = "needs labels: export a deploy net, which ends before the losses"
# Why the layer types without a converter have none (others: "no ONNX equivalent").
REFUSALS = {
    "DetectionOutput": "SSD's decoding, per-class NMS with top_k and keep_top_k and its variable number of "
                       "detections have no exact ONNX form; export the blobs it reads instead (--outputs, "
                       "e.g. mbox_loc,mbox_conf_flatten,mbox_priorbox) and run the NMS outside",
    "PSROIPooling": "ONNX has no position-sensitive ROI pooling",
    "Python": "a Python layer's code has no ONNX form",
    "LSTM": "Caffe's recurrent layers (reset by the cont input) have no exact ONNX form",
    "RNN": "Caffe's recurrent layers (reset by the cont input) have no exact ONNX form",
    "LSTMUnit": "Caffe's recurrent layers (reset by the cont input) have no exact ONNX form",
    "Filter": "its output size depends on the data",
    "LargeMarginInnerProduct": "its scores depend on the label in TEST as well",
    "MarginInnerProduct": "its scores depend on the label",
    **{name: _LABELLED for name in ("Accuracy", "SoftmaxWithLoss", "EuclideanLoss", "HingeLoss", "InfogainLoss",
                                    "ContrastiveLoss", "MultinomialLogisticLoss", "SigmoidCrossEntropyLoss",
                                    "SmoothL1Loss", "MultiBoxLoss", "DetectionEvaluate", "ParseEvaluate")},
}


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


def _needed_layers(tops, bottoms, outputs):
    """Indices of the layers that the blobs `outputs` depend on (`tops`, `bottoms`: names per layer)."""
    needed, wanted = set(), set(outputs)
    for index in range(len(tops) - 1, -1, -1):
        if wanted.intersection(tops[index]):
            needed.add(index)
            wanted.update(bottoms[index])
    return needed


def _last_writers(net):
    last = {}
    for index, tops in enumerate(net.top_names.values()):
        for name in tops:
            last[name] = index
    return last


def export_net(net, opset=DEFAULT_OPSET, source=None, outputs=None):
    """The ONNX ModelProto computing `net`'s outputs from its Input blobs, with its weights.

    `outputs` names the blobs the model returns (default: the net's outputs);
    each is the blob's final value, after any in-place layers. Only the layers
    those blobs depend on are converted.
    """
    import onnx
    from onnx import helper

    source = source if source is not None else getattr(net, "source", None)
    if source and source.startswith("<"):
        source = None
    if not MIN_OPSET <= opset <= onnx.defs.onnx_opset_version():
        raise ExportError(f"opset {opset} is not supported: choose {MIN_OPSET} to "
                          f"{onnx.defs.onnx_opset_version()}")
    blobs = net.blobs
    outputs = list(outputs or net.outputs)
    for name in outputs:
        if name not in blobs:
            raise ExportError(f"{source + ': ' if source else ''}no blob named '{name}' in net '{net.name}' "
                              "to export as an output")
    tops, bottoms = list(net.top_names.values()), list(net.bottom_names.values())
    needed = _needed_layers(tops, bottoms, outputs)
    graph = Graph(opset)
    tensors, inputs = {}, []
    last = _last_writers(net)
    graph.used.update(blobs)  # a blob's name is kept for its final value
    fed = {name for layer, names in zip(net.layers, tops) if layer.type == "Input" for name in names}
    for index, (layer, bottom_names, top_names) in enumerate(zip(net.layers, bottoms, tops)):
        if layer.type == "Input":
            for name in top_names:
                tensors[name] = name
                inputs.append(float_input(tensors[name], blobs[name].shape))
            continue
        if index not in needed:
            continue
        # A blob's final value keeps its name (an Input blob's is taken by the graph's input);
        # values that in-place layers overwrite later get fresh names.
        outs = [name if last[name] == index and name not in fed else graph.fresh(f"{name}/{layer.name}")
                for name in top_names]
        function = CONVERTERS.get(layer.type)
        if function is None:
            reason = REFUSALS.get(layer.type, "no ONNX equivalent")
            raise ExportError(f"{_where(source, layer.name)}layer '{layer.name}' ({layer.type}): {reason}")
        ctx = LayerContext(graph, layer, [tensors[name] for name in bottom_names],
                           [blobs[name].shape for name in bottom_names],
                           [blobs[name].shape for name in top_names], outs,
                           net.bottom_blobs(index), net.top_blobs(index))
        try:
            produced = function(ctx)
        except ExportError as exc:
            raise ExportError(f"{_where(source, layer.name)}{exc}") from None
        for position, name in enumerate(top_names):
            if produced is not None and produced[position] != outs[position]:
                graph.add("Identity", [produced[position]], [outs[position]], f"{layer.name}/Identity")
            tensors[name] = outs[position]
    input_names = {i.name for i in inputs}
    outputs = [name for name in outputs if tensors[name] not in input_names]
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


def input_names(net):
    """The blobs an exported model takes as inputs: the tops of the net's Input layers."""
    return [name for layer, tops in zip(net.layers, net.top_names.values()) if layer.type == "Input"
            for name in tops]


def agreement(net, model, seed=0, feeds=None):
    """Relative difference max|ours - onnx| / max|ours| per model output.

    Inputs are standard normal draws (seeded), except those given in `feeds`.
    """
    rng = np.random.default_rng(seed)
    feeds = dict(feeds or {})
    for name in input_names(net):
        if name not in feeds:
            feeds[name] = rng.standard_normal(net.blobs[name].shape).astype(np.float32)
        blob = net.blobs[name]
        blob.data[...] = to_device(feeds[name], blob.xp)
    net.forward()
    theirs = run_onnx(model, feeds)
    result = {}
    renamed = {prop.key[len("blob:"):]: prop.value for prop in model.metadata_props if prop.key.startswith("blob:")}
    for name, value in theirs.items():
        ours = to_host(net.blobs[renamed.get(name, name)].data).astype(np.float64)
        scale = max(float(np.max(np.abs(ours))) if ours.size else 0.0, 1e-30)
        result[name] = float(np.max(np.abs(ours - value))) / scale if ours.size else 0.0
    return result
