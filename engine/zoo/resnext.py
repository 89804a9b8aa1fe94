"""ResNeXt-50 32x4d (Xie et al. 2017) in Kaiming He's Caffe ResNet layout.

A ResNet-50 whose bottleneck 3x3 convolution is split into 32 groups of
width 4 at the first stage (twice ResNet's inner width: 128, 256, 512,
1024), carrying the block's stride as in the paper's code. Every
convolution is bias-free and followed by BatchNorm + Scale; names follow the
MSRA ResNet release (res2a_branch2b, bn2a_branch2b, scale2a_branch2b).
"""

from .builder import AVE, BGR_MEAN, NetBuilder, imagenet_data
from .resnet import MSRA, conv_bn
from .spec import ZooNet, make_solver

CARDINALITY = 32
STAGES = (3, 4, 6, 3)


def resnext50_32x4d():
    b = NetBuilder("ResNeXt-50-32x4d")
    imagenet_data(b, 224, 32, mean_value=BGR_MEAN)
    b.conv("conv1", 64, 7, stride=2, pad=3, bottom="data", weight=MSRA, bias_term=False)
    b.batch_norm("bn_conv1")
    b.scale("scale_conv1")
    b.relu("conv1_relu")
    bottom = b.pool("pool1", 3, 2)
    for stage, count in enumerate(STAGES, start=2):
        inner, outputs = 128 * 2 ** (stage - 2), 256 * 2 ** (stage - 2)
        for index in range(count):
            tag = f"{stage}{'abcdefghijklmnopqrstuvwxyz'[index]}"
            stride = 2 if index == 0 and stage > 2 else 1
            shortcut = bottom
            if index == 0:
                shortcut = conv_bn(b, tag, "branch1", outputs, 1, stride, bottom, relu=False)
            top = conv_bn(b, tag, "branch2a", inner, 1, 1, bottom)
            top = conv_bn(b, tag, "branch2b", inner, 3, stride, top, group=CARDINALITY)
            top = conv_bn(b, tag, "branch2c", outputs, 1, 1, top, relu=False)
            b.eltwise_sum(f"res{tag}", [shortcut, top])
            b.relu(f"res{tag}_relu")
            bottom = f"res{tag}"
    b.pool("pool5", method=AVE, bottom=bottom, global_pooling=True)
    b.fc("fc1000", 1000, "pool5", weight=("gaussian", 0.01))
    b.accuracy("accuracy", "fc1000")
    b.accuracy("accuracy_top5", "fc1000", top_k=5)
    b.loss("loss", "fc1000")
    # The paper: batch 256 on 8 GPUs, lr 0.1 divided by 10 three times, weight decay 1e-4, momentum 0.9.
    solver = make_solver("resnext50_32x4d", base_lr=0.1, lr_policy="multistep", gamma=0.1,
                         stepvalue=[150000, 300000, 450000], max_iter=600000, test_iter=1000,
                         test_interval=10000, weight_decay=0.0001, iter_size=8)
    return ZooNet("resnext50_32x4d", "Xie et al. 2017, ResNeXt-50 (32x4d)", b.net, (1, 3, 224, 224), "fc1000",
                  solver, smoke_size=(2, 64), notes=[
                      "the 3x3 convolutions are grouped (32 groups) and carry the stride, as the paper's code",
                      "batch 256 = 32 x iter_size 8, as the paper's 8 GPUs of 32",
                  ])


NETS = [resnext50_32x4d]
