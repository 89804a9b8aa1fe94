"""caffe.draw / engine.draw: the graph of a net, its labels, and rendering through Graphviz."""

import shutil

import pytest
from google.protobuf import text_format

import caffe.draw
import engine.draw
from caffe.proto import caffe_pb2

NET = """
name: "small"
layer { name: "data" type: "Data" top: "data" top: "label" data_param { batch_size: 64 }
        include { phase: TRAIN } }
layer { name: "input" type: "Input" top: "data" top: "label" include { phase: TEST } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        param { lr_mult: 2 } param { lr_mult: 0 }
        convolution_param { num_output: 20 kernel_size: 5 stride: 2 } }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
        pooling_param { pool: AVE kernel_size: 2 stride: 2 } }
layer { name: "relu1" type: "ReLU" bottom: "pool1" top: "pool1" }
layer { name: "ip" type: "InnerProduct" bottom: "pool1" top: "ip" inner_product_param { num_output: 10 } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
"""

needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot program is not installed")


@pytest.fixture
def net():
    return text_format.Merge(NET, caffe_pb2.NetParameter())


def test_caffe_draw_is_engine_draw():
    assert caffe.draw.draw_net_to_file is engine.draw.draw_net_to_file
    assert caffe.draw.get_pydot_graph is engine.draw.get_pydot_graph


def test_graph_nodes_edges_and_styles(net):
    graph = caffe.draw.get_pydot_graph(net, "LR")
    nodes = dict(graph.get_nodes())
    assert nodes["conv1_Convolution"]["label"] == "conv1\\n(Convolution)\\nkernel size: 5\\nstride: 2\\npad: 0"
    assert nodes["conv1_Convolution"]["fillcolor"] == "#FF5050"
    assert nodes["pool1_Pooling"]["label"] == "pool1\\n(AVE Pooling)\\nkernel size: 2\\nstride: 2\\npad: 0"
    assert nodes["pool1_Pooling"]["fillcolor"] == "#FF9900"
    assert nodes["ip_InnerProduct"]["fillcolor"] == "#CC33FF"
    assert nodes["relu1_ReLU"]["fillcolor"] == "#90EE90"  # in place
    assert nodes["loss_SoftmaxWithLoss"]["fillcolor"] == "#6495ED"
    assert nodes["conv1_blob"]["shape"] == "octagon"  # consumed after it was produced
    assert "shape" not in nodes["loss_blob"]  # last seen as a top: plain node, as pycaffe draws it
    edges = graph.get_edges()
    assert ("data_Data", "label_blob", "Batch 64") in edges
    assert ("conv1_Convolution", "conv1_blob", "20") in edges
    assert ("ip_InnerProduct", "ip_blob", "10") in edges
    assert ("pool1_blob", "relu1_ReLU", "") in edges and ("relu1_ReLU", "pool1_blob", "") in edges
    unlabeled = caffe.draw.get_pydot_graph(net, "LR", label_edges=False)
    assert all(label == "" for _, _, label in unlabeled.get_edges())


def test_labels_follow_the_direction_and_show_lr_mult(net):
    conv = net.layer[2]
    assert caffe.draw.get_layer_label(conv, "TB") == '"conv1 (Convolution) kernel size: 5 stride: 2 pad: 0"'
    assert caffe.draw.get_layer_label(conv, "LR", display_lrm=True).endswith('\\nlr mult: 2, 0"')
    assert caffe.draw.get_layer_lr_mult(net.layer[5]) == (1.0, 1.0)
    with pytest.raises(ValueError):
        caffe.draw.get_layer_lr_mult(net.layer[3])
    assert caffe.draw.get_pooling_types_dict() == {0: "MAX", 1: "AVE", 2: "STOCHASTIC"}


def test_phase_filter(net):
    train = dict(caffe.draw.get_pydot_graph(net, "LR", phase=caffe_pb2.TRAIN).get_nodes())
    test = dict(caffe.draw.get_pydot_graph(net, "LR", phase=caffe_pb2.TEST).get_nodes())
    everything = dict(caffe.draw.get_pydot_graph(net, "LR").get_nodes())
    assert "data_Data" in train and "input_Input" not in train
    assert "input_Input" in test and "data_Data" not in test
    assert {"data_Data", "input_Input"} <= set(everything)
    both = caffe_pb2.NetParameter()
    both.layer.add(name="x", type="ReLU").include.add(phase=caffe_pb2.TRAIN)
    both.layer[0].exclude.add(phase=caffe_pb2.TEST)
    with pytest.raises(engine.draw.DrawError, match="both include and exclude"):
        caffe.draw.get_pydot_graph(both, "LR", phase=caffe_pb2.TEST)


def test_raw_file_is_dot_text(net, tmp_path):
    path = tmp_path / "net.raw"
    caffe.draw.draw_net_to_file(net, str(path), "BT")
    text = path.read_text()
    assert text.startswith('digraph "small" {\nrankdir="BT";')
    assert '"conv1_Convolution" -> "conv1_blob" [label="20"];' in text


@needs_dot
@pytest.mark.parametrize("ext, magic", [("png", b"\x89PNG"), ("svg", b"<?xml"), ("pdf", b"%PDF")])
def test_rendered_files(net, tmp_path, ext, magic):
    path = tmp_path / f"net.{ext}"
    caffe.draw.draw_net_to_file(net, str(path), phase=caffe_pb2.TEST)
    assert path.read_bytes().startswith(magic)


@needs_dot
def test_awkward_names_still_render():
    net = caffe_pb2.NetParameter(name='quote"d {net}')
    layer = net.layer.add(name='a "weird" <name> | {x}', type="ReLU")
    layer.bottom.append("in\\put")
    layer.top.append("out|put")
    svg = caffe.draw.draw_net(net, "LR", ext="svg").decode()
    assert "weird" in svg and "put" in svg


def test_missing_graphviz_is_a_clear_error(net, monkeypatch):
    monkeypatch.setattr(engine.draw.shutil, "which", lambda name: None)
    with pytest.raises(engine.draw.DrawError, match="Graphviz"):
        caffe.draw.draw_net(net, "LR")
    assert caffe.draw.draw_net(net, "LR", ext="raw").startswith(b"digraph")
