"""NetSpec: pycaffe's naming and parameter rules, and generate -> write -> load -> run."""

import numpy as np
import pytest
from google.protobuf import text_format

import caffe
from caffe import layers as L
from caffe import params as P
from caffe.proto import caffe_pb2


def test_named_tops_name_layers_and_in_place_keeps_the_bottom():
    n = caffe.NetSpec()
    n.data, n.label = L.Input(shape=[dict(dim=[2, 3]), dict(dim=[2])], ntop=2)
    n.ip = L.InnerProduct(n.data, num_output=4)
    n.act = L.ReLU(n.ip, in_place=True)
    n.out = L.InnerProduct(n.act, num_output=2)
    proto = n.to_proto()
    assert [layer.name for layer in proto.layer] == ["data", "ip", "act", "out"]
    assert list(proto.layer[0].top) == ["data", "label"]
    assert list(proto.layer[2].bottom) == list(proto.layer[2].top) == ["ip"]
    assert list(proto.layer[3].bottom) == ["ip"]


def test_anonymous_tops_count_per_type():
    data = L.Input(shape=dict(dim=[1, 3]))
    first = L.InnerProduct(data, num_output=3)
    second = L.InnerProduct(first, num_output=3)
    relu = L.ReLU(second, in_place=True)
    silence = L.Silence(relu, ntop=0)
    proto = caffe.to_proto(silence)
    assert [layer.name for layer in proto.layer] == ["Input1", "InnerProduct1", "InnerProduct2", "ReLU1",
                                                     "Silence1"]
    assert list(proto.layer[2].top) == ["InnerProduct2"]
    assert list(proto.layer[3].top) == ["InnerProduct2"]
    assert list(proto.layer[4].top) == []
    # A top's to_proto emits everything it depends on, too.
    assert len(second.to_proto().layer) == 3


def test_a_topless_layer_assigned_to_the_spec_takes_that_name():
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[3]))
    n.quiet = L.Silence(n.data, ntop=0)
    assert [layer.name for layer in n.to_proto().layer] == ["data", "quiet"]


def test_keywords_go_to_the_type_param_or_the_layer():
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[2, 1, 8, 8]))
    n.conv = L.Convolution(n.data, kernel_size=3, num_output=4, pad=1, weight_filler=dict(type="xavier"),
                           param=[dict(lr_mult=1, decay_mult=1), dict(lr_mult=2, decay_mult=0)],
                           include=dict(phase=caffe.TRAIN), loss_weight=0.5, name="renamed")
    n.pool = L.Pooling(n.conv, pool=P.Pooling.AVE, kernel_size=2, stride=2)
    n.up = L.Deconvolution(n.pool, num_output=4, kernel_size=2, stride=2)
    conv, pool, up = n.to_proto().layer[1:]
    assert conv.name == "renamed"
    assert list(conv.convolution_param.kernel_size) == [3] and list(conv.convolution_param.pad) == [1]
    assert conv.convolution_param.weight_filler.type == "xavier"
    assert [(p.lr_mult, p.decay_mult) for p in conv.param] == [(1, 1), (2, 0)]
    assert conv.include[0].phase == caffe.TRAIN and list(conv.loss_weight) == [0.5]
    assert pool.pooling_param.pool == caffe_pb2.PoolingParameter.AVE
    assert up.convolution_param.num_output == 4 and list(up.convolution_param.stride) == [2]


def test_python_layer_and_several_tops():
    n = caffe.NetSpec()
    n.a, n.b = L.Python(module="my_module", layer="MyLayer", param_str="{'k': 1}", ntop=2)
    layer = n.to_proto().layer[0]
    assert layer.type == "Python" and list(layer.top) == ["a", "b"]
    assert (layer.python_param.module, layer.python_param.layer) == ("my_module", "MyLayer")
    assert layer.python_param.param_str == "{'k': 1}"


def test_bottoms_must_be_tops():
    pair = L.Input(shape=[dict(dim=[1]), dict(dim=[1])], ntop=2)
    with pytest.raises(TypeError, match=r"^Eltwise input 0 is not a Top \(type is <class 'tuple'>\)$"):
        L.Eltwise(pair)
    L.Eltwise(*pair)


def test_unknown_field_is_an_error():
    with pytest.raises(AttributeError):
        caffe.to_proto(L.InnerProduct(L.Input(shape=dict(dim=[1, 2])), num_outputs=2))


def test_missing_top_is_an_attribute_error():
    n = caffe.NetSpec()
    assert not hasattr(n, "nothing")
    with pytest.raises(KeyError):
        n["nothing"]  # noqa: B018


def test_generated_net_is_written_loaded_and_run(tmp_path):
    n = caffe.NetSpec()
    n.data, n.label = L.Input(shape=[dict(dim=[3, 1, 4, 4]), dict(dim=[3])], ntop=2)
    n.conv = L.Convolution(n.data, kernel_size=3, num_output=2, bias_filler=dict(type="constant", value=0.5),
                           weight_filler=dict(type="constant", value=1))
    n.pool = L.Pooling(n.conv, pool=P.Pooling.MAX, kernel_size=2, stride=2)
    n.score = L.InnerProduct(n.pool, num_output=3, weight_filler=dict(type="constant", value=0.25))
    n.loss = L.SoftmaxWithLoss(n.score, n.label)
    path = tmp_path / "net.prototxt"
    path.write_text(str(n.to_proto()))
    parsed = text_format.Merge(path.read_text(), caffe_pb2.NetParameter())
    assert parsed == n.to_proto()
    net = caffe.Net(str(path), caffe.TRAIN)
    assert list(net.blobs) == ["data", "label", "conv", "pool", "score", "loss"]
    x = np.arange(48, dtype=np.float32).reshape(3, 1, 4, 4) / 48
    net.blobs["data"].data[...] = x
    net.blobs["label"].data[...] = [0, 1, 2]
    net.forward()
    # conv: 3x3 sums plus 0.5, both channels equal; max pool of the 2x2 map picks its bottom-right sum.
    window_sums = np.array([x[i, 0, 1:4, 1:4].sum() for i in range(3)]) + 0.5
    np.testing.assert_allclose(net.blobs["pool"].data[:, :, 0, 0], np.stack([window_sums] * 2, 1), rtol=1e-5)
    np.testing.assert_allclose(net.blobs["score"].data, np.stack([window_sums * 0.5] * 3, 1), rtol=1e-5)
    np.testing.assert_allclose(net.blobs["loss"].data, np.log(3), rtol=1e-5)
