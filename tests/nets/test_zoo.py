"""The model zoo: published sizes, fidelity to the Caffe models it follows, and a short training run each.

Parameter counts come from engine.summary over the deploy nets and are
checked against the papers' numbers and against counts derived by hand;
the layer structure is compared with the original Caffe prototxts (BVLC's
zoo, Kaiming He's ResNet-50, shicai's MobileNets) so their weights load by
name. Every train_val net then trains on one generated batch with its zoo
solver's settings (engine/zoo/smoke.py) and its loss must fall.
"""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from engine import caffe_pb2, formats, summary
from engine.net import TEST, Net

ROOT = Path(__file__).resolve().parents[2]
from paths import CONFIGS, needs_corpus  # noqa: E402
from engine import zoo  # noqa: E402
from engine.zoo.smoke import run_smoke  # noqa: E402
from engine.zoo.table import zoo_table  # noqa: E402

ZOO = ["cifar10_quick", "alexnet", "caffenet", "zfnet", "vgg16", "vgg_cifar", "googlenet", "nin", "resnet18",
       "resnet50", "mobilenet_v1", "mobilenet_v2", "densenet121", "resnext50_32x4d", "shufflenet_v2_1x",
       "se_resnet50"]


def deploy_net(name):
    """The zoo's deploy net from disk, at batch 1 (sizes do not depend on the batch)."""
    param = formats.read_net(ROOT / "nets" / name / "deploy.prototxt")
    param.layer[0].input_param.shape[0].dim[0] = 1
    return Net(param, TEST)


def learnable(net):
    """What the solver updates: every parameter blob except BatchNorm's statistics."""
    return sum(b.count for name, blobs in net.params.items() if net.layer_dict[name].type != "BatchNorm"
               for b in blobs)


def weights(net):
    """Blob 0 of Convolution and InnerProduct layers: the weights, without biases."""
    return sum(net.layer_dict[name].blobs[0].count for name in net.params
               if net.layer_dict[name].type in ("Convolution", "InnerProduct"))


# -- the generator and the files --------------------------------------------------------------


def test_zoo_lists_every_net():
    assert zoo.names() == ZOO


def test_prototxts_are_what_the_generator_writes():
    result = subprocess.run([sys.executable, str(ROOT / "tools" / "make_zoo"), "--check"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("name", ZOO)
def test_solver_and_data_paths(name):
    solver = formats.read_solver(ROOT / "solvers" / f"{name}.prototxt")
    assert solver.net == f"nets/{name}/train_val.prototxt"
    assert solver.snapshot_prefix == f"snapshots/{name}"
    train_val = formats.read_net(ROOT / solver.net)
    data = [layer for layer in train_val.layer if layer.type == "Data"]
    assert [rule.phase for layer in data for rule in layer.include] == [caffe_pb2.TRAIN, caffe_pb2.TEST]
    for layer in data:
        assert layer.data_param.source.startswith("data/") and layer.data_param.backend == caffe_pb2.DataParameter.LMDB
        transform = layer.transform_param
        assert transform.mean_file.startswith("data/") or len(transform.mean_value) == 3
        assert transform.mirror == (layer.include[0].phase == caffe_pb2.TRAIN and name != "cifar10_quick")
    deploy = formats.read_net(ROOT / "nets" / name / "deploy.prototxt")
    assert deploy.layer[0].type == "Input" and deploy.layer[-1].type == "Softmax"
    assert not any(layer.type in ("Data", "SoftmaxWithLoss", "Accuracy") for layer in deploy.layer)


def test_alexnet_solver_as_the_paper():
    solver = formats.read_solver(ROOT / "solvers" / "alexnet.prototxt")
    assert (solver.type, solver.momentum, solver.weight_decay, solver.base_lr) == (
        "SGD", pytest.approx(0.9), pytest.approx(0.0005), pytest.approx(0.01))
    assert (solver.lr_policy, solver.gamma) == ("step", pytest.approx(0.1))
    train_val = formats.read_net(ROOT / "nets" / "alexnet" / "train_val.prototxt")
    layers = {layer.name: layer for layer in train_val.layer}
    assert [layer.data_param.batch_size for layer in train_val.layer if layer.type == "Data"] == [256, 50]
    assert [layers[f"conv{i}"].convolution_param.group for i in range(1, 6)] == [1, 2, 1, 2, 2]
    biases = [layers[n].convolution_param.bias_filler.value for n in ("conv1", "conv2", "conv3", "conv4", "conv5")]
    biases += [layers[n].inner_product_param.bias_filler.value for n in ("fc6", "fc7", "fc8")]
    assert biases == [0, 1, 0, 1, 1, 1, 1, 0]
    order = [layer.name for layer in train_val.layer]
    assert order.index("norm1") < order.index("pool1") and order.index("norm2") < order.index("pool2")
    assert [layers[n].dropout_param.dropout_ratio for n in ("drop6", "drop7")] == [0.5, 0.5]
    assert (layers["pool1"].pooling_param.kernel_size, layers["pool1"].pooling_param.stride) == (3, 2)


# -- fidelity to the original Caffe prototxts ----------------------------------------------------


def signature(layer, training):
    """What must agree for weights to load and results to match (fillers and params when training)."""
    sig = [layer.name, layer.type, list(layer.bottom), list(layer.top), list(layer.loss_weight)]
    if layer.type in ("Convolution", "ConvolutionDepthwise", "InnerProduct"):
        p = layer.inner_product_param if layer.type == "InnerProduct" else layer.convolution_param
        sig.append(p.num_output)
        if layer.type != "InnerProduct":
            sig += [list(p.kernel_size), list(p.stride) or [1], list(p.pad) or [0], p.group]
        sig.append(p.bias_term)
        if training:
            sig += [p.weight_filler.type, round(p.weight_filler.std, 6), p.bias_filler.value]
    elif layer.type == "Pooling":
        p = layer.pooling_param
        sig += [p.pool, p.kernel_size, p.stride, p.pad, p.global_pooling, p.ceil_mode]
    elif layer.type == "Slice":
        sig += [layer.slice_param.axis, list(layer.slice_param.slice_point)]
    elif layer.type == "ShuffleChannel":
        sig.append(layer.shuffle_channel_param.group)
    elif layer.type == "LRN":
        sig += [layer.lrn_param.local_size, round(layer.lrn_param.alpha, 8), layer.lrn_param.beta]
    elif layer.type == "Dropout":
        sig.append(round(layer.dropout_param.dropout_ratio, 6))
    elif layer.type == "Accuracy":
        sig.append(layer.accuracy_param.top_k)
    if training:
        sig += [[(s.lr_mult, s.decay_mult) for s in layer.param], [r.phase for r in layer.include]]
    return sig


def _global_pool(name):
    """Our final average pooling is global; the original's fixed 7x7 window equals it at 224x224."""
    def patch(layer):
        if layer.name == name:
            layer.pooling_param.Clear()
            layer.pooling_param.pool = caffe_pb2.PoolingParameter.AVE
            layer.pooling_param.global_pooling = True
    return patch


def _strides(changes):
    """MobileNet v2: the paper's table 2 puts the stride-2 at the first 64-channel block, shicai's at 96."""
    def patch(layer):
        if layer.name in changes:
            layer.convolution_param.stride[:] = [changes[layer.name]]
    return patch


FIDELITY = [
    # (ours, original, training details compared, layers only we have, patch applied to the original)
    ("cifar10_quick/train_val", "BVLC__caffe/examples/cifar10/cifar10_quick_train_test.prototxt", True, [], None),
    ("cifar10_quick/deploy", "BVLC__caffe/examples/cifar10/cifar10_quick.prototxt", False, [], None),
    ("alexnet/train_val", "BVLC__caffe/models/bvlc_alexnet/train_val.prototxt", False, ["accuracy_top5"], None),
    ("alexnet/deploy", "BVLC__caffe/models/bvlc_alexnet/deploy.prototxt", False, [], None),
    ("caffenet/train_val", "BVLC__caffe/models/bvlc_reference_caffenet/train_val.prototxt", True,
     ["accuracy_top5"], None),
    ("caffenet/deploy", "BVLC__caffe/models/bvlc_reference_caffenet/deploy.prototxt", False, [], None),
    ("googlenet/train_val", "BVLC__caffe/models/bvlc_googlenet/train_val.prototxt", True, [],
     _global_pool("pool5/7x7_s1")),
    ("googlenet/deploy", "BVLC__caffe/models/bvlc_googlenet/deploy.prototxt", False, [],
     _global_pool("pool5/7x7_s1")),
    ("resnet50/deploy", "KaimingHe__deep-residual-networks/prototxt__ResNet-50-deploy.prototxt", False, [],
     _global_pool("pool5")),
    ("mobilenet_v1/deploy", "shicai__MobileNet-Caffe/mobilenet_deploy.prototxt", False, [], None),
    ("densenet121/deploy", "shicai__DenseNet-Caffe/DenseNet_121.prototxt", False, ["prob"], None),
    ("shufflenet_v2_1x/deploy", "farmingyard__ShuffleNet/shufflenet_v2_1x_deploy.prototxt", False, ["prob"], None),
    ("se_resnet50/deploy", "hujie-frank__SENet/models__SE-ResNet-50.prototxt", False, [],
     _global_pool("pool5/7x7_s1")),
    ("mobilenet_v2/deploy", "shicai__MobileNet-Caffe/mobilenet_v2_deploy.prototxt", False, [],
     _strides({"conv4_3/dwise": 2, "conv4_7/dwise": 1})),
]


@needs_corpus
@pytest.mark.parametrize("ours, original, training, extra, patch", FIDELITY, ids=[f[0] for f in FIDELITY])
def test_layers_match_the_original_caffe_model(ours, original, training, extra, patch):
    mine = formats.read_net(ROOT / "nets" / f"{ours}.prototxt")
    theirs = formats.read_net(CONFIGS / original)
    if patch:
        for layer in theirs.layer:
            patch(layer)
    skip = ("Data", "Input")
    a = [signature(layer, training) for layer in mine.layer if layer.type not in skip and layer.name not in extra]
    b = [signature(layer, training) for layer in theirs.layer if layer.type not in skip]
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x == y


# -- sizes -------------------------------------------------------------------------------------

# name: (summary's total, what the solver learns, the published size: exact, or in millions to one decimal)
SIZES = {
    "lenet": (431_080, 431_080, 431_080),
    "cifar10_quick": (145_578, 145_578, 145_578),
    "alexnet": (60_965_224, 60_965_224, 60_965_224),  # two groups: the same count as CaffeNet
    "caffenet": (60_965_224, 60_965_224, 60_965_224),
    "zfnet": (62_357_608, 62_357_608, 62.4),
    "vgg16": (138_357_544, 138_357_544, 138_357_544),
    "vgg_cifar": (14_997_208, 14_987_722, 15.0),
    "googlenet": (6_998_552, 6_998_552, 7.0),
    "nin": (7_595_176, 7_595_176, 7.6),
    # torchvision's counts plus conv1's bias (the MSRA layout has one); BatchNorm's statistics on top.
    "resnet18": (11_699_196, 11_689_512 + 64, 11.7),
    "resnet50": (25_610_269, 25_557_032 + 64, 25.6),
    "mobilenet_v1": (4_253_891, 4_231_976, 4.2),
    # torchvision's count plus the 32->32 expand convolution of the t=1 block and its Scale (shicai's).
    "mobilenet_v2": (3_540_189, 3_504_872 + 1_024 + 64, 3.5),
    # The published counts (torchvision's, Cadene's for SE-ResNet-50) to the parameter.
    "densenet121": (8_062_625, 7_978_856, 7_978_856),
    "resnext50_32x4d": (25_097_181, 25_028_904, 25_028_904),
    "shufflenet_v2_1x": (2_294_840, 2_278_604, 2_278_604),
    "se_resnet50": (28_141_197, 28_088_024, 28_088_024),
}


@pytest.mark.parametrize("name", sorted(SIZES))
def test_parameter_counts(name):
    total, trained, published = SIZES[name]
    net = deploy_net(name)
    _, params, _ = summary.summarize(net)
    assert (params, learnable(net)) == (total, trained)
    if isinstance(published, float):
        assert round(trained / 1e6, 1) == published
    else:
        assert trained == published


def test_vgg_cifar_weights():
    net = deploy_net("vgg_cifar")
    convs = [n for n in net.params if net.layer_dict[n].type == "Convolution"]
    fcs = [n for n in net.params if net.layer_dict[n].type == "InnerProduct"]
    assert (len(convs), [net.params[n][0].shape for n in fcs]) == (13, [(512, 512), (10, 512)])
    assert net.blobs["data"].shape == (1, 3, 32, 32) and net.blobs["pool5"].shape == (1, 512, 1, 1)
    assert weights(net) == 14_977_728


# Multiply-accumulates per image in the papers (conv and FC layers).
MACS = {"vgg16": 15.5e9, "mobilenet_v1": 569e6, "resnet50": 3.9e9, "googlenet": 1.5e9, "alexnet": 0.72e9}


@pytest.mark.parametrize("name", sorted(MACS))
def test_multiply_accumulates(name):
    _, _, macs = summary.summarize(deploy_net(name))
    assert abs(macs - MACS[name]) <= 0.06 * MACS[name]


def test_mobilenet_v2_shapes_follow_the_paper():
    net = deploy_net("mobilenet_v2")
    sides = {tag: net.blobs[f"conv{tag}/linear/bn"].shape[1:] for tag in ("2_1", "2_2", "3_2", "4_3", "4_7", "5_3",
                                                                          "6_3")}
    assert sides == {"2_1": (16, 112, 112), "2_2": (24, 56, 56), "3_2": (32, 28, 28), "4_3": (64, 14, 14),
                     "4_7": (96, 14, 14), "5_3": (160, 7, 7), "6_3": (320, 7, 7)}


def test_zoo_table_rows():
    table = zoo_table(["cifar10_quick"], ROOT).splitlines()
    assert table[0].startswith("| net |") and len(table) == 4
    assert table[2].startswith("| lenet |") and "431,080" in table[2] and "2.3M" in table[2]
    assert "| 3 x 32 x 32 | 145,578 | 145,578 | 12.4M | `tools/train --solver solvers/cifar10_quick.prototxt` |" \
        in table[3]


# -- training ----------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("name", ZOO)
def test_train_val_loss_falls(name, mode):
    losses = run_smoke(zoo.get(name), 20, root=str(ROOT))
    assert np.all(np.isfinite(losses))
    first, last = np.mean(losses[:2]), np.mean(losses[-4:])
    assert last < first, f"{name}: loss went from {losses[:2]} to {losses[-4:]}"


# -- missing datasets ---------------------------------------------------------------------------


def _data_paths():
    for name in ZOO:
        for layer in formats.read_net(ROOT / "nets" / name / "train_val.prototxt").layer:
            if layer.type == "Data":
                yield name, layer.data_param.source, layer.include[0].phase
                if layer.transform_param.mean_file:
                    yield name, layer.transform_param.mean_file, None


@pytest.mark.parametrize("path, phase", sorted({(path, phase) for _, path, phase in _data_paths()}, key=str))
def test_missing_data_hint_names_the_commands(path, phase):
    from engine.data.hints import missing_data_hint

    hint = missing_data_hint(path)
    if path.endswith(".binaryproto"):
        train_db = {"cifar10": "data/cifar10/cifar10_train_lmdb"}.get(path.split("/")[1],
                                                                       "data/ilsvrc12/ilsvrc12_train_lmdb")
        assert f"`tools/compute_image_mean {train_db} {path}`" in hint
        return
    assert "tools/convert_imageset " in hint and path in hint
    assert ("--shuffle" in hint) == (phase == caffe_pb2.TRAIN)
    assert ("tools/compute_image_mean" in hint) == (phase == caffe_pb2.TRAIN)
    if "ilsvrc12" in path:
        assert "--resize_height=256 --resize_width=256" in hint


def test_missing_mnist_and_unknown_databases():
    from engine.data.hints import missing_data_hint

    assert "`tools/convert_mnist_data t10k-images-idx3-ubyte t10k-labels-idx1-ubyte examples/mnist/mnist_test_lmdb`" \
        in missing_data_hint("examples/mnist/mnist_test_lmdb")
    hint = missing_data_hint("/srv/faces_train_lmdb")
    assert "`tools/convert_imageset --shuffle IMAGE_ROOT/ LIST.txt /srv/faces_train_lmdb`" in hint
    assert "current directory" not in hint  # an absolute path needs no note about the working directory


def test_train_alexnet_without_imagenet_says_how_to_build_it(tmp_path):
    """As Caffe, tools/train stops at the missing LMDB; unlike Caffe, it says how to make one."""
    for folder in ("nets", "solvers"):
        (tmp_path / folder).symlink_to(ROOT / folder)
    result = subprocess.run([sys.executable, str(ROOT / "tools" / "train"), "--solver", "solvers/alexnet.prototxt"],
                            capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert result.returncode != 0
    message = result.stderr.strip().splitlines()[-1]
    assert "data/ilsvrc12/ilsvrc12_train_lmdb" in message
    assert "tools/convert_imageset" in message and "tools/compute_image_mean" in message
    assert "Traceback" not in result.stderr
