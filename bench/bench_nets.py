"""The benchmark's nets: where their prototxt comes from, their weights, their inputs.

A benchmark net is a TRAIN-phase net fed by Input layers (`data` and a
`label` read by a SoftmaxWithLoss). The zoo's `nets/<name>/deploy.prototxt`
is preferred when it exists: its Input gets the benchmark's batch and image
size and a label, and its final Softmax becomes SoftmaxWithLoss. Otherwise
the generated bench/nets/<name>.prototxt is used (see make_nets.py).

Weights are drawn here, not by the prototxt's fillers (deploy files have
none): He-scaled uniform values keep activations of order one through deep
nets, and BatchNorm gets mean 0 / variance 1, so the forward check compares
meaningful numbers and neither framework meets denormals.
"""

from pathlib import Path

import numpy as np

from engine import caffe_pb2, formats

ROOT = Path(__file__).resolve().parents[1]
BENCH_NETS = Path(__file__).resolve().parent / "nets"

# name -> (batch, image size, zoo folder names to try)
NETS = {
    "lenet": (64, 28, ("lenet", "mnist_lenet")),
    "cifar10_quick": (100, 32, ("cifar10_quick",)),
    "caffenet": (16, 227, ("caffenet", "bvlc_reference_caffenet")),
    "resnet18": (8, 112, ("resnet18", "resnet-18", "ResNet-18")),
    "mobilenet_v1": (8, 224, ("mobilenet_v1", "mobilenet")),
}

# The GPU benchmark's own table (gpu_train_step.py), same layout: the batches, at which a
# GPU is busy, while the CPU entries above stay small enough for a CPU.
GPU_NETS = {
    "caffenet": (256, 227, ("caffenet", "bvlc_reference_caffenet")),
    "vgg16": (32, 224, ("vgg16", "VGG_ILSVRC_16_layers")),
    "resnet50": (64, 224, ("resnet50", "resnet-50", "ResNet-50")),
    "mobilenet_v1": (64, 224, ("mobilenet_v1", "mobilenet")),
}


def net_source(name, table=NETS):
    """The prototxt path a benchmark net is built from."""
    if name not in table:
        raise KeyError(f"unknown benchmark net '{name}' (known: {', '.join(table)})")
    for folder in table[name][2]:
        deploy = ROOT / "nets" / folder / "deploy.prototxt"
        if deploy.exists():
            return deploy
    return BENCH_NETS / f"{name}.prototxt"


def training_param(name, batch=None, size=None, table=NETS):
    """(NetParameter of the training net, source path).

    `batch` and `size` default to the table's; they apply to zoo deploy nets
    only (a generated bench/nets prototxt keeps its own Input shapes).
    """
    default_batch, default_size, _ = table[name]
    batch = default_batch if batch is None else batch
    size = default_size if size is None else size
    source = net_source(name, table)
    param = formats.read_net(str(source))
    if source.parent != BENCH_NETS:
        param = training_from_deploy(param, batch, size)
    return param, source


def training_from_deploy(deploy, batch, size):
    """A deploy net made trainable: batch-sized Input with a label, Softmax -> SoftmaxWithLoss,
    BatchNorm on batch statistics.

    A final average pooling becomes global, as the image size may differ from
    the one its kernel was written for (ResNet's pool5 at 112 px).
    """
    net = caffe_pb2.NetParameter()
    net.CopyFrom(deploy)
    inputs = [layer for layer in net.layer if layer.type == "Input"]
    if not inputs:
        raise ValueError("deploy net has no Input layer")
    shape = inputs[0].input_param.shape[0]
    dims = list(shape.dim)
    dims[0] = batch
    if len(dims) == 4:
        dims[2:] = [size, size]
    del shape.dim[:]
    shape.dim.extend(dims)
    label = caffe_pb2.LayerParameter(name="label", type="Input", top=["label"])
    label.input_param.shape.add().dim.append(batch)
    net.layer.insert(list(net.layer).index(inputs[0]) + 1, label)
    softmax = [layer for layer in net.layer if layer.type == "Softmax"]
    if not softmax:
        raise ValueError("deploy net has no final Softmax to turn into a loss")
    last = softmax[-1]
    last.type = "SoftmaxWithLoss"
    last.bottom.append("label")
    del last.top[:]
    last.top.append("loss")
    for layer in net.layer:
        if layer.type == "BatchNorm":
            # Deploy files freeze the statistics; training uses the batch's (Caffe's TRAIN default).
            layer.batch_norm_param.ClearField("use_global_stats")
    pools = [layer for layer in net.layer if layer.type == "Pooling"]
    if pools and pools[-1].pooling_param.pool == caffe_pb2.PoolingParameter.AVE:
        p = pools[-1].pooling_param
        p.ClearField("kernel_size")
        p.ClearField("stride")
        p.ClearField("pad")
        p.global_pooling = True
    return net


def without_dropout(param):
    """The same net with its Dropout layers removed (their masks are random), for the gradient check."""
    net = caffe_pb2.NetParameter()
    net.CopyFrom(param)
    del net.layer[:]
    renamed = {}
    for layer in param.layer:
        if layer.type == "Dropout":
            renamed[layer.top[0]] = renamed.get(layer.bottom[0], layer.bottom[0])
            continue
        copy = net.layer.add()
        copy.CopyFrom(layer)
        for index, name in enumerate(copy.bottom):
            copy.bottom[index] = renamed.get(name, name)
    return net


def loss_layer(param):
    losses = [layer for layer in param.layer if layer.type == "SoftmaxWithLoss"]
    if not losses:
        raise ValueError(f"net '{param.name}' has no SoftmaxWithLoss layer")
    return losses[-1]


def init_weights(net, seed=0):
    """Deterministic He-scaled values in every parameter blob of an engine Net."""
    rng = np.random.default_rng(seed)
    for layer in net.layers:
        for index, blob in enumerate(layer.blobs):
            shape = blob.shape
            if layer.type == "BatchNorm":
                values = np.full(shape, 0.0 if index == 0 else 1.0)
            elif len(shape) > 1:
                # He scale (variance 2 / fan_in) before ReLUs; half that for the classifiers.
                fan_in = max(1, blob.count // shape[0])
                gain = 3.0 if layer.type == "InnerProduct" else 6.0
                values = rng.uniform(-1, 1, shape) * np.sqrt(gain / fan_in)
            elif layer.type == "Scale" and index == 0:
                values = 1.0 + 0.1 * rng.uniform(-1, 1, shape)
            else:
                values = 0.1 * rng.uniform(-1, 1, shape)
            blob.data[...] = values.astype(np.float32)


def make_inputs(net, param, seed=1, batch=None):
    """Input values for every Input blob: labels for the loss's second bottom, N(0, 1) data otherwise.

    `batch` replaces the net's leading dimension, so that a batch-1 net can
    stand in for a large one whose blobs are not worth allocating.
    """
    rng = np.random.default_rng(seed)
    loss = loss_layer(param)
    label_name = loss.bottom[1]
    classes = net.blobs[loss.bottom[0]].shape[1]
    inputs = {}
    for name in net.inputs:
        shape = net.blobs[name].shape
        if batch is not None:
            shape = (batch,) + tuple(shape[1:])
        if name == label_name:
            inputs[name] = rng.integers(0, classes, shape).astype(np.float32)
        else:
            inputs[name] = rng.standard_normal(shape).astype(np.float32)
    return inputs


def read_weights(path):
    """layer name -> list of float32 arrays from the HDF5 weights the check worker wrote."""
    return {name: [np.asarray(b, dtype=np.float32) for b in blobs]
            for name, blobs in formats.read_weights(path).items()}
