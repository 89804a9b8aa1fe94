"""Drawing a NetParameter as a Graphviz graph, with pycaffe's draw.py interface.

pycaffe builds the graph with pydot; here the DOT text is written directly
and Graphviz's `dot` program renders it, so nothing beyond Graphviz itself is
needed. The picture follows pycaffe's: layers as filled records colored by
type (in-place neuron layers light green), blobs as octagons (a blob last
seen as a top keeps Graphviz's plain ellipse, as in pycaffe), edges from
bottoms to layers and from layers to tops, the latter labeled with the batch
size or num_output. `get_pydot_graph` returns a small pydot-like object
(`to_string`, `create`, `write`, `create_png`, ...) in place of a pydot.Dot.
"""

import shutil
import subprocess

from . import caffe_pb2
from .errors import CaffeError

LAYER_STYLE_DEFAULT = {"shape": "record", "fillcolor": "#6495ED", "style": "filled"}
NEURON_LAYER_STYLE = {"shape": "record", "fillcolor": "#90EE90", "style": "filled"}
BLOB_STYLE = {"shape": "octagon", "fillcolor": "#E0E0E0", "style": "filled"}
_LR_MULT_TYPES = ("Convolution", "Deconvolution", "InnerProduct")


class DrawError(CaffeError):
    """The graph cannot be rendered (Graphviz missing, bad format, bad phase rules)."""


def get_pooling_types_dict():
    """{enum number: name} of PoolingParameter.PoolMethod (0 -> 'MAX', ...)."""
    enum = caffe_pb2.PoolingParameter.PoolMethod.DESCRIPTOR
    return {value.number: name for name, value in enum.values_by_name.items()}


def get_edge_label(layer):
    """The label on a layer's outgoing edges: batch size for Data, num_output for
    convolutions and inner products, nothing otherwise."""
    if layer.type == "Data":
        return f"Batch {layer.data_param.batch_size}"
    if layer.type in ("Convolution", "Deconvolution"):
        return str(layer.convolution_param.num_output)
    if layer.type == "InnerProduct":
        return str(layer.inner_product_param.num_output)
    return ""


def get_layer_lr_mult(layer):
    """(weight, bias) lr_mult of a Convolution, Deconvolution or InnerProduct layer (1 when unset)."""
    if layer.type not in _LR_MULT_TYPES:
        raise ValueError(f"{layer.type} layers do not have a learning rate multiplier")
    mults = [spec.lr_mult for spec in layer.param[:2]]
    if len(layer.param) > 2:
        raise ValueError(f"layer '{layer.name}' has {len(layer.param)} param specs; expected at most 2")
    return tuple(mults + [1.0] * (2 - len(mults)))


def _first(values, default):
    return values[0] if len(values) else default


def _label_lines(layer, display_lrm):
    lines = [layer.name]
    if layer.type in ("Convolution", "Deconvolution"):
        p = layer.convolution_param
        kernel = _first(p.kernel_size, p.kernel_h if p.HasField("kernel_h") else 1)
        stride = _first(p.stride, p.stride_h if p.HasField("stride_h") else 1)
        pad = _first(p.pad, p.pad_h)
        lines += [f"({layer.type})", f"kernel size: {kernel}", f"stride: {stride}", f"pad: {pad}"]
    elif layer.type == "Pooling":
        p = layer.pooling_param
        pool = get_pooling_types_dict()[p.pool]
        kernel = p.kernel_size or p.kernel_h
        lines += [f"({pool} {layer.type})", f"kernel size: {kernel}", f"stride: {p.stride}", f"pad: {p.pad}"]
    else:
        lines.append(f"({layer.type})")
    if display_lrm and layer.type in _LR_MULT_TYPES:
        weight, bias = get_layer_lr_mult(layer)
        lines.append(f"lr mult: {weight:g}, {bias:g}")
    return lines


def _escape(text, record=False):
    text = text.replace("\\", "\\\\").replace('"', '\\"')
    if record:
        for char in "{}|<>":
            text = text.replace(char, "\\" + char)
    return text


def get_layer_label(layer, rankdir, display_lrm=False):
    """A layer's node label as a quoted DOT string: name, (type) and, for
    convolution and pooling, kernel size, stride and pad; one item per line
    when the graph runs left to right, separated by spaces when it runs top-down."""
    separator = " " if rankdir in ("TB", "BT") else "\\n"
    return '"' + separator.join(_escape(line, record=True) for line in _label_lines(layer, display_lrm)) + '"'


def choose_color_by_layertype(layertype):
    """Fill color of a layer node, by type."""
    if layertype in ("Convolution", "Deconvolution"):
        return "#FF5050"
    if layertype == "Pooling":
        return "#FF9900"
    if layertype == "InnerProduct":
        return "#CC33FF"
    return "#6495ED"


def _in_phase(layer, phase):
    """pycaffe's drawing filter: include rules name a phase to keep, exclude rules one to drop."""
    if len(layer.include) and len(layer.exclude):
        raise DrawError(f"layer {layer.name} has both include and exclude specified.")
    if len(layer.include):
        return any(not rule.HasField("phase") or rule.phase == phase for rule in layer.include)
    return not any(rule.HasField("phase") and rule.phase == phase for rule in layer.exclude)


class _Raw(str):
    """A label already escaped for DOT (it carries \\n line breaks)."""


def _attributes(attrs):
    def text(value):
        return str(value) if isinstance(value, _Raw) else _escape(str(value))

    return ", ".join(f'{key}="{text(value)}"' for key, value in attrs.items())


class DotGraph:
    """A DOT digraph with the parts of pydot.Dot that pycaffe users call."""

    def __init__(self, name, rankdir):
        self.name = name
        self.rankdir = rankdir
        self.nodes = {}  # id -> attributes, in first-seen order
        self.edges = []  # (source id, target id, label)

    def get_nodes(self):
        return list(self.nodes.items())

    def get_edges(self):
        return list(self.edges)

    def to_string(self):
        lines = [f'digraph "{_escape(self.name)}" {{', f'rankdir="{_escape(self.rankdir)}";']
        for node_id, attrs in self.nodes.items():
            lines.append(f'"{_escape(node_id)}" [{_attributes(attrs)}];')
        for source, target, label in self.edges:
            lines.append(f'"{_escape(source)}" -> "{_escape(target)}" [label="{_escape(label)}"];')
        lines.append("}")
        return "\n".join(lines) + "\n"

    def create(self, prog="dot", format="png"):  # noqa: A002  (pydot's keyword)
        """The rendered bytes; format 'raw' (or 'dot' text without layout) gives the DOT source."""
        if format == "raw":
            return self.to_string().encode()
        program = shutil.which(prog)
        if program is None:
            raise DrawError(f"Graphviz's '{prog}' program was not found on PATH: install Graphviz, "
                            "or draw to a '.raw' file to get the DOT text")
        result = subprocess.run([program, f"-T{format}"], input=self.to_string().encode(),
                                capture_output=True, check=False)
        if result.returncode != 0:
            detail = result.stderr.decode(errors="replace").strip()
            raise DrawError(f"{prog} could not render format '{format}': {detail}")
        return result.stdout

    def write(self, path, prog="dot", format="raw"):  # noqa: A002
        with open(path, "wb") as handle:
            handle.write(self.create(prog=prog, format=format))

    def __getattr__(self, name):
        # pydot's create_<format>() and write_<format>(path) shortcuts.
        for prefix, method in (("create_", self.create), ("write_", self.write)):
            if name.startswith(prefix) and len(name) > len(prefix):
                fmt = name[len(prefix):]
                if prefix == "create_":
                    return lambda prog="dot": method(prog=prog, format=fmt)
                return lambda path, prog="dot": method(path, prog=prog, format=fmt)
        raise AttributeError(name)


def get_pydot_graph(caffe_net, rankdir, label_edges=True, phase=None, display_lrm=False):
    """The graph of a NetParameter; `phase` (TRAIN/TEST) keeps only that phase's layers."""
    graph = DotGraph(caffe_net.name or "Net", rankdir)
    blob_styles = {}
    for layer in caffe_net.layer:
        if phase is not None and not _in_phase(layer, phase):
            continue
        layer_id = f"{layer.name}_{layer.type}"
        label = get_layer_label(layer, rankdir, display_lrm)[1:-1]
        in_place = len(layer.bottom) == 1 and len(layer.top) == 1 and layer.bottom[0] == layer.top[0]
        style = dict(NEURON_LAYER_STYLE) if in_place else dict(LAYER_STYLE_DEFAULT,
                                                               fillcolor=choose_color_by_layertype(layer.type))
        graph.nodes[layer_id] = dict(style, label=_Raw(label))
        for bottom in layer.bottom:
            blob_styles[bottom] = dict(BLOB_STYLE)
            graph.nodes.setdefault(f"{bottom}_blob", {})
            graph.edges.append((f"{bottom}_blob", layer_id, ""))
        for top in layer.top:
            blob_styles[top] = {}
            graph.nodes.setdefault(f"{top}_blob", {})
            graph.edges.append((layer_id, f"{top}_blob", get_edge_label(layer) if label_edges else ""))
    for blob, style in blob_styles.items():
        graph.nodes[f"{blob}_blob"] = dict(style, label=blob)
    return graph


def draw_net(caffe_net, rankdir, ext="png", phase=None, display_lrm=False):
    """The rendered image of a NetParameter, as bytes in format `ext`."""
    return get_pydot_graph(caffe_net, rankdir, phase=phase, display_lrm=display_lrm).create(format=ext)


def draw_net_to_file(caffe_net, filename, rankdir="LR", phase=None, display_lrm=False):
    """Render to `filename`, in the format its extension names; '.raw' writes the DOT text."""
    ext = str(filename)[str(filename).rfind(".") + 1:]
    data = draw_net(caffe_net, rankdir, ext, phase, display_lrm)
    with open(filename, "wb") as handle:
        handle.write(data)
