"""The plain (chain) ImageNet nets: AlexNet, CaffeNet, ZFNet, VGG-16 and Network in Network.

Layer names follow the published Caffe models (bvlc_alexnet,
bvlc_reference_caffenet, VGG_ILSVRC_16_layers, the NIN zoo model), so their
.caffemodel files load by name into these nets.
"""

from .builder import AVE, IMAGENET_MEAN_FILE, NetBuilder, imagenet_data
from .spec import ZooNet, make_solver

_LRN = dict(local_size=5, alpha=0.0001, beta=0.75)


def _classifier(b, bottom, hidden_weight, hidden_bias, out_weight=("gaussian", 0.01)):
    """fc6/fc7 (4096, ReLU, dropout 0.5) and fc8 (1000), then the TEST accuracies and the loss."""
    b.fc("fc6", 4096, bottom, weight=hidden_weight, bias=hidden_bias)
    b.relu("relu6")
    b.dropout("drop6")
    b.fc("fc7", 4096, "fc6", weight=hidden_weight, bias=hidden_bias)
    b.relu("relu7")
    b.dropout("drop7")
    b.fc("fc8", 1000, "fc7", weight=out_weight)
    _heads(b, "fc8")


def _heads(b, scores):
    b.accuracy("accuracy", scores)
    b.accuracy("accuracy_top5", scores, top_k=5)
    b.loss("loss", scores)


def _imagenet_solver(name, max_iter, stepsize, **extra):
    """Krizhevsky's schedule as Caffe's zoo runs it: lr 0.01, momentum 0.9, decay 5e-4, /10 in steps."""
    return make_solver(name, base_lr=0.01, lr_policy="step", gamma=0.1, stepsize=stepsize,
                       max_iter=max_iter, test_iter=1000, test_interval=1000, **extra)


def _alexnet_like(net_name, norm_before_pool, hidden_std):
    """AlexNet's five convolutions with two groups in conv2/4/5, as AlexNet and CaffeNet share them."""
    b = NetBuilder(net_name)
    imagenet_data(b, 227, 256, mean_file=IMAGENET_MEAN_FILE)
    g = ("gaussian", 0.01)
    one = ("constant", 1)  # biases 1 in conv2/4/5 and fc6/fc7: ReLUs start in their linear part

    def conv_norm_pool(index, **conv):
        top = b.conv(f"conv{index}", **conv)
        b.relu(f"relu{index}")
        if norm_before_pool:  # the paper: response normalization, then overlapping pooling
            b.lrn(f"norm{index}", **_LRN)
            return b.pool(f"pool{index}", 3, 2)
        b.pool(f"pool{index}", 3, 2, bottom=top)
        return b.lrn(f"norm{index}", **_LRN)

    conv_norm_pool(1, num_output=96, kernel=11, stride=4, bottom="data", weight=g)
    conv_norm_pool(2, num_output=256, kernel=5, pad=2, group=2, weight=g, bias=one)
    b.conv("conv3", 384, 3, pad=1, weight=g)
    b.relu("relu3")
    b.conv("conv4", 384, 3, pad=1, group=2, weight=g, bias=one)
    b.relu("relu4")
    b.conv("conv5", 256, 3, pad=1, group=2, weight=g, bias=one)
    b.relu("relu5")
    b.pool("pool5", 3, 2)
    _classifier(b, "pool5", ("gaussian", hidden_std), one)
    return b.net


def alexnet():
    net = _alexnet_like("AlexNet", norm_before_pool=True, hidden_std=0.01)
    return ZooNet("alexnet", "Krizhevsky et al. 2012 (bvlc_alexnet layout)", net, (10, 3, 227, 227), "fc8",
                  _imagenet_solver("alexnet", 450000, 100000), smoke_size=(2, 67), notes=[
                      "two groups in conv2/4/5, LRN before the overlapping 3x3/2 pooling as in the paper",
                      "weights N(0, 0.01) everywhere and biases 1 in conv2/4/5 and fc6/fc7, as in the paper "
                      "(bvlc_alexnet uses 0.1 and std 0.005 in fc6/fc7)",
                  ])


def caffenet():
    net = _alexnet_like("CaffeNet", norm_before_pool=False, hidden_std=0.005)
    return ZooNet("caffenet", "bvlc_reference_caffenet (AlexNet with pooling before LRN)", net,
                  (10, 3, 227, 227), "fc8", _imagenet_solver("caffenet", 450000, 100000), smoke_size=(2, 67))


def zfnet():
    """Zeiler & Fergus 2013: 7x7/2 first filters, 5x5/2 second, dense conv3-5, 224 crops."""
    b = NetBuilder("ZFNet")
    imagenet_data(b, 224, 128, mean_file=IMAGENET_MEAN_FILE)
    b.conv("conv1", 96, 7, stride=2, pad=1, bottom="data")
    b.relu("relu1")
    b.pool("pool1", 3, 2)
    b.lrn("norm1", **_LRN)
    b.conv("conv2", 256, 5, stride=2)
    b.relu("relu2")
    b.pool("pool2", 3, 2)
    b.lrn("norm2", **_LRN)
    for index, outputs in ((3, 384), (4, 384), (5, 256)):
        b.conv(f"conv{index}", outputs, 3, pad=1)
        b.relu(f"relu{index}")
    b.pool("pool5", 3, 2)
    _classifier(b, "pool5", ("gaussian", 0.01), ("constant", 0))
    solver = _imagenet_solver("zfnet", 700000, 200000)
    # At batch 2 the linear rule (1/64 of the rate) leaves ZF's loss almost flat for 20 steps;
    # the square-root rule (1/8) moves it clearly and stays stable.
    return ZooNet("zfnet", "Zeiler & Fergus 2013", b.net, (10, 3, 224, 224), "fc8", solver,
                  smoke_size=(2, 64), smoke_lr_scale=0.125, notes=[
                      "110x110 conv1 maps and 55/26/13/6 below as in the paper's figure 3",
                      "the paper's renormalisation of filters with RMS above 0.1 has no Caffe equivalent",
                  ])


VGG_MEAN = (103.939, 116.779, 123.68)


def vgg16():
    """Simonyan & Zisserman configuration D: thirteen 3x3 convolutions, five 2x2 max pools."""
    b = NetBuilder("VGG_ILSVRC_16_layers")
    imagenet_data(b, 224, 32, mean_value=VGG_MEAN)
    bottom = "data"
    for block, (outputs, count) in enumerate(((64, 2), (128, 2), (256, 3), (512, 3), (512, 3)), start=1):
        for index in range(1, count + 1):
            bottom = b.conv(f"conv{block}_{index}", outputs, 3, pad=1, bottom=bottom, weight=("xavier",))
            b.relu(f"relu{block}_{index}")
        bottom = b.pool(f"pool{block}", 2, 2)
    _classifier(b, bottom, ("xavier",), ("constant", 0), out_weight=("xavier",))
    # Batch 256 as in the paper, as 8 passes of 32 (iter_size) to fit one GPU.
    solver = _imagenet_solver("vgg16", 370000, 100000, iter_size=8)
    solver.test_interval = 10000
    return ZooNet("vgg16", "Simonyan & Zisserman 2014, configuration D", b.net, (10, 3, 224, 224), "fc8",
                  solver, smoke_size=(2, 32), notes=[
                      "Glorot (xavier) initialisation, which the paper reports trains D without pre-training",
                      "batch 256 = 32 x iter_size 8",
                  ])


def nin():
    """Lin et al.'s ImageNet NIN: mlpconv blocks (a conv and two 1x1 convs), global average pooling."""
    b = NetBuilder("nin_imagenet")
    imagenet_data(b, 224, 64, mean_file=IMAGENET_MEAN_FILE)
    relu = iter(range(13))
    blocks = (("conv1", 96, 11, 4, 0, ("cccp1", "cccp2"), 96),
              ("conv2", 256, 5, 1, 2, ("cccp3", "cccp4"), 256),
              ("conv3", 384, 3, 1, 1, ("cccp5", "cccp6"), 384))
    bottom = "data"
    for index, (conv, outputs, kernel, stride, pad, cccps, cccp_out) in enumerate(blocks, start=1):
        std = 0.01 if index == 1 else 0.05
        b.conv(conv, outputs, kernel, stride=stride, pad=pad, bottom=bottom, weight=("gaussian", std))
        b.relu(f"relu{next(relu)}")
        for cccp in cccps:
            b.conv(cccp, cccp_out, 1, weight=("gaussian", 0.05))
            b.relu(f"relu{next(relu)}")
        bottom = b.pool(f"pool{index}", 3, 2)
    b.dropout("drop", 0.5)
    b.conv("conv4-1024", 1024, 3, pad=1, weight=("gaussian", 0.05))
    b.relu(f"relu{next(relu)}")
    b.conv("cccp7-1024", 1024, 1, weight=("gaussian", 0.05))
    b.relu(f"relu{next(relu)}")
    b.conv("cccp8-1024", 1000, 1, weight=("gaussian", 0.01))
    b.relu(f"relu{next(relu)}")
    b.pool("pool4", method=AVE, global_pooling=True)
    _heads(b, "pool4")
    solver = _imagenet_solver("nin", 450000, 200000)
    return ZooNet("nin", "Lin, Chen & Yan 2014 (NIN ImageNet zoo model)", b.net, (10, 3, 224, 224), "pool4",
                  solver, smoke_size=(2, 64), notes=[
                      "pool4 is global average pooling (the zoo model's 6x6 window at 224x224)",
                  ])


NETS = [alexnet, caffenet, zfnet, vgg16, nin]
