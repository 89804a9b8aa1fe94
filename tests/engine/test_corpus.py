"""Every real-world prototxt in ../shared/caffe-configs parses and every net builds in each
state it declares; files with fields of a fork we do not read fail to parse, naming the line,
and nets with a layer type we do not have fail to build, naming it.

The corpus is third-party material kept outside the repository: without it
these tests have no cases and test_corpus_is_present skips.

Nets whose data layers read absent databases take the shapes their settings
declare; where those settings do not fix a shape the case is skipped with
the recorded reason, never silently.
"""

import os
import re

import pytest

import engine
from engine import caffe_pb2, formats, netgraph
from engine.errors import CaffeError, NetError, ProtoError
from engine.net import Net

from paths import CONFIGS, needs_corpus  # noqa: E402

# Caffe's registered layer types (BVLC master); anything else is a fork's layer.
BVLC_TYPES = set("""
AbsVal Accuracy ArgMax BNLL BatchNorm BatchReindex Bias Clip Concat ContrastiveLoss Convolution Crop
Data Deconvolution Dropout DummyData ELU Eltwise Embed EuclideanLoss Exp Filter Flatten HDF5Data
HDF5Output HingeLoss Im2col ImageData InfogainLoss InnerProduct Input LRN LSTM LSTMUnit Log MVN
MemoryData MultinomialLogisticLoss PReLU Parameter Pooling Power Python RNN ReLU Reduction Reshape
SPP Scale Sigmoid SigmoidCrossEntropyLoss Silence Slice Softmax SoftmaxWithLoss Split Swish TanH
Threshold Tile WindowData""".split())


def _is_solver(path):
    return "solver" in path.name.lower()


FILES = sorted(p for p in CONFIGS.rglob("*") if p.is_file() and p.name != "README.md")
NETS = [p for p in FILES if not _is_solver(p)]
SOLVERS = [p for p in FILES if _is_solver(p)]


def _in_schema(message, field):
    descriptor = caffe_pb2.DESCRIPTOR.message_types_by_name.get(message)
    return descriptor is not None and field in descriptor.fields_by_name


def _fork_files():
    """Files the corpus README marks as using fields outside BVLC's schema, less those whose
    fields (`Message.field` in the notes) our schema now has, the forks we read."""
    names = set()
    if not (CONFIGS / "README.md").exists():
        return names  # no corpus here: every corpus test below has no cases
    readme = (CONFIGS / "README.md").read_text()
    for row in readme.splitlines():
        cells = [c.strip() for c in row.split("|")]
        if len(cells) > 9 and cells[8] == "NO":
            fields = re.findall(r"`([A-Z]\w*)\.(\w+)`", cells[9])
            if fields and all(_in_schema(message, field) for message, field in fields):
                continue
            names.add(cells[2].strip("`"))
    return names


FORK_FILES = _fork_files()


def _rel(path):
    return str(path.relative_to(CONFIGS))


@needs_corpus
@pytest.mark.parametrize("path", SOLVERS, ids=_rel)
def test_solver_parses(path):
    if _rel(path) in FORK_FILES:
        with pytest.raises(ProtoError, match=r":\d+:\d+: .*has no field named"):
            formats.read_solver(path)
        return
    solver = formats.read_solver(path)
    assert solver.type in {"SGD", "Nesterov", "AdaGrad", "RMSProp", "AdaDelta", "Adam"}


@needs_corpus
@pytest.mark.parametrize("path", NETS, ids=_rel)
def test_net_parses(path):
    if _rel(path) in FORK_FILES:
        with pytest.raises(ProtoError, match=r":\d+:\d+: .*has no field named"):
            formats.read_net(path)
        return
    net = formats.read_net(path)
    assert len(net.layer) > 0 and not len(net.layers)


def _declared_states(net):
    """(phase, stages) combinations the net's include rules name; TEST when it names none."""
    states = set()
    for layer in net.layer:
        for rule in layer.include:
            if rule.HasField("phase"):
                states.add((rule.phase, tuple(rule.stage)))
        for rule in layer.exclude:
            if rule.HasField("phase"):
                states.add((rule.phase, ()))
    if net.state.HasField("phase"):
        states.add((net.state.phase, tuple(net.state.stage)))
    # A stage-less state of a phase whose layers all need stages builds nothing useful.
    staged = {phase for phase, stages in states if stages}
    states = {(p, s) for p, s in states if s or p not in staged}
    return sorted(states) or [(caffe_pb2.TEST, ())]


def _build_cases():
    cases = []
    for path in NETS:
        if _rel(path) in FORK_FILES:
            continue
        net = formats.read_net(path)
        for phase, stages in _declared_states(net):
            label = caffe_pb2.Phase.Name(phase) + "".join(f"+{s}" for s in stages)
            cases.append(pytest.param(path, phase, stages, id=f"{_rel(path)}-{label}"))
    return cases


def _python_modules_missing(net):
    missing = []
    for layer in net.layer:
        if layer.type == "Python":
            try:
                __import__(layer.python_param.module)
            except ImportError:
                missing.append(f"{layer.name}: Python layer module '{layer.python_param.module}' is not importable")
    return missing


@needs_corpus
@pytest.mark.parametrize("path, phase, stages", _build_cases())
def test_net_builds(path, phase, stages):
    param = formats.read_net(path)
    foreign = sorted({layer.type for layer in param.layer} - BVLC_TYPES - set(engine.layer_type_list()))
    if foreign:
        with pytest.raises(NetError, match=rf"{re.escape(str(path))}:\d+: .*Unknown layer type: "
                                           rf"({'|'.join(map(re.escape, foreign))})"):
            Net(param, phase=phase, stages=stages, source=str(path))
        return
    state = caffe_pb2.NetState(phase=phase, stage=stages)
    param, reasons = netgraph.stand_in_for_data(param, os.path.exists)
    active = netgraph.filter_net(param, state)
    missing = [f"{name}: {why}" for name, why in reasons.items()
               if any(layer.name == name for layer in active.layer)]
    missing += _python_modules_missing(active)
    if missing:
        pytest.skip("cannot shape without data: " + "; ".join(missing))
    net = Net(param, phase=phase, stages=stages, source=str(path))
    for name, blob in net.blobs.items():
        assert all(d > 0 for d in blob.shape) or blob.shape == (), f"blob {name} has shape {blob.shape}"


@needs_corpus
def test_corpus_is_present():
    assert len(NETS) > 80 and len(SOLVERS) > 20, "../shared/caffe-configs looks incomplete"


def test_fork_layer_error_names_type_and_line(tmp_path):
    # YOLOv2's Reorg (in several Caffe ports): a fork layer type we do not have.
    text = ('layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 1 } } }\n'
            'layer { name: "odd" type: "Reorg" bottom: "x" top: "y" }\n')
    path = tmp_path / "fork.prototxt"
    path.write_text(text)
    with pytest.raises(CaffeError, match=r"fork.prototxt:2: layer 'odd': Unknown layer type: Reorg") as info:
        Net(str(path), phase=caffe_pb2.TEST)
    assert "\n" not in str(info.value)


def _segmentation_data(text):
    return formats.parse_text(text, caffe_pb2.NetParameter()).layer[0]


@pytest.mark.parametrize("text, data, label", [
    ('layer { name: "d" type: "DenseImageData" top: "data" top: "label" dense_image_data_param { '
     'source: "absent.txt" batch_size: 3 new_height: 512 new_width: 1024 label_divide_factor: 8 } }',
     (3, 3, 512, 1024), (3, 1, 64, 128)),
    ('layer { name: "d" type: "DenseImageData" top: "data" top: "label" dense_image_data_param { '
     'source: "absent.txt" batch_size: 2 is_color: false new_height: 50 new_width: 60 crop_height: 20 '
     'crop_width: 30 } }', (2, 1, 20, 30), (2, 1, 20, 30)),
    ('layer { name: "d" type: "ImageLabelmapData" top: "data" top: "label" transform_param { crop_size: 40 } '
     'image_data_param { source: "absent.lst" batch_size: 5 } }', (5, 3, 40, 40), (5, 1, 40, 40)),
])
def test_segmentation_data_layers_stand_in_with_their_declared_shapes(text, data, label):
    net = caffe_pb2.NetParameter()
    net.layer.add().CopyFrom(_segmentation_data(text))
    replaced, reasons = netgraph.stand_in_for_data(net, lambda source: False)
    assert not reasons and replaced.layer[0].type == "Input"
    assert [tuple(shape.dim) for shape in replaced.layer[0].input_param.shape] == [data, label]


def test_segmentation_data_layers_without_a_declared_size_give_the_reason():
    text = ('layer { name: "d" type: "DenseImageData" top: "data" top: "label" '
            'dense_image_data_param { source: "absent.txt" batch_size: 1 } }')
    net = caffe_pb2.NetParameter()
    net.layer.add().CopyFrom(_segmentation_data(text))
    _, reasons = netgraph.stand_in_for_data(net, lambda source: False)
    assert reasons == {"d": "DenseImageData source 'absent.txt' is absent and the image size is only known "
                            "from the images (no new_height / new_width or crop)"}


SEGNET = ["alexgkendall__SegNet-Tutorial/Models__segnet_train.prototxt",
          "alexgkendall__SegNet-Tutorial/Models__segnet_inference.prototxt"]


@needs_corpus
@pytest.mark.parametrize("name", SEGNET)
def test_segnet_nets_build_at_the_size_their_upsample_layers_declare(name):
    """CamVid's 360 x 480: the sizes of SegNet's Upsample tops (23 x 30, 45 x 60) fix it."""
    param = formats.read_net(CONFIGS / name)
    data = param.layer[0].dense_image_data_param
    data.new_height, data.new_width = 360, 480
    param, reasons = netgraph.stand_in_for_data(param, os.path.exists)
    assert not reasons
    net = Net(param, phase=caffe_pb2.TRAIN if "train" in name else caffe_pb2.TEST, source=str(CONFIGS / name))
    assert net.blobs["label"].shape == (data.batch_size, 1, 360, 480)
    assert net.blobs["conv1_1_D"].shape == (data.batch_size, 11, 360, 480)  # CamVid's 11 classes
    if "train" in name:  # one class weight each; label 11 (void) ignored
        loss = next(layer for layer in net.layers if layer.type == "SoftmaxWithLoss")
        assert len(loss.class_weights) == 11 and loss.ignore_label == 11


HED = "natanielruiz__net-archive/holistically-nested__train_val.prototxt"


@needs_corpus
@pytest.mark.parametrize("phase", [caffe_pb2.TRAIN, caffe_pb2.TEST])
def test_hed_builds_on_bsds_sized_images(phase):
    """Its image lists fix no size: BSDS500's 321 x 481 stands in (new_height / new_width)."""
    param = formats.read_net(CONFIGS / HED)
    for layer in param.layer:
        if layer.type == "ImageLabelmapData":
            layer.image_data_param.new_height, layer.image_data_param.new_width = 321, 481
    param, reasons = netgraph.stand_in_for_data(param, os.path.exists)
    assert not reasons
    net = Net(param, phase=phase, source=str(CONFIGS / HED))
    assert net.blobs["label"].shape == (1, 1, 321, 481)
    sides = [name for name in net.blobs if re.fullmatch(r"upscore-dsn\d", name)]
    assert len(sides) == 5 and all(net.blobs[name].shape == (1, 1, 321, 481) for name in sides)


PARSENET = "natanielruiz__net-archive/parsenet__VGG_VOC2012ext.prototxt"


@needs_corpus
@pytest.mark.parametrize("phase", [caffe_pb2.TRAIN, caffe_pb2.TEST])
def test_parsenet_builds_on_voc_sized_images(phase):
    """Its LMDBs fix no size: images and label maps of PASCAL VOC's largest, 500 x 500, stand in."""
    param = formats.read_net(CONFIGS / PARSENET)
    for layer in param.layer:
        if layer.type == "Data":
            channels = 3 if layer.name == "data" else 1
            top, include = layer.top[0], list(layer.include)
            layer.Clear()
            layer.name, layer.type = top, "Input"
            layer.top.append(top)
            layer.include.extend(include)
            layer.input_param.shape.add().dim.extend([1, channels, 500, 500])
    net = Net(param, phase=phase, source=str(CONFIGS / PARSENET))
    assert net.blobs["score"].shape == (1, 21, 500, 500)
    pooled = net.blobs["pool6_1x1"].shape  # bin_size: 1, the global context
    assert pooled[2:] == (1, 1) and net.blobs["pool6_1x1_norm_upscore21"].shape == net.blobs["fc7_norm_score21"].shape
    if phase == caffe_pb2.TEST:
        assert net.blobs["predlabel"].shape == (1, 1, 500, 500) and net.blobs["evaluation"].shape == (1, 21, 1, 3)
