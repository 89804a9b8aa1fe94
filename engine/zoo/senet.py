"""SE-ResNet-50 (Hu et al. 2018) in the SENet authors' Caffe layout (hujie-frank/SENet).

A ResNet-50 bottleneck whose residual branch is rescaled per channel by a
squeeze-and-excitation gate (global average pooling → 1x1 down to C/16 →
ReLU → 1x1 up to C → Sigmoid) before the shortcut is added; the authors'
Axpy layer does scale * branch + shortcut in one step. The stride of a
downsampling block sits on its first 1x1 convolution, as in their file.
Names are theirs, so their .caffemodel loads.
"""

from .builder import AVE, BGR_MEAN, NetBuilder, imagenet_data
from .spec import ZooNet, make_solver

MSRA = ("msra",)
REDUCTION = 16
STAGES = (3, 4, 6, 3)


def _conv_bn(b, name, outputs, kernel, stride, bottom, relu=True):
    """name → name/bn → name/bn/scale (→ name/relu), all in place on the convolution's top."""
    b.conv(name, outputs, kernel, stride=stride, pad=kernel // 2, bottom=bottom, weight=MSRA, bias_term=False)
    b.batch_norm(f"{name}/bn")
    b.scale(f"{name}/bn/scale")
    if relu:
        b.relu(f"{name}/relu")
    return name


def _block(b, tag, bottom, width, stride, project):
    branch = _conv_bn(b, f"conv{tag}_1x1_reduce", width, 1, stride, bottom)
    branch = _conv_bn(b, f"conv{tag}_3x3", width, 3, 1, branch)
    branch = _conv_bn(b, f"conv{tag}_1x1_increase", 4 * width, 1, 1, branch, relu=False)
    b.pool(f"conv{tag}_global_pool", method=AVE, bottom=branch, global_pooling=True)
    b.conv(f"conv{tag}_1x1_down", 4 * width // REDUCTION, 1, bottom=f"conv{tag}_global_pool", weight=MSRA)
    b.relu(f"conv{tag}_1x1_down/relu")
    b.conv(f"conv{tag}_1x1_up", 4 * width, 1, bottom=f"conv{tag}_1x1_down", weight=MSRA)
    gate = b.sigmoid(f"conv{tag}_prob")
    shortcut = _conv_bn(b, f"conv{tag}_1x1_proj", 4 * width, 1, stride, bottom, relu=False) if project else bottom
    b.axpy(f"conv{tag}", gate, branch, shortcut)
    b.relu(f"conv{tag}/relu")
    return f"conv{tag}"


def se_resnet50():
    b = NetBuilder("SE-ResNet-50")
    imagenet_data(b, 224, 32, mean_value=BGR_MEAN)
    _conv_bn(b, "conv1/7x7_s2", 64, 7, 2, "data", relu=False)
    b.relu("conv1/relu_7x7_s2")
    bottom = b.pool("pool1/3x3_s2", 3, 2, bottom="conv1/7x7_s2")
    for stage, count in enumerate(STAGES, start=2):
        width = 64 * 2 ** (stage - 2)
        for index in range(1, count + 1):
            stride = 2 if index == 1 and stage > 2 else 1
            bottom = _block(b, f"{stage}_{index}", bottom, width, stride, project=index == 1)
    b.pool("pool5/7x7_s1", method=AVE, bottom=bottom, global_pooling=True)
    b.fc("classifier", 1000, "pool5/7x7_s1", weight=MSRA)
    b.accuracy("accuracy", "classifier")
    b.accuracy("accuracy_top5", "classifier", top_k=5)
    b.loss("loss", "classifier")
    # The paper: batch 1024, lr 0.6 divided by 10 every 30 epochs, 100 epochs, weight decay 1e-4,
    # momentum 0.9; here batch 256 (32 x iter_size 8) at the linearly scaled lr 0.15.
    solver = make_solver("se_resnet50", base_lr=0.15, lr_policy="step", gamma=0.1, stepsize=150000,
                         max_iter=500000, test_iter=1000, test_interval=10000, weight_decay=0.0001, iter_size=8)
    return ZooNet("se_resnet50", "Hu et al. 2018, SE-ResNet-50 (r = 16)", b.net, (1, 3, 224, 224), "classifier",
                  solver, smoke_size=(2, 64), notes=[
                      "pool5 is global average pooling (the authors' 7x7 window at 224x224)",
                      "batch 256 = 32 x iter_size 8 at the paper's lr scaled from batch 1024",
                  ])


NETS = [se_resnet50]
