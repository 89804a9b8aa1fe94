"""tools/draw_net: Caffe's python/draw_net.py over engine.draw, on the zoo's nets."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CIFAR = ROOT / "nets" / "cifar10_quick" / "train_val.prototxt"
needs_graphviz = pytest.mark.skipif(shutil.which("dot") is None, reason="needs Graphviz's dot")


def draw(*args):
    return subprocess.run([sys.executable, str(ROOT / "tools" / "draw_net"), *map(str, args)],
                          capture_output=True, text=True)


def node_names(dot_text):
    """Layer node ids ('name_Type') of a DOT graph written by engine.draw."""
    return {line.split('"')[1] for line in dot_text.splitlines() if line.startswith('"') and "->" not in line}


@pytest.mark.parametrize("phase, has_train_data, has_accuracy", [("TRAIN", True, False), ("ALL", True, True)])
def test_phase_selects_layers(tmp_path, phase, has_train_data, has_accuracy):
    out = tmp_path / "cifar.raw"
    result = draw(CIFAR, out, "--phase", phase)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"Drawing net to {out}\n"
    nodes = node_names(out.read_text())
    assert ("cifar_Data" in nodes) == has_train_data
    assert ("accuracy_Accuracy" in nodes) == has_accuracy
    assert {"conv1_Convolution", "ip2_InnerProduct", "loss_SoftmaxWithLoss", "data_blob", "label_blob"} <= nodes


@pytest.mark.parametrize("flags, rankdir", [([], "LR"), (["--rankdir", "BT"], "BT")])
def test_rankdir(tmp_path, flags, rankdir):
    out = tmp_path / "net.raw"
    assert draw(CIFAR, out, *flags).returncode == 0
    assert f'rankdir="{rankdir}";' in out.read_text()


@needs_graphviz
@pytest.mark.parametrize("ext, magic", [("svg", b"<?xml"), ("png", b"\x89PNG"), ("dot", b"digraph")])
def test_rendered_formats(tmp_path, ext, magic):
    out = tmp_path / f"cifar.{ext}"
    result = draw(ROOT / "nets" / "cifar10_quick" / "deploy.prototxt", out, "--rankdir", "TB")
    assert result.returncode == 0, result.stderr
    data = out.read_bytes()
    assert data.startswith(magic)
    if ext != "png":
        assert b"conv3" in data


def test_display_lrm(tmp_path):
    out = tmp_path / "net.raw"
    assert draw(ROOT / "nets" / "vgg_cifar" / "train_val.prototxt", out, "--display_lrm").returncode == 0
    text = out.read_text()
    assert "lr mult: 1, 1" in text  # bias-free convolutions: one param spec, the bias defaults to 1
    assert "lr mult: 1, 2" in text  # the FC layers


def test_v1_prototxt_is_upgraded_before_drawing(tmp_path):
    model = tmp_path / "v1.prototxt"
    model.write_text('name: "old" input: "data" input_dim: 1 input_dim: 1 input_dim: 8 input_dim: 8\n'
                     'layers { name: "conv" type: CONVOLUTION bottom: "data" top: "conv"\n'
                     '         convolution_param { num_output: 4 kernel_size: 3 } }\n'
                     'layers { name: "relu" type: RELU bottom: "conv" top: "conv" }\n')
    out = tmp_path / "v1.raw"
    result = draw(model, out)
    assert result.returncode == 0, result.stderr
    assert {"conv_Convolution", "relu_ReLU"} <= node_names(out.read_text())


@pytest.mark.parametrize("name", ["lenet", "cifar10_quick", "alexnet", "caffenet", "zfnet", "vgg16", "vgg_cifar",
                                  "googlenet", "nin", "resnet18", "resnet50", "mobilenet_v1", "mobilenet_v2"])
def test_every_zoo_net_draws_one_node_per_layer(name):
    from engine import caffe_pb2, draw, formats

    for kind in ("deploy", "train_val"):
        path = ROOT / "nets" / name / f"{kind}.prototxt"
        if not path.exists():
            continue
        net = formats.read_net(path)
        graph = draw.get_pydot_graph(net, "LR", phase=caffe_pb2.TEST)
        layers = [layer for layer in net.layer if not any(rule.phase == caffe_pb2.TRAIN for rule in layer.include)]
        assert {f"{layer.name}_{layer.type}" for layer in layers} <= dict(graph.get_nodes()).keys()


@pytest.mark.parametrize("args, message", [
    (["missing.prototxt", "out.png"], "error: cannot read missing.prototxt"),
    ([CIFAR, "out.png", "--phase", "VAL"], "invalid choice: 'VAL'"),
])
def test_user_errors(tmp_path, args, message):
    result = subprocess.run([sys.executable, str(ROOT / "tools" / "draw_net"), *map(str, args)],
                            capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode != 0
    assert message in result.stderr
    assert not (tmp_path / "out.png").exists()
