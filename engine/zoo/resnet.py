"""ResNet-18 and ResNet-50 (He et al. 2015) in Kaiming He's Caffe layout.

Every convolution is followed by BatchNorm (statistics) and Scale (learned
scale and shift); a block adds its residual branch to the shortcut with an
Eltwise SUM and applies ReLU. Shortcuts are identities except where the
shape changes, where a 1x1 projection (branch1) with the block's stride is
used (the paper's option B). Names follow the MSRA release
(res2a_branch2a, bn2a_branch2a, scale2a_branch2a, res2a, res2a_relu), so
its ResNet-50 .caffemodel loads into this net.
"""

from .builder import AVE, BGR_MEAN, NetBuilder, imagenet_data
from .spec import ZooNet, make_solver

MSRA = ("msra",)


def conv_bn(b, tag, branch, outputs, kernel, stride, bottom, relu=True, group=1):
    """res{tag}_{branch} → bn{tag}_{branch} → scale{tag}_{branch} (→ ReLU), Kaiming He's names."""
    name = f"res{tag}_{branch}"
    b.conv(name, outputs, kernel, stride=stride, pad=kernel // 2, group=group, bottom=bottom, weight=MSRA,
           bias_term=False)
    b.batch_norm(f"bn{tag}_{branch}")
    b.scale(f"scale{tag}_{branch}")
    if relu:
        b.relu(f"{name}_relu")
    return name


def _block(b, tag, bottom, widths, stride, project):
    """One residual block: the branch2 convolutions given by `widths` [(outputs, kernel), ...]."""
    shortcut = bottom
    if project:
        shortcut = conv_bn(b, tag, "branch1", widths[-1][0], 1, stride, bottom, relu=False)
    top = bottom
    for index, (outputs, kernel) in enumerate(widths):
        last = index == len(widths) - 1
        # Kaiming's layout strides the first convolution of the branch.
        top = conv_bn(b, tag, "branch2" + "abc"[index], outputs, kernel, stride if index == 0 else 1, top,
                       relu=not last)
    b.eltwise_sum(f"res{tag}", [shortcut, top])
    b.relu(f"res{tag}_relu")
    return f"res{tag}"


def _resnet(name, net_name, depth_per_stage, bottleneck):
    b = NetBuilder(net_name)
    imagenet_data(b, 224, 32, mean_value=BGR_MEAN)
    b.conv("conv1", 64, 7, stride=2, pad=3, bottom="data", weight=MSRA)  # biased, as in the MSRA release
    b.batch_norm("bn_conv1")
    b.scale("scale_conv1")
    b.relu("conv1_relu")
    bottom = b.pool("pool1", 3, 2)
    channels = 64
    for stage, count in enumerate(depth_per_stage, start=2):
        width = 64 * 2 ** (stage - 2)
        widths = [(width, 1), (width, 3), (4 * width, 1)] if bottleneck else [(width, 3), (width, 3)]
        for index in range(count):
            stride = 2 if index == 0 and stage > 2 else 1
            project = index == 0 and (stride != 1 or channels != widths[-1][0])
            bottom = _block(b, f"{stage}{'abcdefghijklmnopqrstuvwxyz'[index]}", bottom, widths, stride, project)
            channels = widths[-1][0]
    b.pool("pool5", method=AVE, bottom=bottom, global_pooling=True)
    b.fc("fc1000", 1000, "pool5", weight=("gaussian", 0.01))
    b.accuracy("accuracy", "fc1000")
    b.accuracy("accuracy_top5", "fc1000", top_k=5)
    b.loss("loss", "fc1000")
    # The paper: batch 256 (32 per GPU on 8 GPUs: iter_size 8 keeps BatchNorm's 32-image statistics),
    # lr 0.1 divided by 10 at plateaus, 60e4 iterations, weight decay 1e-4, momentum 0.9.
    solver = make_solver(name, base_lr=0.1, lr_policy="multistep", gamma=0.1,
                         stepvalue=[150000, 300000, 450000], max_iter=600000, test_iter=1000,
                         test_interval=10000, weight_decay=0.0001, iter_size=8)
    return b.net, solver


_NOTES = ["pool5 is global average pooling (7x7 at 224x224), so smaller inputs also run",
          "batch 256 = 32 x iter_size 8, as the paper's 8 GPUs of 32"]


def resnet18():
    net, solver = _resnet("resnet18", "ResNet-18", (2, 2, 2, 2), bottleneck=False)
    return ZooNet("resnet18", "He et al. 2015, 18 layers (basic blocks)", net, (1, 3, 224, 224), "fc1000",
                  solver, smoke_size=(2, 64), notes=list(_NOTES))


def resnet50():
    net, solver = _resnet("resnet50", "ResNet-50", (3, 4, 6, 3), bottleneck=True)
    return ZooNet("resnet50", "He et al. 2015, 50 layers (bottlenecks; MSRA Caffe layout)", net,
                  (1, 3, 224, 224), "fc1000", solver, smoke_size=(2, 64), notes=list(_NOTES))


NETS = [resnet18, resnet50]
