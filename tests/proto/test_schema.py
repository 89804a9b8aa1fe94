"""Checks that proto/caffe.proto and the committed engine/caffe_pb2.py agree,
and that the schema matches the facts of BVLC Caffe's caffe.proto that
Caffe-made files depend on (field numbers, defaults, enum values)."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from google.protobuf import text_format  # noqa: E402

from engine import caffe_pb2 as pb  # noqa: E402


# -- (a) the committed module is what protoc makes from the schema ----------

def test_generated_module_is_up_to_date(tmp_path):
    if importlib.util.find_spec("grpc_tools") is None:
        pytest.skip("grpc_tools (grpcio-tools) is not installed, cannot run protoc")
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", "-Iproto",
         f"--python_out={tmp_path}", "proto/caffe.proto"],
        cwd=ROOT, check=True)
    fresh = (tmp_path / "caffe_pb2.py").read_bytes()
    committed = (ROOT / "engine" / "caffe_pb2.py").read_bytes()
    assert fresh == committed, (
        "engine/caffe_pb2.py is stale: regenerate with "
        "`python3 -m grpc_tools.protoc -Iproto --python_out=engine "
        "proto/caffe.proto`")


def test_package_and_syntax():
    assert pb.DESCRIPTOR.package == "caffe"
    assert pb.DESCRIPTOR.name == "caffe.proto"
    text = (ROOT / "proto" / "caffe.proto").read_text()
    assert 'syntax = "proto2";' in text


# -- (b) spot checks against Caffe ------------------------------------------

def _field(message, name):
    return message.DESCRIPTOR.fields_by_name[name]


@pytest.mark.parametrize("name,number", [
    ("transform_param", 100), ("loss_param", 101), ("accuracy_param", 102),
    ("convolution_param", 106), ("data_param", 107), ("pooling_param", 121),
    ("batch_norm_param", 139), ("scale_param", 142), ("input_param", 143),
    ("crop_param", 144), ("recurrent_param", 146), ("swish_param", 147),
    ("clip_param", 148), ("python_param", 130), ("prelu_param", 131),
])
def test_layer_parameter_field_numbers(name, number):
    assert _field(pb.LayerParameter, name).number == number


def test_net_parameter_fields():
    assert _field(pb.NetParameter, "layer").number == 100
    assert _field(pb.NetParameter, "layers").number == 2
    assert _field(pb.NetParameter, "input").number == 3
    assert _field(pb.NetParameter, "input_dim").number == 4
    assert _field(pb.NetParameter, "input_shape").number == 8


def test_solver_defaults():
    s = pb.SolverParameter()
    assert s.momentum2 == pytest.approx(0.999)
    assert s.delta == pytest.approx(1e-8)
    assert s.rms_decay == pytest.approx(0.99)
    assert s.regularization_type == "L2"
    assert s.type == "SGD"
    assert s.snapshot_after_train is True
    assert s.test_initialization is True
    assert s.average_loss == 1
    assert s.iter_size == 1
    assert s.clip_gradients == -1
    assert s.random_seed == -1
    assert s.solver_mode == pb.SolverParameter.GPU
    assert s.snapshot_format == pb.SolverParameter.BINARYPROTO
    assert s.solver_type == pb.SolverParameter.SGD
    assert s.layer_wise_reduce is True
    assert _field(pb.SolverParameter, "type").number == 40
    assert _field(pb.SolverParameter, "solver_type").number == 30
    assert _field(pb.SolverParameter, "weights").number == 42


def test_solver_type_enum():
    values = {v.name: v.number for v in
              pb.SolverParameter.SolverType.DESCRIPTOR.values}
    assert values == {"SGD": 0, "NESTEROV": 1, "ADAGRAD": 2, "RMSPROP": 3,
                      "ADADELTA": 4, "ADAM": 5}


def test_convolution_defaults():
    c = pb.ConvolutionParameter()
    assert c.group == 1
    assert c.bias_term is True
    assert c.axis == 1
    assert _field(pb.ConvolutionParameter, "dilation").number == 18
    assert _field(pb.ConvolutionParameter, "kernel_size").is_repeated


def test_pooling_round_trip():
    p = pb.PoolingParameter(pool=pb.PoolingParameter.AVE, kernel_size=3,
                            stride=2, pad=1)
    q = pb.PoolingParameter.FromString(p.SerializeToString())
    assert q == p
    assert q.pool == pb.PoolingParameter.AVE
    assert pb.PoolingParameter().stride == 1
    assert pb.PoolingParameter().round_mode == pb.PoolingParameter.CEIL
    # pool is field 1 and AVE is 1: the wire bytes are Caffe's.
    assert pb.PoolingParameter(pool=pb.PoolingParameter.AVE) \
        .SerializeToString() == b"\x08\x01"


def test_lrn_defaults():
    lrn = pb.LRNParameter()
    assert lrn.local_size == 5
    assert lrn.alpha == 1.0
    assert lrn.beta == pytest.approx(0.75)
    assert lrn.k == 1.0
    assert lrn.norm_region == pb.LRNParameter.ACROSS_CHANNELS


def test_batch_norm_defaults():
    bn = pb.BatchNormParameter()
    assert bn.moving_average_fraction == pytest.approx(0.999)
    assert bn.eps == pytest.approx(1e-5)
    assert not bn.HasField("use_global_stats")


def test_misc_defaults():
    assert pb.FillerParameter().type == "constant"
    assert pb.FillerParameter().std == 1.0
    assert pb.FillerParameter().sparse == -1
    assert pb.DropoutParameter().dropout_ratio == 0.5
    assert pb.NetState().phase == pb.TEST
    assert pb.ParamSpec().lr_mult == 1.0
    assert pb.ParamSpec().decay_mult == 1.0
    assert pb.LossParameter().normalization == pb.LossParameter.VALID
    assert pb.DataParameter().backend == pb.DataParameter.LEVELDB
    assert pb.DataParameter().prefetch == 4
    assert pb.ImageDataParameter().batch_size == 1
    assert pb.MVNParameter().eps == pytest.approx(1e-9)
    assert pb.CropParameter().axis == 2
    assert pb.ConcatParameter().axis == 1
    assert pb.EltwiseParameter().operation == pb.EltwiseParameter.SUM
    assert pb.ExpParameter().base == -1.0
    assert pb.FlattenParameter().end_axis == -1
    assert pb.ReshapeParameter().num_axes == -1
    assert pb.WindowDataParameter().crop_mode == "warp"
    assert pb.SwishParameter().beta == 1.0
    assert pb.InfogainLossParameter().axis == 1
    assert pb.HingeLossParameter().norm == pb.HingeLossParameter.L1
    assert pb.V0LayerParameter().det_crop_mode == "warp"
    assert _field(pb.ClipParameter, "min").is_required
    assert _field(pb.ClipParameter, "max").is_required


def test_v1_layer_type_enum():
    T = pb.V1LayerParameter.LayerType
    assert T.Value("NONE") == 0
    assert T.Value("ACCURACY") == 1
    assert T.Value("CONVOLUTION") == 4
    assert T.Value("DATA") == 5
    assert T.Value("INNER_PRODUCT") == 14
    assert T.Value("POOLING") == 17
    assert T.Value("RELU") == 18
    assert T.Value("SOFTMAX_LOSS") == 21
    assert T.Value("ELTWISE") == 25
    assert T.Value("DUMMY_DATA") == 32
    assert T.Value("ABSVAL") == 35
    assert T.Value("DECONVOLUTION") == 39
    assert len(T.DESCRIPTOR.values) == 40
    assert _field(pb.V1LayerParameter, "layer").number == 1
    assert _field(pb.V1LayerParameter, "param").number == 1001
    assert _field(pb.V1LayerParameter, "blobs_lr").number == 7


def test_v0_layer_fields():
    assert _field(pb.V0LayerParameter, "kernelsize").number == 8
    assert _field(pb.V0LayerParameter, "hdf5_output_param").number == 1001
    assert 57 not in pb.V0LayerParameter.DESCRIPTOR.fields_by_number
    assert pb.V0LayerParameter().biasterm is True


def test_datum_round_trip():
    d = pb.Datum(channels=3, height=2, width=2, data=bytes(range(12)),
                 label=7)
    raw = d.SerializeToString()
    back = pb.Datum.FromString(raw)
    assert back == d
    assert back.data == bytes(range(12))
    assert back.label == 7
    assert back.encoded is False
    # channels is field 1 (varint): Caffe's LMDB records start this way.
    assert raw[:2] == b"\x08\x03"


def test_blob_proto_is_packed():
    b = pb.BlobProto(data=[1.0, 2.0])
    b.shape.dim.extend([2])
    raw = b.SerializeToString()
    # field 5, wire type 2 (packed), 8 bytes of floats
    assert b"\x2a\x08" in raw


# -- (c) text format ---------------------------------------------------------

SMALL_NET = """
name: "tiny"
input: "data"
input_shape { dim: 1 dim: 3 dim: 8 dim: 8 }
layer {
  name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  param { lr_mult: 1 decay_mult: 1 }
  param { lr_mult: 2 decay_mult: 0 }
  convolution_param {
    num_output: 4 kernel_size: 3 pad: 1 stride: 1
    weight_filler { type: "xavier" }
    bias_filler { type: "constant" value: 0.1 }
  }
}
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer {
  name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
  pooling_param { pool: MAX kernel_size: 2 stride: 2 }
}
layer {
  name: "loss" type: "SoftmaxWithLoss" bottom: "pool1" bottom: "label"
  include { phase: TRAIN }
  loss_param { normalization: BATCH_SIZE ignore_label: 255 }
}
"""


def test_text_format_parse_small_net():
    net = text_format.Merge(SMALL_NET, pb.NetParameter())
    assert net.name == "tiny"
    assert list(net.input) == ["data"]
    assert list(net.input_shape[0].dim) == [1, 3, 8, 8]
    assert [layer.type for layer in net.layer] == \
        ["Convolution", "ReLU", "Pooling", "SoftmaxWithLoss"]
    conv = net.layer[0].convolution_param
    assert conv.num_output == 4
    assert list(conv.kernel_size) == [3]
    assert conv.bias_filler.value == pytest.approx(0.1)
    assert net.layer[0].param[1].decay_mult == 0
    assert net.layer[2].pooling_param.pool == pb.PoolingParameter.MAX
    assert net.layer[3].include[0].phase == pb.TRAIN
    assert net.layer[3].loss_param.normalization == \
        pb.LossParameter.BATCH_SIZE
    # text -> message -> text -> message is stable
    again = text_format.Merge(text_format.MessageToString(net),
                              pb.NetParameter())
    assert again == net


def test_text_format_rejects_unknown_field():
    # A field no Caffe fork has.
    with pytest.raises(text_format.ParseError, match="no_such_param"):
        text_format.Merge('layer { name: "x" no_such_param { } }',
                          pb.NetParameter())


def test_text_format_solver():
    s = text_format.Merge(
        'net: "train.prototxt" base_lr: 0.01 lr_policy: "step" '
        'stepsize: 100 solver_type: ADAM solver_mode: CPU',
        pb.SolverParameter())
    assert s.solver_type == pb.SolverParameter.ADAM
    assert s.solver_mode == pb.SolverParameter.CPU
    assert s.HasField("solver_type") and not s.HasField("type")
