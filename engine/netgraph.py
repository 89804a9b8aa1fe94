"""Caffe's net-construction passes on NetParameter messages, before any layer exists.

`filter_net` keeps the layers whose include/exclude rules match the NetState;
`insert_splits` gives every blob consumed by several layers its own Split
layer, named as Caffe names it, so each consumer gets its own diff.
"""

from . import caffe_pb2
from .errors import NetError


def rule_matches(state, rule):
    """Caffe's StateMeetsRule: phase, level range, required and forbidden stages."""
    if rule.HasField("phase") and rule.phase != state.phase:
        return False
    if rule.HasField("min_level") and state.level < rule.min_level:
        return False
    if rule.HasField("max_level") and state.level > rule.max_level:
        return False
    stages = set(state.stage)
    if any(stage not in stages for stage in rule.stage):
        return False
    if any(stage in stages for stage in rule.not_stage):
        return False
    return True


def layer_included(state, layer):
    if len(layer.include) and len(layer.exclude):
        raise NetError(f"layer '{layer.name}': specify either include rules or exclude rules, not both")
    if len(layer.include):
        return any(rule_matches(state, rule) for rule in layer.include)
    return not any(rule_matches(state, rule) for rule in layer.exclude)


def filter_net(net, state):
    """A copy of `net` holding only the layers that `state` selects."""
    filtered = caffe_pb2.NetParameter()
    filtered.CopyFrom(net)
    del filtered.layer[:]
    for layer in net.layer:
        if layer_included(state, layer):
            filtered.layer.add().CopyFrom(layer)
    return filtered


def split_layer_name(blob, layer, top_index):
    return f"{blob}_{layer}_{top_index}_split"


def split_blob_name(blob, layer, top_index, split_index):
    return f"{blob}_{layer}_{top_index}_split_{split_index}"


def insert_splits(net):
    """Caffe's InsertSplits: a Split after every top read by more than one consumer.

    A top with a non-zero loss weight counts as one consumer more; its loss
    weight moves to the Split's first top.
    """
    producer_of = {}  # blob name -> (layer index, top index) of its latest producer
    consumers = {}  # (layer index, top index) -> number of consumers
    loss_weight = {}
    source_of = {}  # (layer index, bottom index) -> (layer index, top index)
    for i, layer in enumerate(net.layer):
        for j, name in enumerate(layer.bottom):
            if name not in producer_of:
                raise NetError(f"Unknown bottom blob '{name}' (layer '{layer.name}', bottom index {j})")
            source = producer_of[name]
            source_of[(i, j)] = source
            consumers[source] = consumers.get(source, 0) + 1
        for j, name in enumerate(layer.top):
            producer_of[name] = (i, j)
        for j in range(len(layer.top)):
            weight = layer.loss_weight[j] if j < len(layer.loss_weight) else 0.0
            loss_weight[(i, j)] = weight
            if weight:
                consumers[(i, j)] = consumers.get((i, j), 0) + 1

    result = caffe_pb2.NetParameter()
    result.CopyFrom(net)
    del result.layer[:]
    next_split = {}
    for i, layer in enumerate(net.layer):
        copy = result.layer.add()
        copy.CopyFrom(layer)
        for j, name in enumerate(layer.bottom):
            source = source_of[(i, j)]
            if consumers.get(source, 0) > 1:
                index = next_split.get(source, 0)
                next_split[source] = index + 1
                copy.bottom[j] = split_blob_name(name, net.layer[source[0]].name, source[1], index)
        for j, name in enumerate(layer.top):
            count = consumers.get((i, j), 0)
            if count <= 1:
                continue
            weight = loss_weight[(i, j)]
            split = result.layer.add()
            split.name = split_layer_name(name, layer.name, j)
            split.type = "Split"
            split.bottom.append(name)
            for k in range(count):
                split.top.append(split_blob_name(name, layer.name, j, k))
                if weight:
                    split.loss_weight.append(weight if k == 0 else 0.0)
            if weight:
                # The loss takes split top 0; consumers are numbered from 1.
                del copy.loss_weight[:]
                next_split[(i, j)] = 1
    return result


# -- shape-only builds without the data ---------------------------------------------

_DB_LAYERS = {"Data": "data_param", "ImageData": "image_data_param", "WindowData": "window_data_param",
              "HDF5Data": "hdf5_data_param", "AnnotatedData": "data_param",
              "DenseImageData": "dense_image_data_param", "ImageLabelmapData": "image_data_param"}
_DB_ONLY = {"Data", "WindowData", "AnnotatedData", "ImageData"}


def _label_shape(layer, shape):
    """The label top's shape beside a data top of `shape`."""
    if layer.type == "AnnotatedData":
        return (1, 1, 1, 8)  # SSD's boxes: (1, 1, boxes, 8), one row standing in for them
    if layer.type == "DenseImageData":  # label images: new size / label_divide_factor unless cropped
        p = layer.dense_image_data_param
        factor = 1 if p.crop_height else max(1, p.label_divide_factor)
        return (shape[0], 1, shape[2] // factor, shape[3] // factor)
    if layer.type == "ImageLabelmapData":
        return (shape[0], 1) + tuple(shape[2:])
    return (shape[0],)


def _declared_data_shape(layer):
    """(N, C, H, W) a data layer will produce, from its own settings, or a reason why unknown."""
    transform = layer.transform_param
    kind = layer.type
    batch = getattr(layer, _DB_LAYERS[kind]).batch_size
    if batch <= 0:
        return None, "batch_size is not set"
    if kind == "HDF5Data":
        return None, "HDF5 dataset shapes are only known from the files"
    if kind in ("ImageData", "ImageLabelmapData"):
        p = layer.image_data_param
        channels = 3 if p.is_color else 1
        size = (transform.crop_size,) * 2 if transform.crop_size else (p.new_height, p.new_width)
    elif kind == "DenseImageData":
        p = layer.dense_image_data_param
        channels = 3 if p.is_color else 1
        size = (p.crop_height, p.crop_width) if p.crop_height else (p.new_height, p.new_width)
    else:
        channels = len(transform.mean_value) if len(transform.mean_value) > 1 else None
        if transform.force_gray:
            channels = 1
        elif transform.force_color or kind == "WindowData":
            channels = 3
        size = (transform.crop_size,) * 2 if transform.crop_size else (0, 0)
        resize = transform.resize_param  # SSD's: a fixed size unless FIT_SMALL_SIZE
        if kind == "AnnotatedData" and not transform.crop_size and transform.HasField("resize_param") \
                and resize.resize_mode != caffe_pb2.ResizeParameter.FIT_SMALL_SIZE:
            size = (resize.height, resize.width)
    if not channels:
        return None, "the channel count is only known from the database"
    if not all(size):
        return None, "the image size is only known from the database (no crop_size)" if kind in _DB_ONLY \
            else "the image size is only known from the images (no new_height / new_width or crop)"
    return (batch, channels) + tuple(size), None


def stand_in_for_data(net, source_exists):
    """Replace data layers whose source is missing by Input layers of their declared shapes.

    Returns (net, reasons): reasons maps a layer name to why its shapes cannot
    be known; such a net cannot be shaped without its data.
    """
    result = caffe_pb2.NetParameter()
    result.CopyFrom(net)
    reasons = {}
    for layer in result.layer:
        if layer.type not in _DB_LAYERS:
            continue
        source = getattr(layer, _DB_LAYERS[layer.type]).source
        if source and source_exists(source):
            continue
        shape, reason = _declared_data_shape(layer)
        if shape is None:
            reasons[layer.name] = f"{layer.type} source '{source}' is absent and {reason}"
            continue
        tops = list(layer.top)
        label_shape = _label_shape(layer, shape)
        include = [rule for rule in layer.include]
        exclude = [rule for rule in layer.exclude]
        name = layer.name
        layer.Clear()
        layer.name, layer.type = name, "Input"
        layer.top.extend(tops)
        layer.include.extend(include)
        layer.exclude.extend(exclude)
        for index in range(len(tops)):
            layer.input_param.shape.add().dim.extend(shape if index == 0 else label_shape)
    return result, reasons
