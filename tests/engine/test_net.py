"""Net construction as Caffe does it: filtering, splits, in-place, loss weights,
backward needs, parameter sharing, weights I/O and clear errors."""

import numpy as np
import pytest

import engine
from engine import caffe_pb2, formats
from engine.errors import CaffeError, NetError
from engine.net import Net

MLP = """
name: "mlp"
layer { name: "data" type: "Input" top: "x" top: "label"
        input_param { shape { dim: 4 dim: 6 } shape { dim: 4 } } }
layer { name: "ip1" type: "InnerProduct" bottom: "x" top: "h"
        inner_product_param { num_output: 5 weight_filler { type: "gaussian" std: 0.5 }
                              bias_filler { type: "constant" value: 0.1 } } }
layer { name: "relu" type: "ReLU" bottom: "h" top: "h" }
layer { name: "ip2" type: "InnerProduct" bottom: "h" top: "score"
        inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.5 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "score" bottom: "label" top: "loss" }
layer { name: "acc" type: "Accuracy" bottom: "score" bottom: "label" top: "acc"
        include { phase: TEST } }
"""


def write(tmp_path, text, name="net.prototxt"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def feed(net, seed=0):
    rng = np.random.default_rng(seed)
    net.blobs["x"].data[...] = rng.standard_normal(net.blobs["x"].shape)
    net.blobs["label"].data[...] = rng.integers(0, 3, net.blobs["label"].shape)


def test_phase_filtering_and_auto_split(tmp_path):
    train = Net(write(tmp_path, MLP), engine.TRAIN)
    test = Net(write(tmp_path, MLP), engine.TEST)
    assert "acc" not in train.layer_dict and "acc" in test.layer_dict
    # In TEST 'score' feeds loss and accuracy, so Caffe inserts a Split named after it.
    assert "score_ip2_0_split" in test.layer_dict
    assert test.bottom_names["loss"] == ["score_ip2_0_split_0", "label_data_1_split_0"]
    assert test.bottom_names["acc"] == ["score_ip2_0_split_1", "label_data_1_split_1"]
    assert "score_ip2_0_split" not in train.layer_dict


def test_pycaffe_properties(tmp_path):
    net = Net(write(tmp_path, MLP), engine.TRAIN)
    assert net.inputs == ["x", "label"]
    assert net.outputs == ["loss"]
    assert list(net.params) == ["ip1", "ip2"]
    assert [b.shape for b in net.params["ip1"]] == [(5, 6), (5,)]
    assert net.blob_loss_weights["loss"] == 1.0 and net.blob_loss_weights["score"] == 0.0
    assert isinstance(net.blobs["x"].data, np.ndarray) and net.blobs["x"].data.flags.writeable
    assert net.top_names["relu"] == ["h"] and net.bottom_names["relu"] == ["h"]


def test_stages_levels_and_rules():
    state = caffe_pb2.NetState(phase=caffe_pb2.TEST, level=2, stage=["deploy"])
    from engine.netgraph import rule_matches

    assert rule_matches(state, caffe_pb2.NetStateRule(phase=caffe_pb2.TEST, min_level=1))
    assert not rule_matches(state, caffe_pb2.NetStateRule(max_level=1))
    assert rule_matches(state, caffe_pb2.NetStateRule(stage=["deploy"]))
    assert not rule_matches(state, caffe_pb2.NetStateRule(stage=["deploy", "other"]))
    assert not rule_matches(state, caffe_pb2.NetStateRule(not_stage=["deploy"]))


def test_stage_selects_layers(tmp_path):
    text = MLP + 'layer { name: "extra" type: "ReLU" bottom: "score" top: "r" include { stage: "dbg" } }\n'
    path = write(tmp_path, text)
    assert "extra" not in Net(path, engine.TRAIN).layer_dict
    assert "extra" in Net(path, engine.TRAIN, stages=["dbg"]).layer_dict


def test_forward_backward_matches_numeric_gradient(tmp_path):
    net = Net(write(tmp_path, MLP), engine.TRAIN)
    feed(net)
    loss = net.forward()["loss"].item()
    net.clear_param_diffs()
    net.backward()
    w = net.params["ip1"][0]
    analytic = w.diff.copy()
    eps = 1e-3
    for index in [(0, 0), (2, 3), (4, 5)]:
        original = w.data[index]
        w.data[index] = original + eps
        plus = net.forward()["loss"].item()
        w.data[index] = original - eps
        minus = net.forward()["loss"].item()
        w.data[index] = original
        assert abs((plus - minus) / (2 * eps) - analytic[index]) < 2e-3
    assert loss > 0


def test_param_diffs_accumulate_until_cleared(tmp_path):
    net = Net(write(tmp_path, MLP), engine.TRAIN)
    feed(net)
    net.clear_param_diffs()
    net.forward()
    net.backward()
    once = net.params["ip2"][0].diff.copy()
    net.backward()
    np.testing.assert_allclose(net.params["ip2"][0].diff, 2 * once, rtol=1e-6)


def test_backward_needs(tmp_path):
    text = MLP.replace('layer { name: "ip2"', 'layer { name: "ip2" param { lr_mult: 0 } param { lr_mult: 0 }')
    text = text.replace('layer { name: "ip1"', 'layer { name: "ip1" param { lr_mult: 0 } param { lr_mult: 0 }')
    net = Net(write(tmp_path, text), engine.TRAIN)
    # Nothing learnable below the loss: Caffe skips backward everywhere but the loss layer.
    needs = dict(zip(net._layer_names, net.layer_need_backward))
    assert needs == {"data": False, "ip1": False, "relu": False, "ip2": False, "loss": False}
    forced = Net(write(tmp_path, "force_backward: true\n" + text), engine.TRAIN)
    assert all(forced.layer_need_backward)
    loss_index = forced.layer_index("loss")
    assert forced.bottom_need_backward[loss_index] == [True, False]  # never into labels


def test_layers_not_under_a_loss_get_no_backward(tmp_path):
    net = Net(write(tmp_path, MLP), engine.TEST)
    needs = dict(zip(net._layer_names, net.layer_need_backward))
    assert needs["acc"] is False and needs["ip1"] is True


def test_in_place_blob_holds_last_output(tmp_path):
    net = Net(write(tmp_path, MLP), engine.TRAIN)
    feed(net)
    net.forward()
    assert (net.blobs["h"].data >= 0).all()
    assert list(net.blobs).count("h") == 1


def test_explicit_loss_weight_on_consumed_top(tmp_path):
    text = MLP.replace('top: "score"\n', 'top: "score" loss_weight: 0.5\n')
    net = Net(write(tmp_path, text), engine.TRAIN)
    split = net.layer_dict["score_ip2_0_split"]
    assert split.loss_weights == [0.5, 0.0]
    assert net.bottom_names["loss"][0] == "score_ip2_0_split_1"


def test_param_sharing_strict_and_errors(tmp_path):
    base = """
layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 2 dim: 4 } } }
layer { name: "a" type: "InnerProduct" bottom: "x" top: "a" param { name: "w" } inner_product_param { num_output: 4 bias_term: false } }
layer { name: "b" type: "InnerProduct" bottom: "a" top: "b" param { name: "w" } inner_product_param { num_output: NOUT bias_term: false } }
"""
    net = Net(write(tmp_path, base.replace("NOUT", "4")), engine.TEST)
    assert net.params["a"][0] is net.params["b"][0]
    assert len(net.learnable_params) == 1
    with pytest.raises(NetError, match=r"Cannot share param 'w' owned by layer 'a' with layer 'b'; shape mismatch"):
        Net(write(tmp_path, base.replace("NOUT", "3")), engine.TEST)


def test_param_sharing_permissive(tmp_path):
    text = """
layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 2 dim: 6 } } }
layer { name: "a" type: "InnerProduct" bottom: "x" top: "a" param { name: "w" } inner_product_param { num_output: 6 bias_term: false } }
layer { name: "b" type: "InnerProduct" bottom: "a" top: "b" param { name: "w" share_mode: PERMISSIVE }
        inner_product_param { num_output: 6 bias_term: false } }
"""
    net = Net(write(tmp_path, text), engine.TEST)
    net.params["a"][0].data[...] = 3
    assert (net.params["b"][0].data == 3).all()


@pytest.mark.parametrize("text, message", [
    ('layer { name: "r" type: "ReLU" bottom: "nope" top: "y" }', r"Unknown bottom blob 'nope' \(layer 'r', bottom index 0\)"),
    ('layer { name: "i" type: "Input" top: "x" input_param { shape { dim: 1 } } }\n'
     'layer { name: "j" type: "Input" top: "x" input_param { shape { dim: 1 } } }', r"Top blob 'x' produced by multiple sources"),
    ('layer { name: "i" type: "Input" top: "x" input_param { shape { dim: 1 } } }\n'
     'layer { name: "r" type: "ReLU" bottom: "x" bottom: "x" top: "y" }', r"layer 'r' \(ReLU\): takes exactly 1 bottom blob"),
    ('layer { name: "q" type: "NoSuchLayer" top: "x" }', r"Unknown layer type: NoSuchLayer \(known types: .*InnerProduct"),
    ('layer { name: "i" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 } } }\n'
     'layer { name: "fc" type: "InnerProduct" bottom: "x" top: "y" inner_product_param { num_output: 2 axis: 5 } }',
     r"layer 'fc' \(InnerProduct\)"),
])
def test_wiring_errors_name_the_layer_and_line(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(CaffeError, match=message) as info:
        Net(path, engine.TEST)
    assert str(info.value).startswith(f"{path}:")


def test_syntax_error_names_file_line_column(tmp_path):
    path = write(tmp_path, 'layer {\n  name: "a"\n  type: Input"\n}\n')
    with pytest.raises(CaffeError, match=rf"{path}:3:\d+: "):
        Net(path, engine.TEST)


def test_caffemodel_round_trip_and_legacy_shapes(tmp_path):
    path = write(tmp_path, MLP)
    net = Net(path, engine.TRAIN)
    model = tmp_path / "w.caffemodel"
    net.save(str(model))
    other = Net(path, engine.TRAIN, weights=str(model))
    for name in net.params:
        for mine, theirs in zip(net.params[name], other.params[name]):
            np.testing.assert_array_equal(mine.data, theirs.data)
    # Old files store num/channels/height/width; Caffe pads the shape with leading 1s.
    proto = formats.read_binary(model, caffe_pb2.NetParameter)
    for layer in proto.layer:
        for blob in layer.blobs:
            dims = list(blob.shape.dim)
            blob.ClearField("shape")
            blob.num, blob.channels, blob.height, blob.width = [1] * (4 - len(dims)) + dims
    formats.write_binary(tmp_path / "legacy.caffemodel", proto)
    legacy = Net(path, engine.TRAIN, weights=str(tmp_path / "legacy.caffemodel"))
    np.testing.assert_array_equal(legacy.params["ip1"][0].data, net.params["ip1"][0].data)


def test_shape_mismatch_names_layer_blob_and_shapes(tmp_path):
    net = Net(write(tmp_path, MLP), engine.TRAIN)
    model = tmp_path / "w.caffemodel"
    net.save(str(model))
    bigger = Net(write(tmp_path, MLP.replace("num_output: 5", "num_output: 7"), "b.prototxt"), engine.TRAIN)
    with pytest.raises(NetError, match=r"cannot copy param 0 weights from layer 'ip1'; shape mismatch\. "
                                       r"Source param shape is \(5, 6\); target param shape is \(7, 6\)"):
        bigger.copy_from(str(model))


def test_hdf5_weights_round_trip(tmp_path):
    path = write(tmp_path, MLP)
    net = Net(path, engine.TRAIN)
    net.save_hdf5(str(tmp_path / "w.h5"))
    other = Net(path, engine.TRAIN)
    other.load_hdf5(str(tmp_path / "w.h5"))
    np.testing.assert_array_equal(other.params["ip2"][0].data, net.params["ip2"][0].data)


def test_unknown_layers_in_weights_are_ignored(tmp_path):
    net = Net(write(tmp_path, MLP), engine.TRAIN)
    net.save(str(tmp_path / "w.caffemodel"))
    smaller = MLP.replace('name: "ip2"', 'name: "other"')
    Net(write(tmp_path, smaller, "s.prototxt"), engine.TRAIN, weights=str(tmp_path / "w.caffemodel"))


def test_forward_kwargs_start_end_and_reshape(tmp_path):
    net = Net(write(tmp_path, MLP), engine.TEST)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 6)).astype(np.float32)
    out = net.forward(end="ip2", x=x, label=np.zeros(4))
    assert set(out) == {"score"}
    with pytest.raises(NetError, match="not batch sized"):
        net.forward(x=np.zeros((3, 6)))
    net.blobs["x"].reshape(7, 6)
    net.blobs["label"].reshape(7)
    net.reshape()
    assert net.blobs["score"].shape == (7, 3)


def test_pycaffe_constructor_forms(tmp_path):
    path = write(tmp_path, MLP)
    net = Net(path, engine.TRAIN)
    net.save(str(tmp_path / "w.caffemodel"))
    a = Net(path, str(tmp_path / "w.caffemodel"), engine.TEST)
    b = Net(path, engine.TEST, weights=str(tmp_path / "w.caffemodel"))
    np.testing.assert_array_equal(a.params["ip1"][0].data, b.params["ip1"][0].data)
    assert a.phase == engine.TEST


def test_input_header_is_upgraded(tmp_path):
    text = 'input: "x"\ninput_dim: 2\ninput_dim: 3\ninput_dim: 1\ninput_dim: 1\n' \
           'layer { name: "r" type: "ReLU" bottom: "x" top: "y" }\n'
    net = Net(write(tmp_path, text), engine.TEST)
    assert net.inputs == ["x"] and net.blobs["x"].shape == (2, 3, 1, 1)


def test_hdf5_weights_with_slashes_in_layer_names(tmp_path):
    """MobileNet names layers "conv1/bn": HDF5 nests the groups, and the weights still round-trip."""
    text = """name: "slashes"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 dim: 4 dim: 4 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 4 kernel_size: 3 weight_filler { type: "gaussian" std: 1 } } }
layer { name: "conv1/bn" type: "BatchNorm" bottom: "conv1" top: "conv1" }
layer { name: "conv1/scale" type: "Scale" bottom: "conv1" top: "conv1"
        scale_param { bias_term: true filler { type: "gaussian" } bias_filler { type: "gaussian" } } }
"""
    path = tmp_path / "net.prototxt"
    path.write_text(text)
    net = Net(str(path), engine.TRAIN)
    for blob in net.params["conv1/bn"]:
        blob.data[...] = np.arange(blob.count).reshape(blob.shape) + 1
    net.save_hdf5(str(tmp_path / "w.h5"))
    other = Net(str(path), engine.TRAIN)
    other.copy_from(str(tmp_path / "w.h5"))
    for name in ("conv1", "conv1/bn", "conv1/scale"):
        assert len(other.params[name]) == len(net.params[name])
        for mine, theirs in zip(other.params[name], net.params[name]):
            np.testing.assert_array_equal(mine.data, theirs.data)


@pytest.mark.parametrize("change, shape", [("num_output: 5", "0 x 6"), ("dim: 4 dim: 6", "5 x 0")])
def test_empty_parameter_shapes_are_refused(tmp_path, change, shape):
    """Caffe's fillers CHECK that a parameter holds values: num_output 0, or an input of width 0."""
    replacement = "num_output: 0" if change.startswith("num") else "dim: 4 dim: 0"
    path = write(tmp_path, MLP.replace(change, replacement, 1))
    with pytest.raises(NetError, match=rf"^{path}:\d+: layer 'ip1' \(InnerProduct\): parameter blob 0 has an "
                                       rf"empty shape \({shape}\)"):
        Net(path, engine.TRAIN)
