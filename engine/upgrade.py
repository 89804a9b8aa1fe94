"""Bring old Caffe net and solver definitions up to the current schema.

Caffe has changed its file formats several times and still reads the old ones
by converting them on load. This module performs the same conversions, in the
same order, on already-parsed protobuf messages (no file access):

1. V0 -> V1: `layers { layer { type: "conv" ... } }` becomes
   `layers { type: CONVOLUTION convolution_param { ... } }`; stand-alone
   "padding" layers are folded into the pad of the conv / pool they feed.
2. Data transformation: scale / mean_file / crop_size / mirror written on a
   V1 data layer's own parameters move into its transform_param.
3. V1 -> current: `layers` (enum types, blobs_lr, weight_decay) become `layer`
   entries (string types, param { lr_mult decay_mult }).
4. Net inputs: the `input` + `input_dim` / `input_shape` header becomes an
   "Input" layer at the front of the net.
5. BatchNorm: layers still listing three ParamSpecs for their statistics get
   lr_mult and decay_mult forced to 0 (the statistics are never learned).

Solvers get one conversion: the `solver_type` enum becomes the `type` string.

Every public function leaves its argument untouched and returns a new
message. Problems Caffe treats as fatal raise `ProtoError`; problems Caffe
only logs (a V0 setting that has no home for that layer type, say) are
appended as text to the optional `notes` list, and the upgrade goes on.
"""

from . import caffe_pb2
from .errors import ProtoError

__all__ = [
    "net_needs_upgrade",
    "upgrade_net",
    "solver_needs_upgrade",
    "upgrade_solver",
    "v1_type_name",
]

V1Layer = caffe_pb2.V1LayerParameter
LayerType = V1Layer.LayerType


def _note(notes, text):
    if notes is not None:
        notes.append(text)


def _layer_label(name, index):
    return f"layer '{name}'" if name else f"layer #{index}"


# ---------------------------------------------------------------------------
# Which passes a net needs
# ---------------------------------------------------------------------------

def _needs_v0_upgrade(net):
    """A V1 entry that still wraps a V0 `layer` message means a V0 net."""
    return any(entry.HasField("layer") for entry in net.layers)


def _needs_v1_upgrade(net):
    return len(net.layers) > 0


# V1 layer types whose own parameters once carried transformation settings,
# with the name of that parameter message.
_TRANSFORMING_V1_TYPES = {
    LayerType.Value("DATA"): "data_param",
    LayerType.Value("IMAGE_DATA"): "image_data_param",
    LayerType.Value("WINDOW_DATA"): "window_data_param",
}
_TRANSFORM_FIELDS = ("scale", "mean_file", "crop_size", "mirror")


def _needs_data_upgrade(net):
    for entry in net.layers:
        param_name = _TRANSFORMING_V1_TYPES.get(entry.type)
        if param_name is None:
            continue
        params = getattr(entry, param_name)
        if any(params.HasField(f) for f in _TRANSFORM_FIELDS):
            return True
    return False


def _needs_input_upgrade(net):
    return len(net.input) > 0


def _is_old_batch_norm(layer):
    """Old BatchNorm definitions listed one ParamSpec per statistics blob."""
    return layer.type == "BatchNorm" and len(layer.param) == 3


def _needs_batch_norm_upgrade(net):
    return any(_is_old_batch_norm(layer) for layer in net.layer)


def net_needs_upgrade(net):
    """True when any of Caffe's net upgrade passes would change `net`."""
    return (_needs_v0_upgrade(net) or _needs_v1_upgrade(net)
            or _needs_data_upgrade(net) or _needs_input_upgrade(net)
            or _needs_batch_norm_upgrade(net))


# ---------------------------------------------------------------------------
# Pass 1: V0 -> V1
# ---------------------------------------------------------------------------

# V0 lower-case type strings and the V1 enum value each one became.
_V0_TYPES = {
    "accuracy": "ACCURACY",
    "bnll": "BNLL",
    "concat": "CONCAT",
    "conv": "CONVOLUTION",
    "data": "DATA",
    "dropout": "DROPOUT",
    "euclidean_loss": "EUCLIDEAN_LOSS",
    "flatten": "FLATTEN",
    "hdf5_data": "HDF5_DATA",
    "hdf5_output": "HDF5_OUTPUT",
    "im2col": "IM2COL",
    "images": "IMAGE_DATA",
    "infogain_loss": "INFOGAIN_LOSS",
    "innerproduct": "INNER_PRODUCT",
    "lrn": "LRN",
    "multinomial_logistic_loss": "MULTINOMIAL_LOGISTIC_LOSS",
    "pool": "POOLING",
    "relu": "RELU",
    "sigmoid": "SIGMOID",
    "softmax": "SOFTMAX",
    "softmax_loss": "SOFTMAX_LOSS",
    "split": "SPLIT",
    "tanh": "TANH",
    "window_data": "WINDOW_DATA",
}

# Where each type-specific V0 setting lands in V1, per V0 layer type:
# v0 field -> {v0 type: (V1 parameter message, field in it)}.
_V0_FIELD_TARGETS = {
    "num_output": {"conv": ("convolution_param", "num_output"),
                   "innerproduct": ("inner_product_param", "num_output")},
    "biasterm": {"conv": ("convolution_param", "bias_term"),
                 "innerproduct": ("inner_product_param", "bias_term")},
    "weight_filler": {"conv": ("convolution_param", "weight_filler"),
                      "innerproduct": ("inner_product_param", "weight_filler")},
    "bias_filler": {"conv": ("convolution_param", "bias_filler"),
                    "innerproduct": ("inner_product_param", "bias_filler")},
    "pad": {"conv": ("convolution_param", "pad"),
            "pool": ("pooling_param", "pad")},
    "kernelsize": {"conv": ("convolution_param", "kernel_size"),
                   "pool": ("pooling_param", "kernel_size")},
    "group": {"conv": ("convolution_param", "group")},
    "stride": {"conv": ("convolution_param", "stride"),
               "pool": ("pooling_param", "stride")},
    # V0 and current PoolMethod enums share their numbers.
    "pool": {"pool": ("pooling_param", "pool")},
    "dropout_ratio": {"dropout": ("dropout_param", "dropout_ratio")},
    "local_size": {"lrn": ("lrn_param", "local_size")},
    "alpha": {"lrn": ("lrn_param", "alpha")},
    "beta": {"lrn": ("lrn_param", "beta")},
    "k": {"lrn": ("lrn_param", "k")},
    "source": {"data": ("data_param", "source"),
               "hdf5_data": ("hdf5_data_param", "source"),
               "images": ("image_data_param", "source"),
               "window_data": ("window_data_param", "source"),
               "infogain_loss": ("infogain_loss_param", "source")},
    "batchsize": {"data": ("data_param", "batch_size"),
                  "hdf5_data": ("hdf5_data_param", "batch_size"),
                  "images": ("image_data_param", "batch_size"),
                  "window_data": ("window_data_param", "batch_size")},
    "rand_skip": {"data": ("data_param", "rand_skip"),
                  "images": ("image_data_param", "rand_skip")},
    "shuffle_images": {"images": ("image_data_param", "shuffle")},
    "new_height": {"images": ("image_data_param", "new_height")},
    "new_width": {"images": ("image_data_param", "new_width")},
    "concat_dim": {"concat": ("concat_param", "concat_dim")},
    "det_fg_threshold": {"window_data": ("window_data_param", "fg_threshold")},
    "det_bg_threshold": {"window_data": ("window_data_param", "bg_threshold")},
    "det_fg_fraction": {"window_data": ("window_data_param", "fg_fraction")},
    "det_context_pad": {"window_data": ("window_data_param", "context_pad")},
    "det_crop_mode": {"window_data": ("window_data_param", "crop_mode")},
    "hdf5_output_param": {"hdf5_output": ("hdf5_output_param", None)},
}

# V0 preprocessing settings go to transform_param whatever the layer type.
_V0_TRANSFORM_FIELDS = {
    "scale": "scale",
    "meanfile": "mean_file",
    "cropsize": "crop_size",
    "mirror": "mirror",
}


def _assign(message, field, value):
    """Set a scalar, append to a repeated field, or copy a sub-message."""
    descriptor = message.DESCRIPTOR.fields_by_name[field]
    if descriptor.is_repeated:
        getattr(message, field).append(value)
    elif descriptor.message_type is not None:
        getattr(message, field).CopyFrom(value)
    else:
        setattr(message, field, value)


def _fold_padding_layers(net):
    """Drop V0 "padding" layers, moving their pad into the consumer.

    Early Caffe padded with a separate layer; its only legal consumers were a
    conv or pool layer, which now pad by themselves. The consumer takes the
    padding layer's pad and reads the padding layer's own input instead.
    """
    folded = caffe_pb2.NetParameter()
    folded.CopyFrom(net)
    del folded.layers[:]

    # Blob name -> index of the layer that last wrote it (-1: a net input).
    producer = {name: -1 for name in net.input}
    for index, entry in enumerate(net.layers):
        v0 = entry.layer
        label = _layer_label(v0.name, index)
        if v0.type != "padding":
            folded.layers.add().CopyFrom(entry)
        for slot, blob in enumerate(entry.bottom):
            if blob not in producer:
                raise ProtoError(
                    f"{label}: bottom blob '{blob}' is neither a net input "
                    f"nor the top of an earlier layer")
            source_index = producer[blob]
            if source_index < 0:
                continue
            source = net.layers[source_index]
            if source.layer.type != "padding":
                continue
            if v0.type not in ("conv", "pool"):
                raise ProtoError(
                    f"{label}: a padding layer ('{source.layer.name}') feeds "
                    f"a layer of type '{v0.type}'; only conv and pool layers "
                    f"can absorb padding")
            if len(entry.bottom) != 1:
                raise ProtoError(
                    f"{label}: a layer fed by a padding layer must have "
                    f"exactly one bottom")
            if len(source.bottom) != 1 or len(source.top) != 1:
                raise ProtoError(
                    f"padding layer '{source.layer.name}' must have exactly "
                    f"one bottom and one top")
            consumer = folded.layers[-1]
            consumer.layer.pad = source.layer.pad
            consumer.bottom[slot] = source.bottom[0]
        for blob in entry.top:
            producer[blob] = index
    return folded


def _upgrade_v0_layer(entry, index, notes):
    """One V0 layer (wrapped in a V1 entry) as a V1 layer."""
    out = V1Layer()
    out.bottom.extend(entry.bottom)
    out.top.extend(entry.top)
    if not entry.HasField("layer"):
        return out
    v0 = entry.layer
    label = _layer_label(v0.name, index)
    if v0.HasField("name"):
        out.name = v0.name
    kind = v0.type
    if v0.HasField("type"):
        if kind not in _V0_TYPES:
            raise ProtoError(
                f"{label}: V0 layer type '{kind}' has no V1 equivalent")
        out.type = LayerType.Value(_V0_TYPES[kind])
    for blob in v0.blobs:
        out.blobs.add().CopyFrom(blob)
    out.blobs_lr.extend(v0.blobs_lr)
    out.weight_decay.extend(v0.weight_decay)

    for field, targets in _V0_FIELD_TARGETS.items():
        if not v0.HasField(field):
            continue
        target = targets.get(kind)
        if target is None:
            _note(notes, f"{label}: V0 setting '{field}' does not apply to "
                         f"layer type '{kind}'; dropped")
            continue
        param_name, param_field = target
        if param_field is None:
            getattr(out, param_name).CopyFrom(getattr(v0, field))
        else:
            _assign(getattr(out, param_name), param_field,
                    getattr(v0, field))

    for field, transform_field in _V0_TRANSFORM_FIELDS.items():
        if v0.HasField(field):
            setattr(out.transform_param, transform_field, getattr(v0, field))
    return out


def _upgrade_v0_net(net, notes):
    """V0 net (layers wrapping V0 `layer` messages) -> V1 net.

    Only the name, inputs, input dims and force_backward survive besides the
    layers, as in Caffe: V0 nets had no other top-level settings.
    """
    padded = _fold_padding_layers(net)
    out = caffe_pb2.NetParameter()
    if padded.HasField("name"):
        out.name = padded.name
    for index, entry in enumerate(padded.layers):
        out.layers.add().CopyFrom(_upgrade_v0_layer(entry, index, notes))
    out.input.extend(padded.input)
    out.input_dim.extend(padded.input_dim)
    if padded.HasField("force_backward"):
        out.force_backward = padded.force_backward
    return out


# ---------------------------------------------------------------------------
# Pass 2: data transformation fields -> transform_param
# ---------------------------------------------------------------------------

def _upgrade_data_transformation(net, notes=None):
    """Move scale / mean_file / crop_size / mirror into transform_param.

    These once lived on DataParameter, ImageDataParameter and
    WindowDataParameter; the shared TransformationParameter replaced them.
    """
    out = caffe_pb2.NetParameter()
    out.CopyFrom(net)
    for entry in out.layers:
        param_name = _TRANSFORMING_V1_TYPES.get(entry.type)
        if param_name is None:
            continue
        params = getattr(entry, param_name)
        for field in _TRANSFORM_FIELDS:
            if params.HasField(field):
                setattr(entry.transform_param, field, getattr(params, field))
                params.ClearField(field)
    return out


# ---------------------------------------------------------------------------
# Pass 3: V1 -> current LayerParameter
# ---------------------------------------------------------------------------

# V1 enum names and the type strings the layer registry knows them by.
_V1_TYPE_NAMES = {
    "NONE": "",
    "ABSVAL": "AbsVal",
    "ACCURACY": "Accuracy",
    "ARGMAX": "ArgMax",
    "BNLL": "BNLL",
    "CONCAT": "Concat",
    "CONTRASTIVE_LOSS": "ContrastiveLoss",
    "CONVOLUTION": "Convolution",
    "DECONVOLUTION": "Deconvolution",
    "DATA": "Data",
    "DROPOUT": "Dropout",
    "DUMMY_DATA": "DummyData",
    "EUCLIDEAN_LOSS": "EuclideanLoss",
    "ELTWISE": "Eltwise",
    "EXP": "Exp",
    "FLATTEN": "Flatten",
    "HDF5_DATA": "HDF5Data",
    "HDF5_OUTPUT": "HDF5Output",
    "HINGE_LOSS": "HingeLoss",
    "IM2COL": "Im2col",
    "IMAGE_DATA": "ImageData",
    "INFOGAIN_LOSS": "InfogainLoss",
    "INNER_PRODUCT": "InnerProduct",
    "LRN": "LRN",
    "MEMORY_DATA": "MemoryData",
    "MULTINOMIAL_LOGISTIC_LOSS": "MultinomialLogisticLoss",
    "MVN": "MVN",
    "POOLING": "Pooling",
    "POWER": "Power",
    "RELU": "ReLU",
    "SIGMOID": "Sigmoid",
    "SIGMOID_CROSS_ENTROPY_LOSS": "SigmoidCrossEntropyLoss",
    "SILENCE": "Silence",
    "SOFTMAX": "Softmax",
    "SOFTMAX_LOSS": "SoftmaxWithLoss",
    "SPLIT": "Split",
    "SLICE": "Slice",
    "TANH": "TanH",
    "WINDOW_DATA": "WindowData",
    "THRESHOLD": "Threshold",
}

# Every *_param message of a V1 layer has a same-named home in LayerParameter.
_V1_PARAM_FIELDS = tuple(
    f.name for f in V1Layer.DESCRIPTOR.fields
    if f.name.endswith("_param") and f.message_type is not None)


def v1_type_name(value):
    """The current type string for a V1LayerParameter.LayerType value."""
    try:
        return _V1_TYPE_NAMES[LayerType.Name(value)]
    except (ValueError, KeyError):
        raise ProtoError(f"unknown V1 layer type {value}") from None


def _param_spec(layer, index):
    """The index-th ParamSpec of `layer`, adding empty ones up to it."""
    while len(layer.param) <= index:
        layer.param.add()
    return layer.param[index]


def _upgrade_v1_layer(entry, index, notes):
    """One V1 layer as a current LayerParameter."""
    label = _layer_label(entry.name, index)
    layer = caffe_pb2.LayerParameter()
    layer.bottom.extend(entry.bottom)
    layer.top.extend(entry.top)
    if entry.HasField("name"):
        layer.name = entry.name
    for rule in entry.include:
        layer.include.add().CopyFrom(rule)
    for rule in entry.exclude:
        layer.exclude.add().CopyFrom(rule)
    if entry.HasField("type"):
        try:
            layer.type = v1_type_name(entry.type)
        except ProtoError as exc:
            raise ProtoError(f"{label}: {exc}") from None
    for blob in entry.blobs:
        layer.blobs.add().CopyFrom(blob)

    # Per-blob settings become one ParamSpec per blob.
    for i, name in enumerate(entry.param):
        _param_spec(layer, i).name = name
    for i, mode in enumerate(entry.blob_share_mode):
        # V1 and ParamSpec DimCheckMode enums share their numbers.
        _param_spec(layer, i).share_mode = mode
    for i, lr in enumerate(entry.blobs_lr):
        _param_spec(layer, i).lr_mult = lr
    for i, decay in enumerate(entry.weight_decay):
        _param_spec(layer, i).decay_mult = decay

    layer.loss_weight.extend(entry.loss_weight)
    for name in _V1_PARAM_FIELDS:
        if entry.HasField(name):
            getattr(layer, name).CopyFrom(getattr(entry, name))
    if entry.HasField("layer"):
        _note(notes, f"{label}: still holds a V0 layer definition; ignored")
    return layer


def _upgrade_v1_net(net, notes):
    """`layers` (V1) -> `layer` (current); other net settings are kept."""
    out = caffe_pb2.NetParameter()
    out.CopyFrom(net)
    del out.layers[:]
    del out.layer[:]
    if len(net.layer) > 0:
        _note(notes, "net mixes 'layer' and legacy 'layers' entries; the "
                     f"{len(net.layer)} 'layer' entries were dropped")
    for index, entry in enumerate(net.layers):
        out.layer.add().CopyFrom(_upgrade_v1_layer(entry, index, notes))
    return out


# ---------------------------------------------------------------------------
# Pass 4: input header -> Input layer
# ---------------------------------------------------------------------------

def _upgrade_input_header(net, notes=None):
    """Replace the net's `input` header with a leading "Input" layer.

    Shapes come from input_shape (one per input) or else from input_dim
    (four per input). A header with names but no shapes at all (found in old
    .caffemodel files) is simply dropped.
    """
    out = caffe_pb2.NetParameter()
    out.CopyFrom(net)
    names = list(net.input)
    has_shape = len(net.input_shape) > 0
    has_dim = len(net.input_dim) > 0
    if has_shape or has_dim:
        layer = caffe_pb2.LayerParameter(name="input", type="Input")
        layer.top.extend(names)
        if has_shape:
            if len(net.input_shape) != len(names):
                raise ProtoError(
                    f"net input header lists {len(names)} input(s) but "
                    f"{len(net.input_shape)} input_shape(s); give exactly one "
                    f"input_shape per input")
            for shape in net.input_shape:
                layer.input_param.shape.add().CopyFrom(shape)
        else:
            if len(net.input_dim) != 4 * len(names):
                raise ProtoError(
                    f"net input header lists {len(names)} input(s) but "
                    f"{len(net.input_dim)} input_dim value(s); give exactly "
                    f"four (num, channels, height, width) per input")
            for i in range(len(names)):
                layer.input_param.shape.add().dim.extend(
                    net.input_dim[4 * i:4 * i + 4])
        del out.layer[:]
        out.layer.add().CopyFrom(layer)
        for existing in net.layer:
            out.layer.add().CopyFrom(existing)
    out.ClearField("input")
    out.ClearField("input_shape")
    out.ClearField("input_dim")
    return out


# ---------------------------------------------------------------------------
# Pass 5: BatchNorm parameter specs
# ---------------------------------------------------------------------------

def _upgrade_batch_norm(net, notes=None):
    """Zero lr_mult / decay_mult on old-style BatchNorm ParamSpecs.

    The mean, variance and scale-factor blobs of BatchNorm are running
    statistics, not learned weights. Old definitions had to say so with three
    `param { lr_mult: 0 }` entries; the layer now enforces it itself and
    rejects any non-zero multiplier, so those three specs are zeroed (other
    settings such as sharing names are kept).
    """
    out = caffe_pb2.NetParameter()
    out.CopyFrom(net)
    for layer in out.layer:
        if _is_old_batch_norm(layer):
            for spec in layer.param:
                spec.lr_mult = 0.0
                spec.decay_mult = 0.0
    return out


# ---------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------

def upgrade_net(net, source_name="<net>", notes=None):
    """Return `net` converted to the current format (a new message).

    Runs Caffe's passes in Caffe's order, each only when needed. When `notes`
    is a list, a line is appended for each pass applied, followed by the
    non-fatal problems that pass met. Fatal problems raise ProtoError naming
    `source_name` and the layer.
    """
    out = caffe_pb2.NetParameter()
    out.CopyFrom(net)
    # (applies?, pass, summary); every pass takes (net, problems) and
    # returns a new net.
    passes = (
        (_needs_v0_upgrade, _upgrade_v0_net,
         "upgraded V0 layers to V1"),
        (_needs_data_upgrade, _upgrade_data_transformation,
         "moved data-layer transformation fields into transform_param"),
        (_needs_v1_upgrade, _upgrade_v1_net,
         "upgraded V1 'layers' to 'layer'"),
        (_needs_input_upgrade, _upgrade_input_header,
         "replaced the input header with an Input layer"),
        (_needs_batch_norm_upgrade, _upgrade_batch_norm,
         "zeroed lr_mult/decay_mult of old-style BatchNorm param specs"),
    )
    for needed, apply, summary in passes:
        if not needed(out):
            continue
        problems = []
        try:
            out = apply(out, problems)
        except ProtoError as exc:
            raise ProtoError(f"{source_name}: {exc}") from None
        _note(notes, f"{source_name}: {summary}")
        for problem in problems:
            _note(notes, f"{source_name}: warning: {problem}")
    return out


# ---------------------------------------------------------------------------
# Solver
# ---------------------------------------------------------------------------

_SOLVER_TYPE_NAMES = {
    "SGD": "SGD",
    "NESTEROV": "Nesterov",
    "ADAGRAD": "AdaGrad",
    "RMSPROP": "RMSProp",
    "ADADELTA": "AdaDelta",
    "ADAM": "Adam",
}


def solver_needs_upgrade(solver):
    """True when the solver still uses the `solver_type` enum."""
    return solver.HasField("solver_type")


def upgrade_solver(solver, source_name="<solver>", notes=None):
    """Return `solver` with `solver_type` turned into `type` (a new message).

    Setting both fields is refused, as Caffe does, even when they agree:
    the file is ambiguous about which one the author meant to keep.
    """
    out = caffe_pb2.SolverParameter()
    out.CopyFrom(solver)
    if not solver_needs_upgrade(solver):
        return out
    if solver.HasField("type"):
        raise ProtoError(
            f"{source_name}: both the deprecated 'solver_type' enum and the "
            f"'type' string are set; keep only 'type'")
    enum_name = caffe_pb2.SolverParameter.SolverType.Name(solver.solver_type)
    out.type = _SOLVER_TYPE_NAMES[enum_name]
    out.ClearField("solver_type")
    _note(notes, f"{source_name}: solver_type {enum_name} -> type "
                 f"\"{out.type}\"")
    return out
