"""ShuffleNet v2 1x (Ma et al. 2018) in farmingyard/ShuffleNet's Caffe layout.

A unit splits the channels in two (Slice), transforms one half with
1x1 → depthwise 3x3 → 1x1 and concatenates it back to the other, then
shuffles the channels between the two groups (ShuffleChannel). A
downsampling unit feeds both branches the whole input, each with a stride-2
depthwise convolution. Depthwise convolutions are the fork's
ConvolutionDepthwise layer. Names are farmingyard's, so its .caffemodel loads.
"""

from .builder import AVE, BGR_MEAN, NetBuilder, imagenet_data
from .spec import ZooNet, make_solver

MSRA = ("msra",)
STAGES = ((116, 4), (232, 8), (464, 4))  # (output channels, units) of stages 2-4 at 1x
DEPTHWISE = "ConvolutionDepthwise"


def _conv_bn(b, name, outputs, kernel, bottom, stride=1, relu=True, depthwise=False):
    """name → name_bn → name_scale (→ name_relu), in place on the convolution's top."""
    b.conv(name, outputs, kernel, stride=stride, pad=kernel // 2, bottom=bottom, weight=MSRA, bias_term=False,
           type_=DEPTHWISE if depthwise else "Convolution")
    b.batch_norm(f"{name}_bn")
    b.scale(f"{name}_scale")
    if relu:
        b.relu(f"{name}_relu")
    return name


def _branch(b, unit, bottom, channels, stride):
    """1x1 (ReLU) → depthwise 3x3 → 1x1 (ReLU): branch{unit}_2."""
    p = f"branch{unit}_2"
    top = _conv_bn(b, f"{p}_conv1", channels, 1, bottom)
    top = _conv_bn(b, f"{p}_conv2", channels, 3, top, stride=stride, relu=False, depthwise=True)
    return _conv_bn(b, f"{p}_conv3", channels, 1, top)


def shufflenet_v2_1x():
    b = NetBuilder("shufflenet_v2")
    imagenet_data(b, 224, 64, mean_value=BGR_MEAN, scale=0.017)
    _conv_bn(b, "conv1", 24, 3, "data", stride=2)
    bottom = b.pool("pool1", 3, 2, bottom="conv1")
    channels, unit = 24, 0
    for outputs, count in STAGES:
        half = outputs // 2
        for index in range(count):
            unit += 1
            if index == 0:
                left = _conv_bn(b, f"branch{unit}_1_conv1", channels, 3, bottom, stride=2, relu=False,
                                depthwise=True)
                left = _conv_bn(b, f"branch{unit}_1_conv2", half, 1, left)
                right = _branch(b, unit, bottom, half, 2)
            else:
                left, rest = b.slice(f"slice{unit}", bottom, [f"branch{unit}_1", f"branch{unit}_2"], half)
                right = _branch(b, unit, rest, half, 1)
            b.concat(f"concat{unit}", [left, right])
            bottom = b.shuffle_channel(f"shuffle{unit}", 2)
        channels = outputs
    _conv_bn(b, "conv5", 1024, 1, bottom)
    b.pool("pool_ave", method=AVE, bottom="conv5", global_pooling=True)
    b.conv("fc1000", 1000, 1, bottom="pool_ave", weight=MSRA)
    b.accuracy("accuracy", "fc1000")
    b.accuracy("accuracy_top5", "fc1000", top_k=5)
    b.loss("loss", "fc1000")
    # The paper: batch 1024 on 4 GPUs, lr 0.5 decayed linearly to 0 over 300k iterations, weight decay 4e-5.
    solver = make_solver("shufflenet_v2_1x", base_lr=0.5, lr_policy="poly", power=1.0, max_iter=300000,
                         test_iter=1000, test_interval=10000, weight_decay=0.00004, iter_size=16)
    return ZooNet("shufflenet_v2_1x", "Ma et al. 2018, ShuffleNet V2 1x", b.net, (1, 3, 224, 224), "fc1000",
                  solver, smoke_size=(2, 64), notes=[
                      "depthwise convolutions are ConvolutionDepthwise layers, as farmingyard's file",
                      "batch 1024 = 64 x iter_size 16, lr decayed linearly (poly, power 1)",
                  ])


NETS = [shufflenet_v2_1x]
