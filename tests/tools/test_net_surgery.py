"""tools/net_surgery fc2conv: InnerProduct layers become Convolutions computing the same scores.

CaffeNet (the zoo's deploy net) with random weights: the fully convolutional
net gives the FC net's scores on a 227x227 image and an 8x8 map of scores on
451x451, as in Caffe's examples/net_surgery.
"""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from engine import caffe_pb2, formats, surgery
from engine.errors import NetError
from engine.net import TEST, Net

ROOT = Path(__file__).resolve().parents[2]
CAFFENET = ROOT / "nets" / "caffenet" / "deploy.prototxt"


def random_weights(net, seed=0):
    """Weights of std 1/sqrt(fan-in) (activations stay of order 1 through the net), biases small."""
    rng = np.random.default_rng(seed)
    for blobs in net.params.values():
        for index, blob in enumerate(blobs):
            fan_in = blob.count // blob.shape[0] if index == 0 and blob.num_axes > 1 else 1
            std = 1 / np.sqrt(fan_in) if index == 0 else 0.1
            blob.data[...] = rng.standard_normal(blob.shape) * std


@pytest.fixture(scope="module")
def caffenet(tmp_path_factory):
    """CaffeNet's deploy net at batch 1 and random weights on disk (HDF5: 60M floats load fast)."""
    folder = tmp_path_factory.mktemp("caffenet")
    param = formats.read_net(CAFFENET)
    param.layer[0].input_param.shape[0].dim[0] = 1
    model = folder / "deploy.prototxt"
    formats.write_text(model, param)
    net = Net(str(model), TEST)
    random_weights(net)
    weights = folder / "weights.caffemodel.h5"
    net.save_hdf5(str(weights))
    image = np.random.default_rng(1).standard_normal((1, 3, 451, 451)).astype(np.float32) * 50
    return model, weights, net, image


def test_full_conv_caffenet_matches_fc_scores(caffenet):
    model, weights, fc_net, image = caffenet
    crop = image[:, :, :227, :227]
    fc_scores = fc_net.forward(data=crop)["prob"].copy()
    fc8 = fc_net.blobs["fc8"].data.copy()
    param, conv_net, conversions = surgery.fc_to_conv(str(model), str(weights))
    assert [(c.old_name, c.new_name, c.kernel) for c in conversions] == [
        ("fc6", "fc6-conv", (256, 6, 6)), ("fc7", "fc7-conv", (4096, 1, 1)), ("fc8", "fc8-conv", (4096, 1, 1))]
    assert [layer.type for layer in param.layer if layer.name.startswith("fc")] == ["Convolution"] * 3
    conv_scores = conv_net.forward(data=crop)["prob"]
    assert conv_scores.shape == (1, 1000, 1, 1)
    assert np.abs(fc8).max() > 1  # the scores are not trivially small
    np.testing.assert_allclose(conv_net.blobs["fc8-conv"].data.reshape(1, 1000), fc8, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(conv_scores.reshape(1, 1000), fc_scores, rtol=1e-4, atol=1e-6)
    # The renamed ReLU and Dropout layers work in place on the renamed blobs.
    assert conv_net.top_names["relu6"] == ["fc6-conv"] and conv_net.top_names["drop7"] == ["fc7-conv"]


def test_cli_writes_a_score_map_net(caffenet, tmp_path):
    model, weights, fc_net, image = caffenet
    out_model, out_weights = tmp_path / "full_conv.prototxt", tmp_path / "full_conv.caffemodel.h5"
    result = subprocess.run([sys.executable, str(ROOT / "tools" / "net_surgery"), "fc2conv", "--model", str(model),
                             "--weights", str(weights), "--out-model", str(out_model), "--out-weights",
                             str(out_weights), "--input-shape", "1,3,451,451"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "fc6 -> fc6-conv: Convolution 256x6x6" in result.stdout
    assert "prob 1x1000x8x8" in result.stdout
    net = Net(str(out_model), TEST, weights=str(out_weights))
    assert net.name == "CaffeNetConv"
    scores = net.forward(data=image)["prob"]
    assert scores.shape == (1, 1000, 8, 8)
    np.testing.assert_allclose(scores.sum(axis=1), 1, rtol=1e-5)
    # The weights were carried over, reshaped: fc6's rows are fc6-conv's 256x6x6 filters.
    np.testing.assert_array_equal(net.params["fc6-conv"][0].data.reshape(4096, -1), fc_net.params["fc6"][0].data)
    np.testing.assert_array_equal(net.params["conv1"][0].data, fc_net.params["conv1"][0].data)


def _small_net(transpose=False, height=2, width=3):
    return formats.parse_text(f"""
        name: "small"
        layer {{ name: "data" type: "Input" top: "data"
                input_param {{ shape {{ dim: 2 dim: 4 dim: {height} dim: {width} }} }} }}
        layer {{ name: "ip1" type: "InnerProduct" bottom: "data" top: "ip1"
                inner_product_param {{ num_output: 5 transpose: {str(transpose).lower()} }} }}
        layer {{ name: "relu" type: "ReLU" bottom: "ip1" top: "ip1" }}
        layer {{ name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2"
                inner_product_param {{ num_output: 3 bias_term: false }} }}
    """, caffe_pb2.NetParameter())


@pytest.mark.parametrize("transpose", [False, True])
@pytest.mark.parametrize("layers", [None, ["ip1"]])
def test_rectangular_kernels_transpose_and_partial_conversion(tmp_path, transpose, layers):
    source = Net(_small_net(transpose), TEST)
    random_weights(source, seed=3)
    weights = tmp_path / "small.caffemodel"
    source.save(str(weights))
    data = np.random.default_rng(2).standard_normal((2, 4, 2, 3)).astype(np.float32)
    expected = source.forward(data=data)["ip2"].copy()
    param, net, _ = surgery.fc_to_conv(_small_net(transpose), str(weights), layers)
    conv = param.layer[1].convolution_param
    assert (conv.kernel_h, conv.kernel_w, conv.num_output) == (2, 3, 5)
    assert param.layer[3].type == ("Convolution" if layers is None else "InnerProduct")
    if layers is None:
        assert not param.layer[3].convolution_param.bias_term
    output = net.forward(data=data)[net.outputs[0]]
    np.testing.assert_allclose(output.reshape(expected.shape), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("layers, message", [
    (["relu"], "it is a ReLU layer"),
    (["nope"], "it is not in the net"),
    (["ip2"], "its bottom 'ip1' is a flat N x 5 blob"),
])
def test_bad_layer_choices(layers, message):
    with pytest.raises(NetError, match=message):
        surgery.fc_to_conv(_small_net(), None, layers)


def test_cli_reports_user_errors_on_one_line(caffenet, tmp_path):
    model, weights, _, _ = caffenet
    result = subprocess.run([sys.executable, str(ROOT / "tools" / "net_surgery"), "fc2conv", "--model", str(model),
                             "--weights", str(weights), "--out-model", str(tmp_path / "a.prototxt"),
                             "--out-weights", str(tmp_path / "a.caffemodel"), "--layers", "conv1"],
                            capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "error: cannot convert 'conv1' to a convolution: it is a Convolution layer "
        "(InnerProduct layers: fc6, fc7, fc8)"]
    assert not (tmp_path / "a.prototxt").exists()


def test_cli_writes_caffemodel_weights(tmp_path):
    model = tmp_path / "small.prototxt"
    formats.write_text(model, _small_net())
    source = Net(str(model), TEST)
    random_weights(source, seed=5)
    source.save(str(tmp_path / "small.caffemodel"))
    result = subprocess.run([sys.executable, str(ROOT / "tools" / "net_surgery"), "fc2conv", "--model", str(model),
                             "--weights", str(tmp_path / "small.caffemodel"), "--out-model",
                             str(tmp_path / "conv.prototxt"), "--out-weights", str(tmp_path / "conv.caffemodel"),
                             "--suffix", "_c"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    net = Net(str(tmp_path / "conv.prototxt"), TEST, weights=str(tmp_path / "conv.caffemodel"))
    assert list(net.params) == ["ip1_c", "ip2_c"]
    np.testing.assert_array_equal(net.params["ip1_c"][0].data.reshape(5, -1), source.params["ip1"][0].data)
