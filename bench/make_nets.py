"""Writes the benchmark's training nets to bench/nets/*.prototxt.

The nets are the well-known architectures (examples/mnist LeNet,
examples/cifar10 cifar10_quick, models/bvlc_reference_caffenet, and a
ResNet-18 in the BatchNorm + Scale style of the MSRA Caffe releases) with
Input layers in place of Data layers, so that a benchmark needs no database:
the batch shape is part of the file. They are generated rather than
hand-written so that ResNet-18's 60-odd layers stay consistent; run
`python3 bench/make_nets.py` after changing this file.
"""

import sys
from pathlib import Path

from google.protobuf import text_format

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine import caffe_pb2  # noqa: E402

NETS_DIR = Path(__file__).resolve().parent / "nets"
P = caffe_pb2.PoolingParameter


class Builder:
    """Appends layers to a NetParameter; each helper returns the top's name."""

    def __init__(self, name):
        self.net = caffe_pb2.NetParameter(name=name)

    def layer(self, name, type_, bottoms, tops):
        layer = self.net.layer.add(name=name, type=type_)
        layer.bottom.extend(bottoms)
        layer.top.extend(tops)
        return layer

    def inputs(self, data_shape):
        layer = self.layer("data", "Input", [], ["data", "label"])
        layer.input_param.shape.add().dim.extend(data_shape)
        layer.input_param.shape.add().dim.extend(data_shape[:1])
        return "data"

    @staticmethod
    def _learned(layer, bias, decay=True):
        """Caffe's usual multipliers: weights lr 1, biases lr 2 without decay."""
        layer.param.add(lr_mult=1, decay_mult=1)
        if bias:
            layer.param.add(lr_mult=2, decay_mult=0 if decay else 1)

    def conv(self, name, bottom, num_output, kernel, stride=1, pad=0, group=1, bias=True,
             filler="xavier", std=0.01, bias_value=0.0):
        layer = self.layer(name, "Convolution", [bottom], [name])
        self._learned(layer, bias)
        p = layer.convolution_param
        p.num_output, p.group, p.bias_term = num_output, group, bias
        p.kernel_size.append(kernel)
        if stride != 1:
            p.stride.append(stride)
        if pad:
            p.pad.append(pad)
        p.weight_filler.type = filler
        if filler == "gaussian":
            p.weight_filler.std = std
        if bias:
            p.bias_filler.type = "constant"
            p.bias_filler.value = bias_value
        return name

    def pool(self, name, bottom, method, kernel=0, stride=1, global_pooling=False):
        layer = self.layer(name, "Pooling", [bottom], [name])
        p = layer.pooling_param
        p.pool = method
        if global_pooling:
            p.global_pooling = True
        else:
            p.kernel_size, p.stride = kernel, stride
        return name

    def relu(self, name, blob):
        self.layer(name, "ReLU", [blob], [blob])
        return blob

    def lrn(self, name, bottom):
        p = self.layer(name, "LRN", [bottom], [name]).lrn_param
        p.local_size, p.alpha, p.beta = 5, 0.0001, 0.75
        return name

    def fc(self, name, bottom, num_output, filler="xavier", std=0.005, bias_value=0.0):
        layer = self.layer(name, "InnerProduct", [bottom], [name])
        self._learned(layer, True)
        p = layer.inner_product_param
        p.num_output = num_output
        p.weight_filler.type = filler
        if filler == "gaussian":
            p.weight_filler.std = std
        p.bias_filler.type = "constant"
        p.bias_filler.value = bias_value
        return name

    def dropout(self, name, blob, ratio=0.5):
        self.layer(name, "Dropout", [blob], [blob]).dropout_param.dropout_ratio = ratio
        return blob

    def bn_scale(self, suffix, blob):
        """BatchNorm (statistics are not learned: lr_mult 0) then a learned Scale with bias, in place."""
        bn = self.layer("bn" + suffix, "BatchNorm", [blob], [blob])
        for _ in range(3):
            bn.param.add(lr_mult=0, decay_mult=0)
        scale = self.layer("scale" + suffix, "Scale", [blob], [blob])
        scale.scale_param.bias_term = True
        return blob

    def loss(self, bottom):
        self.layer("loss", "SoftmaxWithLoss", [bottom, "label"], ["loss"])


def lenet(batch=64):
    b = Builder("LeNet")
    x = b.inputs([batch, 1, 28, 28])
    x = b.conv("conv1", x, 20, 5)
    x = b.pool("pool1", x, P.MAX, 2, 2)
    x = b.conv("conv2", x, 50, 5)
    x = b.pool("pool2", x, P.MAX, 2, 2)
    x = b.relu("relu1", b.fc("ip1", x, 500))
    b.loss(b.fc("ip2", x, 10))
    return b.net


def cifar10_quick(batch=100):
    b = Builder("CIFAR10_quick")
    x = b.inputs([batch, 3, 32, 32])
    x = b.conv("conv1", x, 32, 5, pad=2, filler="gaussian", std=0.0001)
    x = b.relu("relu1", b.pool("pool1", x, P.MAX, 3, 2))
    x = b.relu("relu2", b.conv("conv2", x, 32, 5, pad=2, filler="gaussian", std=0.01))
    x = b.pool("pool2", x, P.AVE, 3, 2)
    x = b.relu("relu3", b.conv("conv3", x, 64, 5, pad=2, filler="gaussian", std=0.01))
    x = b.pool("pool3", x, P.AVE, 3, 2)
    x = b.fc("ip1", x, 64, filler="gaussian", std=0.1)
    b.loss(b.fc("ip2", x, 10, filler="gaussian", std=0.1))
    return b.net


def caffenet(batch=16, size=227):
    b = Builder("CaffeNet")
    x = b.inputs([batch, 3, size, size])
    x = b.relu("relu1", b.conv("conv1", x, 96, 11, stride=4, filler="gaussian"))
    x = b.lrn("norm1", b.pool("pool1", x, P.MAX, 3, 2))
    x = b.relu("relu2", b.conv("conv2", x, 256, 5, pad=2, group=2, filler="gaussian", bias_value=1))
    x = b.lrn("norm2", b.pool("pool2", x, P.MAX, 3, 2))
    x = b.relu("relu3", b.conv("conv3", x, 384, 3, pad=1, filler="gaussian"))
    x = b.relu("relu4", b.conv("conv4", x, 384, 3, pad=1, group=2, filler="gaussian", bias_value=1))
    x = b.relu("relu5", b.conv("conv5", x, 256, 3, pad=1, group=2, filler="gaussian", bias_value=1))
    x = b.pool("pool5", x, P.MAX, 3, 2)
    x = b.dropout("drop6", b.relu("relu6", b.fc("fc6", x, 4096, filler="gaussian", bias_value=1)))
    x = b.dropout("drop7", b.relu("relu7", b.fc("fc7", x, 4096, filler="gaussian", bias_value=1)))
    b.loss(b.fc("fc8", x, 1000, filler="gaussian", std=0.01))
    return b.net


def _basic_block(b, x, stage, block, channels, stride):
    """Two 3x3 convolutions with BatchNorm + Scale; a 1x1 projection where the shape changes."""
    tag = f"{stage}{block}"
    shortcut = x
    if stride != 1 or block == "a" and stage != 2:
        shortcut = b.conv(f"res{tag}_branch1", x, channels, 1, stride=stride, bias=False, filler="msra")
        b.bn_scale(f"{tag}_branch1", shortcut)
    y = b.conv(f"res{tag}_branch2a", x, channels, 3, stride=stride, pad=1, bias=False, filler="msra")
    y = b.relu(f"res{tag}_branch2a_relu", b.bn_scale(f"{tag}_branch2a", y))
    y = b.conv(f"res{tag}_branch2b", y, channels, 3, pad=1, bias=False, filler="msra")
    y = b.bn_scale(f"{tag}_branch2b", y)
    b.layer(f"res{tag}", "Eltwise", [shortcut, y], [f"res{tag}"])
    return b.relu(f"res{tag}_relu", f"res{tag}")


def resnet18(batch=8, size=112):
    b = Builder("ResNet-18")
    x = b.inputs([batch, 3, size, size])
    x = b.conv("conv1", x, 64, 7, stride=2, pad=3, bias=False, filler="msra")
    x = b.relu("conv1_relu", b.bn_scale("_conv1", x))
    x = b.pool("pool1", x, P.MAX, 3, 2)
    for stage, channels in ((2, 64), (3, 128), (4, 256), (5, 512)):
        for block in "ab":
            stride = 2 if block == "a" and stage != 2 else 1
            x = _basic_block(b, x, stage, block, channels, stride)
    x = b.pool("pool5", x, P.AVE, global_pooling=True)
    b.loss(b.fc("fc1000", x, 1000, filler="msra"))
    return b.net


NETS = {"lenet": lenet, "cifar10_quick": cifar10_quick, "caffenet": caffenet, "resnet18": resnet18}


def main():
    NETS_DIR.mkdir(exist_ok=True)
    for name, build in NETS.items():
        path = NETS_DIR / f"{name}.prototxt"
        path.write_text(text_format.MessageToString(build()))
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
