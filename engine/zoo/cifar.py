"""The CIFAR-10 nets: Caffe's cifar10_quick and a VGG-16-style net for 32x32 images.

The CIFAR-10 LMDBs and mean live under data/cifar10 (tools/convert_imageset
over the extracted images, tools/compute_image_mean over the training DB).
"""

from .builder import AVE, CIFAR10_MEAN_FILE, TEST, TRAIN, NetBuilder
from .spec import ZooNet, make_solver


def _cifar_data(b, train_batch, test_batch, mirror=False):
    for phase, split, batch in ((TRAIN, "train", train_batch), (TEST, "test", test_batch)):
        b.data("cifar", phase, f"data/cifar10/cifar10_{split}_lmdb", batch, mirror=mirror and phase == TRAIN,
               mean_file=CIFAR10_MEAN_FILE)


def cifar10_quick():
    """Caffe's examples/cifar10 quick net: three 5x5 convolutions, about 75% accuracy in 5000 iterations."""
    b = NetBuilder("CIFAR10_quick")
    _cifar_data(b, 100, 100)
    params = ((1, 1), (2, 1))  # Caffe's example decays biases too (lr_mult only, decay_mult default 1)
    b.conv("conv1", 32, 5, pad=2, bottom="data", weight=("gaussian", 0.0001), params=params)
    b.pool("pool1", 3, 2)
    b.relu("relu1")
    b.conv("conv2", 32, 5, pad=2, bottom="pool1", params=params)
    b.relu("relu2")
    b.pool("pool2", 3, 2, method=AVE)
    b.conv("conv3", 64, 5, pad=2, params=params)
    b.relu("relu3")
    b.pool("pool3", 3, 2, method=AVE)
    b.fc("ip1", 64, weight=("gaussian", 0.1), params=params)
    b.fc("ip2", 10, weight=("gaussian", 0.1), params=params)
    b.accuracy("accuracy", "ip2")
    b.loss("loss", "ip2")
    # Caffe trains 4000 iterations at 0.001, then 1000 at 0.0001 (cifar10_quick_solver_lr1);
    # one multistep schedule does both.
    solver = make_solver("cifar10_quick", base_lr=0.001, lr_policy="multistep", gamma=0.1, stepvalue=[4000],
                         max_iter=5000, test_iter=100, test_interval=500, weight_decay=0.004, display=100,
                         snapshot=5000)
    return ZooNet("cifar10_quick", "Caffe's examples/cifar10 (cifar10_quick)", b.net, (1, 3, 32, 32), "ip2",
                  solver, smoke_size=(8, None), notes=[
                      "the two solver files of Caffe's example are one multistep schedule here",
                  ])


def vgg_cifar():
    """VGG-16's thirteen 3x3 convolutions on 32x32 images, with BatchNorm, then FC 512 and FC 10.

    Five 2x2 poolings take 32x32 to 1x1, so the classifier sees 512 features:
    13 conv + 2 FC weights = 14,977,728. BatchNorm (+Scale) after every
    convolution and after FC 512 lets it train from scratch; the convolutions
    then need no bias.
    """
    b = NetBuilder("VGG_CIFAR")
    _cifar_data(b, 128, 100, mirror=True)
    bottom = "data"
    for block, (outputs, count) in enumerate(((64, 2), (128, 2), (256, 3), (512, 3), (512, 3)), start=1):
        for index in range(1, count + 1):
            name = f"conv{block}_{index}"
            bottom = b.conv(name, outputs, 3, pad=1, bottom=bottom, weight=("msra",), bias_term=False)
            b.batch_norm(f"{name}/bn")
            b.scale(f"{name}/scale")
            b.relu(f"relu{block}_{index}")
        bottom = b.pool(f"pool{block}", 2, 2)
    b.dropout("drop5", 0.5)
    b.fc("fc6", 512, bottom, weight=("msra",))
    b.batch_norm("fc6/bn")
    b.scale("fc6/scale")
    b.relu("relu6")
    b.dropout("drop6", 0.5)
    b.fc("fc7", 10, "fc6", weight=("msra",))
    b.accuracy("accuracy", "fc7")
    b.loss("loss", "fc7")
    # 390 iterations per epoch at batch 128: 160 epochs, lr /10 at epochs 80 and 120.
    solver = make_solver("vgg_cifar", base_lr=0.1, lr_policy="multistep", gamma=0.1,
                         stepvalue=[31200, 46800], max_iter=62400, test_iter=100, test_interval=390,
                         display=100, snapshot=15600)
    return ZooNet("vgg_cifar", "VGG-16 convolutions for CIFAR-10 (with BatchNorm)", b.net, (1, 3, 32, 32), "fc7",
                  solver, smoke_size=(4, None), notes=[
                      "13 conv + FC 512 + FC 10: 14,977,728 weights; BatchNorm + Scale after each of them",
                  ])


NETS = [cifar10_quick, vgg_cifar]
