"""GoogLeNet (Szegedy et al. 2014) in BVLC's bvlc_googlenet layout.

Nine inception modules of four branches (1x1; 1x1 then 3x3; 1x1 then 5x5;
3x3 max pool then 1x1) joined by Concat, two auxiliary classifiers on 4a and
4d weighted 0.3 during training, and a dropout-0.4 linear classifier on
global average pooling. Names are bvlc_googlenet's, so its weights load.
"""

from .builder import AVE, BGR_MEAN, NetBuilder, imagenet_data
from .spec import ZooNet, make_solver

XAVIER = ("xavier",)
BIAS = ("constant", 0.2)

# (name, #1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj): the paper's table 1.
INCEPTION = {
    "3a": (64, 96, 128, 16, 32, 32), "3b": (128, 128, 192, 32, 96, 64),
    "4a": (192, 96, 208, 16, 48, 64), "4b": (160, 112, 224, 24, 64, 64),
    "4c": (128, 128, 256, 24, 64, 64), "4d": (112, 144, 288, 32, 64, 64),
    "4e": (256, 160, 320, 32, 128, 128), "5a": (256, 160, 320, 32, 128, 128),
    "5b": (384, 192, 384, 48, 128, 128),
}


def _conv_relu(b, name, relu, outputs, kernel, bottom, stride=1, pad=0):
    top = b.conv(name, outputs, kernel, stride=stride, pad=pad, bottom=bottom, weight=XAVIER, bias=BIAS)
    b.relu(relu)
    return top


def inception(b, tag, bottom):
    n1, r3, n3, r5, n5, proj = INCEPTION[tag]
    p = f"inception_{tag}/"
    branches = [_conv_relu(b, p + "1x1", p + "relu_1x1", n1, 1, bottom)]
    _conv_relu(b, p + "3x3_reduce", p + "relu_3x3_reduce", r3, 1, bottom)
    branches.append(_conv_relu(b, p + "3x3", p + "relu_3x3", n3, 3, p + "3x3_reduce", pad=1))
    _conv_relu(b, p + "5x5_reduce", p + "relu_5x5_reduce", r5, 1, bottom)
    branches.append(_conv_relu(b, p + "5x5", p + "relu_5x5", n5, 5, p + "5x5_reduce", pad=2))
    b.pool(p + "pool", 3, 1, pad=1, bottom=bottom)
    branches.append(_conv_relu(b, p + "pool_proj", p + "relu_pool_proj", proj, 1, p + "pool"))
    return b.concat(p + "output", branches)


def auxiliary(b, tag, bottom):
    """5x5/3 average pooling, 1x1 conv 128, FC 1024, dropout 0.7, FC 1000, loss weight 0.3."""
    b.pool(f"{tag}/ave_pool", 5, 3, method=AVE, bottom=bottom)
    _conv_relu(b, f"{tag}/conv", f"{tag}/relu_conv", 128, 1, f"{tag}/ave_pool")
    b.fc(f"{tag}/fc", 1024, weight=XAVIER, bias=BIAS)
    b.relu(f"{tag}/relu_fc")
    b.dropout(f"{tag}/drop_fc", 0.7)
    b.fc(f"{tag}/classifier", 1000, f"{tag}/fc", weight=XAVIER)
    b.loss(f"{tag}/loss", f"{tag}/classifier", top=f"{tag}/{tag}", weight=0.3)
    b.accuracy(f"{tag}/top-1", f"{tag}/classifier")
    b.accuracy(f"{tag}/top-5", f"{tag}/classifier", top_k=5)


def googlenet():
    b = NetBuilder("GoogleNet")
    imagenet_data(b, 224, 32, mean_value=BGR_MEAN)
    _conv_relu(b, "conv1/7x7_s2", "conv1/relu_7x7", 64, 7, "data", stride=2, pad=3)
    b.pool("pool1/3x3_s2", 3, 2)
    b.lrn("pool1/norm1")
    _conv_relu(b, "conv2/3x3_reduce", "conv2/relu_3x3_reduce", 64, 1, "pool1/norm1")
    _conv_relu(b, "conv2/3x3", "conv2/relu_3x3", 192, 3, "conv2/3x3_reduce", pad=1)
    b.lrn("conv2/norm2")
    bottom = b.pool("pool2/3x3_s2", 3, 2)
    for tag in ("3a", "3b", "4a", "4b", "4c", "4d", "4e", "5a", "5b"):
        bottom = inception(b, tag, bottom)
        if tag == "4a":
            auxiliary(b, "loss1", bottom)
        elif tag == "4d":
            auxiliary(b, "loss2", bottom)
        elif tag in ("3b", "4e"):
            bottom = b.pool(f"pool{3 if tag == '3b' else 4}/3x3_s2", 3, 2, bottom=bottom)
    b.pool("pool5/7x7_s1", method=AVE, bottom=bottom, global_pooling=True)
    b.dropout("pool5/drop_7x7_s1", 0.4)
    b.fc("loss3/classifier", 1000, "pool5/7x7_s1", weight=XAVIER)
    b.loss("loss3/loss3", "loss3/classifier", weight=1)
    b.accuracy("loss3/top-1", "loss3/classifier")
    b.accuracy("loss3/top-5", "loss3/classifier", top_k=5)
    # bvlc_googlenet's solver: the paper's 4% decrease every 8 epochs.
    solver = make_solver("googlenet", base_lr=0.01, lr_policy="step", gamma=0.96, stepsize=320000,
                         max_iter=10000000, test_iter=1000, test_interval=4000, weight_decay=0.0002,
                         display=40, average_loss=40, snapshot=40000, test_initialization=False)
    return ZooNet("googlenet", "Szegedy et al. 2014 (bvlc_googlenet layout)", b.net, (10, 3, 224, 224),
                  "loss3/classifier", solver, smoke_size=(2, 96), notes=[
                      "pool5/7x7_s1 is global average pooling (7x7 at 224x224), so smaller inputs also run",
                  ])


NETS = [googlenet]
