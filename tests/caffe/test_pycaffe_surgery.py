"""Net surgery as pycaffe users do it: turn an InnerProduct into a Convolution by copying params."""

import numpy as np
import pytest

import caffe

CLASSIFIER = """
name: "fc"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 2 dim: 3 dim: 3 } } }
layer { name: "fc" type: "InnerProduct" bottom: "data" top: "fc"
        inner_product_param { num_output: 4 weight_filler { type: "gaussian" std: 1 }
                              bias_filler { type: "gaussian" std: 1 } } }
"""
FULLY_CONV = """
name: "fc-conv"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 2 dim: 5 dim: 6 } } }
layer { name: "fc-conv" type: "Convolution" bottom: "data" top: "fc-conv"
        convolution_param { num_output: 4 kernel_size: 3 } }
"""


@pytest.fixture
def nets(tmp_path):
    paths = {}
    for name, text in (("fc", CLASSIFIER), ("conv", FULLY_CONV)):
        paths[name] = tmp_path / f"{name}.prototxt"
        paths[name].write_text(text)
    caffe.set_random_seed(4)
    return caffe.Net(str(paths["fc"]), caffe.TEST), caffe.Net(str(paths["conv"]), caffe.TEST), paths


def test_fully_connected_to_convolution(nets, tmp_path):
    fc_net, conv_net, paths = nets
    assert fc_net.params["fc"][0].data.shape == (4, 18)
    assert conv_net.params["fc-conv"][0].data.shape == (4, 2, 3, 3)
    conv_net.params["fc-conv"][0].data.flat = fc_net.params["fc"][0].data.flat
    conv_net.params["fc-conv"][1].data[...] = fc_net.params["fc"][1].data

    image = np.random.default_rng(0).standard_normal((1, 2, 5, 6)).astype(np.float32)
    scores = conv_net.forward(data=image)["fc-conv"]
    assert scores.shape == (1, 4, 3, 4)
    # Each output position is the classifier applied to the 3x3 window there.
    for y, x in [(0, 0), (2, 3), (1, 2)]:
        window = np.broadcast_to(image[:, :, y:y + 3, x:x + 3], (2, 2, 3, 3))
        expected = fc_net.forward(data=window)["fc"][0]
        np.testing.assert_allclose(scores[0, :, y, x], expected, rtol=1e-4, atol=1e-5)

    # The edited weights survive a save and a load into a fresh net.
    weights = tmp_path / "surgery.caffemodel"
    conv_net.save(str(weights))
    reloaded = caffe.Net(str(paths["conv"]), str(weights), caffe.TEST)
    np.testing.assert_array_equal(reloaded.forward(data=image)["fc-conv"], scores)


def test_copy_from_and_share_with_go_by_layer_name(nets, tmp_path):
    fc_net, _, paths = nets
    other = caffe.Net(str(paths["fc"]), caffe.TEST)
    assert not np.array_equal(other.params["fc"][0].data, fc_net.params["fc"][0].data)
    weights = tmp_path / "fc.caffemodel"
    fc_net.save(str(weights))
    other.copy_from(str(weights))
    np.testing.assert_array_equal(other.params["fc"][0].data, fc_net.params["fc"][0].data)

    shared = caffe.Net(str(paths["fc"]), caffe.TEST)
    shared.share_with(fc_net)
    fc_net.params["fc"][0].data[0, 0] = 42.0
    assert shared.params["fc"][0].data[0, 0] == 42.0


def test_hdf5_weights_round_trip(nets, tmp_path):
    fc_net, _, paths = nets
    weights = tmp_path / "fc.h5"
    fc_net.save_hdf5(str(weights))
    other = caffe.Net(str(paths["fc"]), caffe.TEST)
    other.load_hdf5(str(weights))
    for mine, theirs in zip(fc_net.params["fc"], other.params["fc"]):
        np.testing.assert_array_equal(mine.data, theirs.data)
