"""MobileNet v1 (Howard et al. 2017) and v2 (Sandler et al. 2018) in shicai/MobileNet-Caffe's layout.

Caffe has no depthwise layer: a depthwise 3x3 convolution is a Convolution
with group = channels = num_output. Every convolution is bias-free and
followed by BatchNorm + Scale; the classifier is a 1x1 Convolution (fc7) on
global average pooling. Names are shicai's, so those .caffemodels load.
"""

from .builder import AVE, NetBuilder, imagenet_data
from .spec import ZooNet, make_solver

MSRA = ("msra",)
MEAN = (103.94, 116.78, 123.68)
SCALE = 0.017  # about 1/58.8, the inputs' standard deviation
DEPTHWISE_PARAMS = ((1, 0),)  # the papers put little or no weight decay on depthwise filters
SCALE_PARAMS = ((1, 0), (1, 0))


def _conv_bn(b, name, outputs, kernel, stride=1, group=1, bottom=None, bn_top=None, relu=None):
    """Convolution → name/bn → name/scale (→ ReLU `relu`); returns the normalised blob."""
    params = DEPTHWISE_PARAMS if group > 1 else None
    b.conv(name, outputs, kernel, stride=stride, pad=kernel // 2, group=group, bottom=bottom, weight=MSRA,
           bias_term=False, params=params)
    top = b.batch_norm(f"{name}/bn", top=bn_top)
    b.scale(f"{name}/scale", params=SCALE_PARAMS)
    if relu:
        b.relu(relu)
    return top


def _classifier(b, bottom):
    b.pool("pool6", method=AVE, bottom=bottom, global_pooling=True)
    b.conv("fc7", 1000, 1, bottom="pool6", weight=MSRA)
    b.accuracy("accuracy", "fc7")
    b.accuracy("accuracy_top5", "fc7", top_k=5)
    b.loss("loss", "fc7")


def _solver(name):
    """SGD with momentum for the papers' RMSProp (Caffe's RMSProp takes no momentum):
    lr 0.045 decayed by 0.98 every epoch (13,346 iterations of 96), weight decay 4e-5."""
    return make_solver(name, base_lr=0.045, lr_policy="step", gamma=0.98, stepsize=13346, max_iter=2000000,
                       test_iter=1000, test_interval=10000, weight_decay=0.00004)


# (tag, output channels, stride) of v1's thirteen depthwise-separable layers (the paper's table 1).
V1_LAYERS = [("2_1", 64, 1), ("2_2", 128, 2), ("3_1", 128, 1), ("3_2", 256, 2), ("4_1", 256, 1),
             ("4_2", 512, 2), ("5_1", 512, 1), ("5_2", 512, 1), ("5_3", 512, 1), ("5_4", 512, 1),
             ("5_5", 512, 1), ("5_6", 1024, 2), ("6", 1024, 1)]


def mobilenet_v1():
    b = NetBuilder("MOBILENET")
    imagenet_data(b, 224, 96, mean_value=MEAN, scale=SCALE)
    bottom = _conv_bn(b, "conv1", 32, 3, stride=2, bottom="data", relu="relu1")
    channels = 32
    for tag, outputs, stride in V1_LAYERS:
        _conv_bn(b, f"conv{tag}/dw", channels, 3, stride, group=channels, bottom=bottom, relu=f"relu{tag}/dw")
        bottom = _conv_bn(b, f"conv{tag}/sep", outputs, 1, relu=f"relu{tag}/sep")
        channels = outputs
    _classifier(b, bottom)
    return ZooNet("mobilenet_v1", "Howard et al. 2017, 1.0 MobileNet-224", b.net, (1, 3, 224, 224), "fc7",
                  _solver("mobilenet_v1"), smoke_size=(2, 64), notes=[
                      "depthwise = Convolution with group = channels; SGD + momentum for RMSProp",
                  ])


# (tag, expansion t, output channels, stride) of v2's seventeen bottlenecks (the paper's table 2).
V2_BLOCKS = [("2_1", 1, 16, 1), ("2_2", 6, 24, 2), ("3_1", 6, 24, 1), ("3_2", 6, 32, 2), ("4_1", 6, 32, 1),
             ("4_2", 6, 32, 1), ("4_3", 6, 64, 2), ("4_4", 6, 64, 1), ("4_5", 6, 64, 1), ("4_6", 6, 64, 1),
             ("4_7", 6, 96, 1), ("5_1", 6, 96, 1), ("5_2", 6, 96, 1), ("5_3", 6, 160, 2), ("6_1", 6, 160, 1),
             ("6_2", 6, 160, 1), ("6_3", 6, 320, 1)]


def _bottleneck(b, tag, bottom, channels, expansion, outputs, stride):
    """1x1 expand (ReLU) → 3x3 depthwise (ReLU) → 1x1 linear projection (+ the input when shapes agree)."""
    hidden = channels * expansion
    p = f"conv{tag}"
    top = _conv_bn(b, f"{p}/expand", hidden, 1, bottom=bottom, bn_top=f"{p}/expand/bn", relu=f"relu{tag}/expand")
    top = _conv_bn(b, f"{p}/dwise", hidden, 3, stride, group=hidden, bottom=top, bn_top=f"{p}/dwise/bn",
                   relu=f"relu{tag}/dwise")
    top = _conv_bn(b, f"{p}/linear", outputs, 1, bottom=top, bn_top=f"{p}/linear/bn")
    if stride == 1 and channels == outputs:
        return b.eltwise_sum(f"block_{tag}", [bottom, top])
    return top


def mobilenet_v2():
    b = NetBuilder("MOBILENET_V2")
    imagenet_data(b, 224, 96, mean_value=MEAN, scale=SCALE)
    bottom = _conv_bn(b, "conv1", 32, 3, stride=2, bottom="data", bn_top="conv1/bn", relu="relu1")
    channels = 32
    for tag, expansion, outputs, stride in V2_BLOCKS:
        bottom = _bottleneck(b, tag, bottom, channels, expansion, outputs, stride)
        channels = outputs
    bottom = _conv_bn(b, "conv6_4", 1280, 1, bottom=bottom, bn_top="conv6_4/bn", relu="relu6_4")
    _classifier(b, bottom)
    return ZooNet("mobilenet_v2", "Sandler et al. 2018, MobileNetV2 1.0-224", b.net, (1, 3, 224, 224), "fc7",
                  _solver("mobilenet_v2"), smoke_size=(2, 64), notes=[
                      "strides as the paper's table 2 (shicai's file downsamples at the 96-channel block "
                      "instead of the first 64-channel one); ReLU for ReLU6, as in shicai's port",
                      "the t=1 first bottleneck keeps its 32->32 expand convolution, as in shicai's port",
                  ])


NETS = [mobilenet_v1, mobilenet_v2]
