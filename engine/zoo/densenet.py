"""DenseNet-121 (Huang et al. 2017) in shicai/DenseNet-Caffe's layout.

Each dense layer is BN-ReLU-Conv(1x1, 4k) then BN-ReLU-Conv(3x3, k) with
growth rate k = 32, its output concatenated to everything before it; a
transition halves the channels with a 1x1 convolution and the size with a
2x2 average pooling. BatchNorm + Scale carry PyTorch's BatchNorm2d; the
classifier is a 1x1 Convolution (fc6) on global average pooling. Names are
shicai's, so its .caffemodel loads.
"""

from .builder import AVE, NetBuilder, imagenet_data
from .spec import ZooNet, make_solver

MSRA = ("msra",)
MEAN = (103.94, 116.78, 123.68)
SCALE = 0.017
GROWTH = 32
BLOCKS = (6, 12, 24, 16)  # dense layers per block: DenseNet-121


def _bn_relu(b, name, relu, bottom):
    """name/bn (a new blob) → name/scale → ReLU, both in place: the pre-activation of a convolution."""
    top = b.batch_norm(f"{name}/bn", bottom=bottom, top=f"{name}/bn")
    b.scale(f"{name}/scale")
    b.relu(relu)
    return top


def densenet121():
    b = NetBuilder("DENSENET_121")
    imagenet_data(b, 224, 64, mean_value=MEAN, scale=SCALE)
    b.conv("conv1", 64, 7, stride=2, pad=3, bottom="data", weight=MSRA, bias_term=False)
    b.batch_norm("conv1/bn", bottom="conv1", top="conv1/bn")
    b.scale("conv1/scale")
    b.relu("relu1")
    # shicai's ceil_mode: false gives PyTorch's 56 x 56 here (Caffe's rounding would give 57).
    bottom = b.pool("pool1", 3, 2, pad=1, bottom="conv1/bn", ceil_mode=False)
    channels = 64
    for stage, count in enumerate(BLOCKS, start=2):
        for index in range(1, count + 1):
            tag = f"{stage}_{index}"
            top = _bn_relu(b, f"conv{tag}/x1", f"relu{tag}/x1", bottom)
            b.conv(f"conv{tag}/x1", 4 * GROWTH, 1, bottom=top, weight=MSRA, bias_term=False)
            top = _bn_relu(b, f"conv{tag}/x2", f"relu{tag}/x2", f"conv{tag}/x1")
            b.conv(f"conv{tag}/x2", GROWTH, 3, pad=1, bottom=top, weight=MSRA, bias_term=False)
            bottom = b.concat(f"concat_{tag}", [bottom, f"conv{tag}/x2"])
            channels += GROWTH
        top = _bn_relu(b, f"conv{stage}_blk", f"relu{stage}_blk", bottom)
        if stage == 2 + len(BLOCKS) - 1:
            bottom = top
            break
        channels //= 2
        b.conv(f"conv{stage}_blk", channels, 1, bottom=top, weight=MSRA, bias_term=False)
        bottom = b.pool(f"pool{stage}", 2, 2, method=AVE, bottom=f"conv{stage}_blk")
    b.pool("pool5", method=AVE, bottom=bottom, global_pooling=True)
    b.conv("fc6", 1000, 1, bottom="pool5", weight=MSRA)
    b.accuracy("accuracy", "fc6")
    b.accuracy("accuracy_top5", "fc6", top_k=5)
    b.loss("loss", "fc6")
    # The paper: batch 256, lr 0.1 divided by 10 at epochs 30 and 60 of 90 (5,005 iterations an epoch),
    # weight decay 1e-4, Nesterov momentum 0.9. Batch 64 x iter_size 4 keeps 256 images a step.
    solver = make_solver("densenet121", base_lr=0.1, lr_policy="multistep", gamma=0.1,
                         stepvalue=[150150, 300300], max_iter=450450, test_iter=1000, test_interval=10000,
                         weight_decay=0.0001, iter_size=4)
    solver.type = "Nesterov"
    return ZooNet("densenet121", "Huang et al. 2017, DenseNet-121 (k = 32)", b.net, (1, 3, 224, 224), "fc6",
                  solver, smoke_size=(2, 64), notes=[
                      "pool1 has the fork field ceil_mode: false, as shicai's file (56 x 56 after it)",
                      "batch 256 = 64 x iter_size 4",
                  ])


NETS = [densenet121]
