"""tools/summary reproduces the published parameter counts and CaffeNet's shapes."""

import subprocess
import sys
from pathlib import Path

import pytest

from engine import summary
from engine.net import TEST, Net

ROOT = Path(__file__).resolve().parents[2]
# The zoo's deploy nets: tests/nets/test_zoo.py checks them layer by layer against
# BVLC's lenet.prototxt, CaffeNet's deploy.prototxt and VGG's published deploy file.
LENET = ROOT / "nets/lenet/deploy.prototxt"
CAFFENET = ROOT / "nets/caffenet/deploy.prototxt"
VGG16 = ROOT / "nets/vgg16/deploy.prototxt"


def run_summary(*args):
    return subprocess.run([sys.executable, str(ROOT / "tools" / "summary"), *map(str, args)],
                          capture_output=True, text=True)


@pytest.mark.parametrize("model, total", [(LENET, 431_080), (CAFFENET, 60_965_224), (VGG16, 138_357_544)])
def test_total_params(model, total):
    result = run_summary("--model", model)
    assert result.returncode == 0, result.stderr
    assert result.stdout.rstrip().splitlines()[-1] == f"Total params: {total:,}"


def test_caffenet_shapes():
    net = Net(str(CAFFENET), TEST)
    chain = ["conv1", "pool1", "conv2", "pool2", "conv3", "conv4", "conv5", "pool5"]
    hwc = [(net.blobs[name].shape[2], net.blobs[name].shape[3], net.blobs[name].shape[1]) for name in chain]
    assert hwc == [(55, 55, 96), (27, 27, 96), (27, 27, 256), (13, 13, 256), (13, 13, 384), (13, 13, 384),
                   (13, 13, 256), (6, 6, 256)]


def test_vgg16_weights_and_biases():
    net = Net(str(VGG16), TEST)
    weights = sum(blobs[0].count for blobs in net.params.values())
    biases = sum(blobs[1].count for blobs in net.params.values())
    assert (weights, biases) == (138_344_128, 13_416)


def test_macs_of_lenet():
    rows, params, macs = summary.summarize(Net(str(LENET), TEST))
    by_name = {row.name: row for row in rows}
    assert by_name["conv1"].macs == 24 * 24 * 20 * 25
    assert by_name["ip1"].macs == 800 * 500
    assert macs == sum(row.macs for row in rows)


def test_shared_params_counted_once(tmp_path):
    model = tmp_path / "shared.prototxt"
    model.write_text("""
layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 2 dim: 4 } } }
layer { name: "a" type: "InnerProduct" bottom: "x" top: "a" param { name: "w" } param { name: "b" }
        inner_product_param { num_output: 4 } }
layer { name: "b" type: "InnerProduct" bottom: "a" top: "b" param { name: "w" } param { name: "b" }
        inner_product_param { num_output: 4 } }
""")
    _, params, _ = summary.summarize(Net(str(model), TEST))
    assert params == 4 * 4 + 4


def test_bad_model_is_one_line(tmp_path):
    model = tmp_path / "bad.prototxt"
    model.write_text('layer { name: "x" type: "Input" top: "x" \n bogus_field: 3 }\n')
    result = run_summary("--model", model)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert f"{model}:2:2" in result.stderr and "bogus_field" in result.stderr
