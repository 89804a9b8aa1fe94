"""Caffe's net and solver upgrade passes (engine/upgrade.py)."""

import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from google.protobuf import text_format  # noqa: E402

from engine import caffe_pb2 as pb  # noqa: E402
from engine import upgrade  # noqa: E402
from engine.errors import ProtoError  # noqa: E402

from paths import CONFIGS as CORPUS, needs_corpus  # noqa: E402

# Type strings Caffe's V1 upgrade produces, plus the Input layer the header
# upgrade adds.
MODERN_TYPES = {
    "AbsVal", "Accuracy", "ArgMax", "BNLL", "Concat", "ContrastiveLoss",
    "Convolution", "Deconvolution", "Data", "Dropout", "DummyData",
    "EuclideanLoss", "Eltwise", "Exp", "Flatten", "HDF5Data", "HDF5Output",
    "HingeLoss", "Im2col", "ImageData", "InfogainLoss", "InnerProduct", "LRN",
    "MemoryData", "MultinomialLogisticLoss", "MVN", "Pooling", "Power",
    "ReLU", "Sigmoid", "SigmoidCrossEntropyLoss", "Silence", "Softmax",
    "SoftmaxWithLoss", "Split", "Slice", "TanH", "WindowData", "Threshold",
    "Input",
}


def parse_net(text):
    return text_format.Merge(text, pb.NetParameter())


# -- the real-world corpus ---------------------------------------------------

def _legacy_corpus_nets():
    """(path, NetParameter) for every corpus net in V0/V1 syntax that parses."""
    if not CORPUS.is_dir():
        return []
    found = []
    for path in sorted(CORPUS.rglob("*")):
        if not path.is_file() or path.name == "README.md":
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        if not re.search(r"^\s*layers\s*\{", text, re.MULTILINE):
            continue
        try:
            net = parse_net(text)
        except text_format.ParseError:
            continue  # fork-only fields, or not a net at all
        found.append((path, net))
    return found


LEGACY = _legacy_corpus_nets()


@needs_corpus
def test_corpus_has_legacy_nets():
    # Guards the parametrised test below against passing on nothing.
    assert len(LEGACY) >= 4
    assert any(any(e.HasField("layer") for e in net.layers)
               for _, net in LEGACY), "expected at least one V0 net"


@needs_corpus
@pytest.mark.parametrize("path,net", LEGACY,
                         ids=[p.name for p, _ in LEGACY])
def test_corpus_legacy_net_upgrades(path, net):
    assert upgrade.net_needs_upgrade(net)
    before = net.SerializeToString()
    out = upgrade.upgrade_net(net, str(path))
    assert net.SerializeToString() == before, "input message was modified"
    assert len(out.layers) == 0
    assert len(out.layer) > 0
    assert len(out.input) == 0 and len(out.input_dim) == 0
    for layer in out.layer:
        assert layer.type in MODERN_TYPES, (layer.name, layer.type)
    assert not upgrade.net_needs_upgrade(out)
    # Upgraded text parses back to the same message.
    again = parse_net(text_format.MessageToString(out))
    assert again == out


def test_corpus_v1_deploy_header_becomes_input_layer():
    path = (CORPUS / "GilLevi__AgeGenderDeepLearning"
            / "age_net_definitions__deploy.prototxt")
    if not path.is_file():
        pytest.skip(f"corpus file missing: {path}")
    net = parse_net(path.read_text())
    out = upgrade.upgrade_net(net, str(path))
    first = out.layer[0]
    assert first.type == "Input"
    assert list(first.top) == list(net.input)
    assert list(first.input_param.shape[0].dim) == list(net.input_dim)[:4]
    assert out.layer[1].type == "Convolution"


# -- V0 ------------------------------------------------------------------------

V0_NET = """
name: "v0net"
input: "data"
input_dim: 1 input_dim: 3 input_dim: 32 input_dim: 32
layers {
  layer { name: "pad1" type: "padding" pad: 2 }
  bottom: "data" top: "pad1"
}
layers {
  layer {
    name: "conv1" type: "conv" num_output: 8 kernelsize: 5 stride: 1
    group: 1 biasterm: false
    weight_filler { type: "gaussian" std: 0.01 }
    blobs_lr: 1 blobs_lr: 2 weight_decay: 1 weight_decay: 0
  }
  bottom: "pad1" top: "conv1"
}
layers { layer { name: "relu1" type: "relu" } bottom: "conv1" top: "conv1" }
layers {
  layer { name: "pad2" type: "padding" pad: 1 }
  bottom: "conv1" top: "pad2"
}
layers {
  layer { name: "pool1" type: "pool" pool: AVE kernelsize: 3 stride: 2 }
  bottom: "pad2" top: "pool1"
}
layers {
  layer { name: "norm1" type: "lrn" local_size: 3 alpha: 0.5 beta: 0.5 }
  bottom: "pool1" top: "norm1"
}
layers {
  layer { name: "drop" type: "dropout" dropout_ratio: 0.3 }
  bottom: "norm1" top: "norm1"
}
layers {
  layer { name: "fc" type: "innerproduct" num_output: 10 }
  bottom: "norm1" top: "fc"
}
layers { layer { name: "prob" type: "softmax" } bottom: "fc" top: "prob" }
"""


def test_v0_net_with_padding_layers():
    net = parse_net(V0_NET)
    notes = []
    out = upgrade.upgrade_net(net, "v0.prototxt", notes)
    names = [layer.name for layer in out.layer]
    assert names == ["input", "conv1", "relu1", "pool1", "norm1", "drop",
                     "fc", "prob"]
    assert [layer.type for layer in out.layer] == [
        "Input", "Convolution", "ReLU", "Pooling", "LRN", "Dropout",
        "InnerProduct", "Softmax"]
    conv = out.layer[1]
    assert list(conv.bottom) == ["data"]  # the padding layer is bypassed
    assert list(conv.convolution_param.pad) == [2]
    assert list(conv.convolution_param.kernel_size) == [5]
    assert list(conv.convolution_param.stride) == [1]
    assert conv.convolution_param.num_output == 8
    assert conv.convolution_param.bias_term is False
    assert conv.convolution_param.weight_filler.type == "gaussian"
    assert [(p.lr_mult, p.decay_mult) for p in conv.param] == \
        [(1, 1), (2, 0)]
    pool = out.layer[3]
    assert list(pool.bottom) == ["conv1"]
    assert pool.pooling_param.pad == 1
    assert pool.pooling_param.pool == pb.PoolingParameter.AVE
    assert pool.pooling_param.kernel_size == 3
    assert out.layer[4].lrn_param.local_size == 3
    assert out.layer[5].dropout_param.dropout_ratio == pytest.approx(0.3)
    assert out.layer[6].inner_product_param.num_output == 10
    assert list(out.layer[0].input_param.shape[0].dim) == [1, 3, 32, 32]
    assert any("V0" in n for n in notes)
    assert not any("warning" in n for n in notes)


def test_v0_data_layer_fields():
    net = parse_net("""
      layers {
        layer {
          name: "data" type: "data" source: "train_lmdb" batchsize: 64
          meanfile: "mean.binaryproto" cropsize: 227 mirror: true scale: 0.5
          rand_skip: 10 det_context_pad: 16
        }
        top: "data" top: "label"
      }""")
    notes = []
    out = upgrade.upgrade_net(net, "d.prototxt", notes)
    layer = out.layer[0]
    assert layer.type == "Data"
    assert layer.data_param.source == "train_lmdb"
    assert layer.data_param.batch_size == 64
    assert layer.data_param.rand_skip == 10
    t = layer.transform_param
    assert (t.mean_file, t.crop_size, t.mirror, t.scale) == \
        ("mean.binaryproto", 227, True, 0.5)
    # Caffe only logs misplaced V0 settings; so do we.
    assert any("det_context_pad" in n and "warning" in n for n in notes)


def test_v0_window_data_and_concat():
    net = parse_net("""
      layers {
        layer { name: "w" type: "window_data" source: "win.txt"
                det_fg_threshold: 0.6 det_crop_mode: "square" batchsize: 4 }
        top: "data" top: "label"
      }
      layers { layer { name: "c" type: "concat" concat_dim: 2 }
               bottom: "data" bottom: "data" top: "c" }""")
    out = upgrade.upgrade_net(net)
    w = out.layer[0].window_data_param
    assert out.layer[0].type == "WindowData"
    assert (w.source, w.batch_size, w.crop_mode) == ("win.txt", 4, "square")
    assert w.fg_threshold == pytest.approx(0.6)
    assert out.layer[1].concat_param.concat_dim == 2


def test_v0_unknown_type_is_an_error():
    net = parse_net("""
      layers { layer { name: "weird" type: "warp_drive" } top: "x" }""")
    with pytest.raises(ProtoError, match="weird.*warp_drive"):
        upgrade.upgrade_net(net, "bad.prototxt")


def test_v0_padding_into_non_conv_is_an_error():
    net = parse_net("""
      input: "data"
      layers { layer { name: "pad" type: "padding" pad: 1 }
               bottom: "data" top: "p" }
      layers { layer { name: "act" type: "relu" } bottom: "p" top: "r" }""")
    with pytest.raises(ProtoError, match="act"):
        upgrade.upgrade_net(net)


def test_v0_unknown_bottom_is_an_error():
    net = parse_net("""
      layers { layer { name: "act" type: "relu" } bottom: "nowhere"
               top: "r" }""")
    with pytest.raises(ProtoError, match="nowhere"):
        upgrade.upgrade_net(net)


# -- V1 ------------------------------------------------------------------------

def test_v1_blobs_lr_weight_decay_and_sharing():
    net = parse_net("""
      name: "v1"
      force_backward: true
      layers {
        name: "ip" type: INNER_PRODUCT bottom: "x" top: "y"
        blobs_lr: 1 blobs_lr: 2 weight_decay: 1 weight_decay: 0
        param: "w_shared" param: "b_shared"
        blob_share_mode: PERMISSIVE
        loss_weight: 0.5
        include { phase: TRAIN }
        inner_product_param { num_output: 7 }
      }
      layers { name: "loss" type: SOFTMAX_LOSS bottom: "y" bottom: "label"
               loss_param { ignore_label: 3 } }""")
    out = upgrade.upgrade_net(net)
    assert out.name == "v1" and out.force_backward is True
    ip = out.layer[0]
    assert ip.type == "InnerProduct"
    assert [(p.name, p.lr_mult, p.decay_mult) for p in ip.param] == \
        [("w_shared", 1, 1), ("b_shared", 2, 0)]
    assert ip.param[0].share_mode == pb.ParamSpec.PERMISSIVE
    assert not ip.param[1].HasField("share_mode")
    assert list(ip.loss_weight) == [0.5]
    assert ip.include[0].phase == pb.TRAIN
    assert ip.inner_product_param.num_output == 7
    assert out.layer[1].type == "SoftmaxWithLoss"
    assert out.layer[1].loss_param.ignore_label == 3


def test_v1_only_blobs_lr_gives_default_decay():
    net = parse_net('layers { name: "c" type: CONVOLUTION blobs_lr: 0 }')
    spec = upgrade.upgrade_net(net).layer[0].param[0]
    assert spec.lr_mult == 0
    assert not spec.HasField("decay_mult") and spec.decay_mult == 1


def test_v1_data_layer_transform_fields_move():
    net = parse_net("""
      layers {
        name: "data" type: DATA top: "data" top: "label"
        data_param { source: "db" batch_size: 8 scale: 0.00390625
                     mirror: true crop_size: 28 mean_file: "m.bin" }
      }
      layers {
        name: "img" type: IMAGE_DATA top: "i" top: "l"
        image_data_param { source: "list.txt" mirror: true }
      }""")
    out = upgrade.upgrade_net(net)
    data = out.layer[0]
    t = data.transform_param
    assert t.scale == pytest.approx(0.00390625)
    assert t.mirror is True and t.crop_size == 28 and t.mean_file == "m.bin"
    for field in ("scale", "mirror", "crop_size", "mean_file"):
        assert not data.data_param.HasField(field)
    assert data.data_param.source == "db"
    assert data.data_param.batch_size == 8
    img = out.layer[1]
    assert img.transform_param.mirror is True
    assert not img.image_data_param.HasField("mirror")


def test_every_v1_type_has_a_name():
    for value in pb.V1LayerParameter.LayerType.DESCRIPTOR.values:
        name = upgrade.v1_type_name(value.number)
        if value.name == "NONE":
            assert name == ""
        else:
            assert name in MODERN_TYPES


def test_every_v1_param_message_has_a_home():
    v2_fields = pb.LayerParameter.DESCRIPTOR.fields_by_name
    for field in pb.V1LayerParameter.DESCRIPTOR.fields:
        if field.name.endswith("_param"):
            assert field.name in v2_fields
            assert v2_fields[field.name].message_type is field.message_type


def test_v1_mixed_with_layer_entries_drops_them_with_a_note():
    net = parse_net("""
      layer { name: "new" type: "ReLU" }
      layers { name: "old" type: RELU }""")
    notes = []
    out = upgrade.upgrade_net(net, "mixed", notes)
    assert [layer.name for layer in out.layer] == ["old"]
    assert any("dropped" in n for n in notes)


# -- input header ------------------------------------------------------------

def test_input_dim_header_becomes_input_layer():
    net = parse_net("""
      name: "deploy"
      input: "data"
      input_dim: 10 input_dim: 3 input_dim: 227 input_dim: 227
      layer { name: "conv" type: "Convolution" bottom: "data" top: "c" }""")
    assert upgrade.net_needs_upgrade(net)
    out = upgrade.upgrade_net(net)
    assert len(out.input) == 0 and len(out.input_dim) == 0
    assert [layer.name for layer in out.layer] == ["input", "conv"]
    first = out.layer[0]
    assert first.type == "Input"
    assert list(first.top) == ["data"]
    assert [list(s.dim) for s in first.input_param.shape] == \
        [[10, 3, 227, 227]]


def test_input_shape_header_with_two_inputs():
    net = parse_net("""
      input: "data" input_shape { dim: 1 dim: 3 dim: 224 dim: 224 }
      input: "im_info" input_shape { dim: 1 dim: 3 }
      layer { name: "a" type: "ReLU" bottom: "data" top: "a" }
      layer { name: "b" type: "ReLU" bottom: "a" top: "b" }""")
    out = upgrade.upgrade_net(net)
    assert [layer.name for layer in out.layer] == ["input", "a", "b"]
    assert list(out.layer[0].top) == ["data", "im_info"]
    assert [list(s.dim) for s in out.layer[0].input_param.shape] == \
        [[1, 3, 224, 224], [1, 3]]
    assert len(out.input_shape) == 0


def test_two_inputs_from_input_dim():
    net = parse_net("""
      input: "a" input: "b"
      input_dim: 1 input_dim: 2 input_dim: 3 input_dim: 4
      input_dim: 5 input_dim: 6 input_dim: 7 input_dim: 8""")
    shapes = upgrade.upgrade_net(net).layer[0].input_param.shape
    assert [list(s.dim) for s in shapes] == [[1, 2, 3, 4], [5, 6, 7, 8]]


def test_input_without_shape_is_just_dropped():
    net = parse_net('input: "data" layer { name: "r" type: "ReLU" }')
    out = upgrade.upgrade_net(net)
    assert len(out.input) == 0
    assert [layer.name for layer in out.layer] == ["r"]


def test_input_dim_count_mismatch_is_an_error():
    net = parse_net('input: "data" input_dim: 1 input_dim: 3')
    with pytest.raises(ProtoError, match="input_dim"):
        upgrade.upgrade_net(net, "deploy.prototxt")


# -- BatchNorm -----------------------------------------------------------------

def test_old_batch_norm_param_specs_are_zeroed():
    net = parse_net("""
      layer { name: "bn" type: "BatchNorm" bottom: "x" top: "x"
              param { name: "m" lr_mult: 0 } param { lr_mult: 1 }
              param { lr_mult: 0 decay_mult: 1 } }
      layer { name: "bn2" type: "BatchNorm" bottom: "x" top: "y" }""")
    assert upgrade.net_needs_upgrade(net)
    out = upgrade.upgrade_net(net)
    specs = out.layer[0].param
    assert len(specs) == 3
    assert all(s.lr_mult == 0 and s.HasField("decay_mult")
               and s.decay_mult == 0 for s in specs)
    assert specs[0].name == "m"
    assert len(out.layer[1].param) == 0
    # Still three specs, so Caffe would run the pass again: it must be
    # idempotent.
    assert upgrade.upgrade_net(out) == out


# -- current nets ---------------------------------------------------------------

def test_current_net_needs_no_upgrade():
    net = parse_net("""
      layer { name: "in" type: "Input" top: "data"
              input_param { shape { dim: 1 dim: 1 dim: 4 dim: 4 } } }
      layer { name: "bn" type: "BatchNorm" bottom: "data" top: "bn" }""")
    assert not upgrade.net_needs_upgrade(net)
    out = upgrade.upgrade_net(net)
    assert out == net and out is not net


# -- solver ----------------------------------------------------------------------

@pytest.mark.parametrize("enum_name,type_name", [
    ("SGD", "SGD"), ("NESTEROV", "Nesterov"), ("ADAGRAD", "AdaGrad"),
    ("RMSPROP", "RMSProp"), ("ADADELTA", "AdaDelta"), ("ADAM", "Adam"),
])
def test_solver_type_enum_becomes_string(enum_name, type_name):
    solver = text_format.Merge(f"base_lr: 0.1 solver_type: {enum_name}",
                               pb.SolverParameter())
    assert upgrade.solver_needs_upgrade(solver)
    out = upgrade.upgrade_solver(solver)
    assert out.type == type_name
    assert not out.HasField("solver_type")
    assert out.base_lr == pytest.approx(0.1)
    assert solver.HasField("solver_type"), "input message was modified"
    assert not upgrade.solver_needs_upgrade(out)


def test_solver_with_both_type_fields_is_an_error():
    solver = text_format.Merge('solver_type: ADAM type: "Adam"',
                               pb.SolverParameter())
    with pytest.raises(ProtoError, match="solver_type"):
        upgrade.upgrade_solver(solver, "solver.prototxt")


def test_current_solver_needs_no_upgrade():
    solver = text_format.Merge('type: "Adam" momentum2: 0.99',
                               pb.SolverParameter())
    assert not upgrade.solver_needs_upgrade(solver)
    out = upgrade.upgrade_solver(solver)
    assert out == solver and out is not solver
