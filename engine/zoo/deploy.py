"""Derive a deploy net from a train_val net, the way Caffe's zoo deploy files differ.

A deploy net has an Input layer of the published input size in place of the
Data layers, no losses or accuracies, a Softmax "prob" on the classifier,
no fillers (the weights come from a .caffemodel) and BatchNorm set to use
its stored statistics. Branches that fed only the removed losses (GoogLeNet's
auxiliary classifiers) are pruned.
"""

from engine import caffe_pb2

_DROPPED = {"Data", "SoftmaxWithLoss", "Accuracy"}


def _needed(layers, outputs):
    """Indices of the layers that contribute to blobs `outputs` (in-place chains included)."""
    writers = {}  # blob -> index of the layer that last wrote it
    depends = []
    for index, layer in enumerate(layers):
        depends.append({writers[b] for b in layer.bottom if b in writers})
        for top in layer.top:
            writers[top] = index
    stack = [writers[name] for name in outputs]
    keep = set()
    while stack:
        index = stack.pop()
        if index not in keep:
            keep.add(index)
            stack.extend(depends[index])
    return keep


def _strip(layer):
    """Remove what only training needs: fillers and phase rules."""
    del layer.include[:]
    del layer.exclude[:]
    for field in ("convolution_param", "inner_product_param"):
        if layer.HasField(field):
            getattr(layer, field).ClearField("weight_filler")
            getattr(layer, field).ClearField("bias_filler")
    if layer.type == "Scale":
        layer.scale_param.ClearField("filler")
        layer.scale_param.ClearField("bias_filler")
    if layer.type == "BatchNorm":
        layer.batch_norm_param.use_global_stats = True


def make_deploy(train_val, input_shape, classifier):
    """A deploy NetParameter: Input(input_shape) → the layers feeding `classifier` → Softmax 'prob'."""
    kept = [layer for layer in train_val.layer
            if layer.type not in _DROPPED
            and not any(rule.phase == caffe_pb2.TRAIN for rule in layer.include)]
    keep = _needed(kept, [classifier])
    deploy = caffe_pb2.NetParameter(name=train_val.name)
    data = deploy.layer.add(name="data", type="Input")
    data.top.append("data")
    data.input_param.shape.add().dim.extend(input_shape)
    for index, layer in enumerate(kept):
        if index in keep:
            copy = deploy.layer.add()
            copy.CopyFrom(layer)
            _strip(copy)
    prob = deploy.layer.add(name="prob", type="Softmax")
    prob.bottom.append(classifier)
    prob.top.append("prob")
    return deploy
