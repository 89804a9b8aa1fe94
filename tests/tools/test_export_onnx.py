"""tools/export_onnx: writes a model ONNX Runtime runs, --outputs and --check, one-line errors."""

import subprocess
import sys

import numpy as np
import pytest

from engine.export import onnx_export
from engine.tools.export_onnx import main

import onnx_check
from paths import ROOT

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")


@pytest.fixture
def lenet(tmp_path):
    """LeNet's deploy net with random weights saved as a .caffemodel."""
    path = ROOT / "nets" / "lenet" / "deploy.prototxt"
    net = onnx_check.build(path, batch=None)
    onnx_check.prepare(net)
    weights = tmp_path / "lenet.caffemodel"
    net.save(str(weights))
    return path, weights, net


def test_writes_a_model_that_agrees(lenet, tmp_path, capsys):
    path, weights, net = lenet
    output = tmp_path / "lenet.onnx"
    assert main(["--model", str(path), "--weights", str(weights), "--output", str(output), "--check"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"wrote {output}: ") and "opset 21, outputs prob" in out
    error = float(out.split("output prob: max |engine - onnxruntime| / max |engine| = ")[1].split()[0])
    assert error < 1e-5
    model = onnx.load(str(output))
    x = np.random.default_rng(0).standard_normal(net.blobs["data"].shape).astype(np.float32)
    theirs = onnx_export.run_onnx(model, {"data": x})["prob"]
    net.blobs["data"].data[...] = x
    net.forward()
    assert np.allclose(theirs, net.blobs["prob"].data, rtol=1e-4, atol=1e-7)


def test_outputs_and_opset(lenet, tmp_path, capsys):
    path, weights, _ = lenet
    output = tmp_path / "part.onnx"
    assert main(["--model", str(path), "--weights", str(weights), "--output", str(output), "--outputs", "ip1,pool2",
                 "--outputs", "conv1", "--opset", "17"]) == 0
    model = onnx.load(str(output))
    assert [o.name for o in model.graph.output] == ["ip1", "pool2", "conv1"]
    assert model.opset_import[0].version == 17
    assert not any(node.op_type in ("Gemm", "Softmax") and "ip2" in node.name for node in model.graph.node)


def test_ssd_deploy_net_up_to_detection_output(tmp_path, capsys):
    path = ROOT / "nets" / "ssd_shapes" / "deploy.prototxt"
    net = onnx_check.build(path)
    onnx_check.prepare(net)
    weights = tmp_path / "ssd.caffemodel"
    net.save(str(weights))
    output = tmp_path / "ssd.onnx"
    args = ["--model", str(path), "--weights", str(weights), "--output", str(output)]
    assert main(args) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("export_onnx: ") and "layer 'detection_out' (DetectionOutput)" in err and "\n" not in err
    assert not output.exists()
    heads = ",".join(net.bottom_names["detection_out"])
    assert main(args + ["--outputs", heads, "--check"]) == 0
    out = capsys.readouterr().out
    assert out.count("max |engine - onnxruntime|") == 3


@pytest.mark.parametrize("args, message", [
    (["--model", "nowhere.prototxt", "--weights", "w", "--output", "x.onnx"], "nowhere.prototxt"),
    (["--model", str(ROOT / "nets" / "lenet" / "train_test.prototxt"), "--weights", "W", "--output", "x.onnx"],
     "a data layer has no ONNX form"),
    (["--model", str(ROOT / "nets" / "lenet" / "deploy.prototxt"), "--weights", "WEIGHTS", "--output", "x.onnx",
      "--outputs", "nope"], "no blob named 'nope'"),
    (["--model", str(ROOT / "nets" / "lenet" / "deploy.prototxt"), "--weights", "WEIGHTS", "--output", "x.onnx",
      "--opset", "9"], "opset 9 is not supported"),
])
def test_mistakes_are_one_line(lenet, args, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    args = [str(lenet[1]) if a == "WEIGHTS" else a for a in args]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert err.startswith("export_onnx: ") and message in err and err.count("\n") == 1, err


def test_launcher_runs_from_another_folder(lenet, tmp_path):
    path, weights, _ = lenet
    result = subprocess.run([sys.executable, str(ROOT / "tools" / "export_onnx"), "--model", str(path),
                             "--weights", str(weights), "--output", "out.onnx"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out.onnx").is_file()


def test_missing_onnx_package_is_one_line(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx now raises ImportError
    assert main(["--model", "m", "--weights", "w", "--output", "x.onnx"]) == 1
    err = capsys.readouterr().err
    assert err == "export_onnx: export_onnx needs the onnx package: pip install '.[onnx]' (or pip install onnx)\n"
