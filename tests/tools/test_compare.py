"""tools/compare and tools/dump_blobs: this engine's blobs against BVLC Caffe's own (tests/caffe-reference),
the first layer that disagrees named, and dump_blobs' files read back by compare."""

import ast
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from engine.net import TEST, Net
from engine.tools import compare, dump_blobs

ROOT = Path(__file__).resolve().parents[2]
from paths import REFERENCE  # noqa: E402

CASES = REFERENCE / "nets"


def case(name):
    folder = CASES / name
    return str(folder / "net.prototxt"), str(folder / "weights.caffemodel"), str(folder / "data.npz")


@pytest.mark.parametrize("name", ["lenet", "cifar10_full"])
def test_agrees_with_caffe_on_its_own_blobs(name, capsys):
    model, weights, blobs = case(name)
    status = compare.main(["--model", model, "--weights", weights, "--reference", blobs])
    out, err = capsys.readouterr()
    assert status == 0, out + err
    reference = np.load(blobs)
    rows = out.splitlines()
    assert rows[0].split() == ["layer", "blob", "shape", "max", "abs", "err", "max", "rel", "err"]
    compared = [line.split()[1] for line in rows[1:-1]]
    assert sorted(compared) == sorted(k[len("data/"):] for k in reference.files if k.startswith("data/"))
    assert all(line.endswith("ok") for line in rows[1:-1])
    assert rows[-1] == f"all {len(compared)} blobs agree (rtol 0.0001, atol 1e-05)"


def test_names_the_first_layer_that_disagrees(tmp_path, capsys):
    model, weights, blobs = case("lenet")
    net = Net(model, TEST, weights=weights)
    net.params["conv2"][0].data[...] *= 1.01
    net.save(str(tmp_path / "changed.caffemodel"))
    status = compare.main(["--model", model, "--weights", str(tmp_path / "changed.caffemodel"), "--reference", blobs])
    out, _ = capsys.readouterr()
    assert status == 1
    rows = {line.split()[0]: line for line in out.splitlines()[1:-1]}
    assert rows["conv1"].endswith("ok") and rows["pool1"].endswith("ok")
    assert rows["conv2"].endswith("DIFFERS")
    assert out.splitlines()[-1].startswith("first disagreement: layer 'conv2' (blob 'conv2', max abs err ")
    # a tolerance wide enough lets it pass
    status = compare.main(["--model", model, "--weights", str(tmp_path / "changed.caffemodel"), "--reference", blobs,
                           "--rtol", "0.5", "--atol", "1"])
    assert status == 0 and capsys.readouterr().out.splitlines()[-1].startswith("all 8 blobs agree")


def test_dump_blobs_reproduces_caffe_and_compare_reads_it(tmp_path, capsys):
    """Under this engine's caffe package, dump_blobs of Caffe's input gives Caffe's blobs, in the same layout."""
    model, weights, blobs = case("lenet")
    reference = np.load(blobs)
    np.save(tmp_path / "input.npy", reference["input/data"])
    out_file = tmp_path / "ours.npz"
    status = dump_blobs.main(["--model", model, "--weights", weights, "--input", f"data={tmp_path / 'input.npy'}",
                              "--output", str(out_file)])
    assert status == 0, capsys.readouterr().err
    ours = np.load(out_file)
    assert sorted(ours.files) == sorted(k for k in reference.files if k.startswith(("data/", "input/")))
    for key in ours.files:
        np.testing.assert_allclose(ours[key], reference[key], rtol=1e-4, atol=1e-5, err_msg=key)
    capsys.readouterr()
    assert compare.main(["--model", model, "--weights", weights, "--reference", str(out_file)]) == 0


def test_random_inputs_are_saved_and_plain_layouts_accepted(tmp_path, capsys):
    model, weights, _ = case("lenet")
    first, second = tmp_path / "a.npz", tmp_path / "b.npz"
    for path in (first, second):
        assert dump_blobs.main(["--model", model, "--weights", weights, "--seed", "3", "--output", str(path)]) == 0
    a, b = np.load(first), np.load(second)
    assert a["input/data"].shape == (4, 1, 28, 28) and a["input/data"].std() > 0.5
    np.testing.assert_array_equal(a["data/prob"], b["data/prob"])
    # plain <blob> arrays, inputs given on the command line
    np.savez(tmp_path / "plain.npz", **{k[len("data/"):]: a[k] for k in a.files if k.startswith("data/")})
    np.save(tmp_path / "x.npy", a["input/data"])
    capsys.readouterr()
    status = compare.main(["--model", model, "--weights", weights, "--reference", str(tmp_path / "plain.npz"),
                           "--input", f"data={tmp_path / 'x.npy'}"])
    assert status == 0, capsys.readouterr()
    # without inputs anywhere, one line says which is missing
    status = compare.main(["--model", model, "--weights", weights, "--reference", str(tmp_path / "plain.npz")])
    assert status == 1
    err = capsys.readouterr().err.strip()
    assert err == "compare: no values for the net input 'data': give --input data=FILE.npy or a reference with " \
                  "input/data"


@pytest.mark.parametrize("args, message", [
    (["--reference", "missing.npz"], "compare: cannot read reference missing.npz: "),
    (["--input", "label=x.npy"], "compare: --input label: cannot read x.npy"),
    (["--input", "nonsense"], "compare: --input takes NAME=FILE.npy, got 'nonsense'"),
])
def test_compare_errors_are_one_line(args, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model, weights, blobs = case("lenet")
    argv = ["--model", model, "--weights", weights, "--reference", blobs]
    argv += args
    assert compare.main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(message) and "\n" not in err, err


def test_compare_refuses_an_input_the_net_lacks(tmp_path, capsys):
    model, weights, blobs = case("lenet")
    np.save(tmp_path / "x.npy", np.zeros((4, 1, 28, 28), np.float32))
    assert compare.main(["--model", model, "--weights", weights, "--reference", blobs,
                         "--input", f"label={tmp_path / 'x.npy'}"]) == 1
    assert capsys.readouterr().err.strip() == "compare: --input label: not an input of the net (its inputs: data)"


def test_dump_blobs_uses_only_numpy_and_pycaffe():
    """It must run under BVLC's pycaffe: no import of this engine."""
    tree = ast.parse((ROOT / "engine" / "tools" / "dump_blobs.py").read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.level == 0}
    assert imported == {"argparse", "sys", "numpy", "caffe"}
    assert not any(isinstance(node, ast.ImportFrom) and node.level for node in ast.walk(tree))


def test_dump_blobs_launcher_prefers_a_caffe_on_pythonpath(tmp_path):
    """tools/dump_blobs takes BVLC's pycaffe when its python/ folder is on PYTHONPATH."""
    other = tmp_path / "bvlc" / "caffe"
    other.mkdir(parents=True)
    (other / "__init__.py").write_text("TEST, TRAIN = 1, 0\n"
                                       "def set_mode_cpu():\n    pass\n"
                                       "def Net(*args):\n    raise RuntimeError('the other pycaffe was called')\n")
    env = dict(os.environ, PYTHONPATH=str(tmp_path / "bvlc"))
    model, weights, _ = case("lenet")
    result = subprocess.run([sys.executable, str(ROOT / "tools" / "dump_blobs"), "--model", model, "--output",
                             str(tmp_path / "x.npz")], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert f"using caffe from {other / '__init__.py'}" in result.stderr
    assert "RuntimeError: the other pycaffe was called" in result.stderr
    result = subprocess.run([sys.executable, str(ROOT / "tools" / "dump_blobs"), "--model", model, "--weights",
                             weights, "--output", str(tmp_path / "x.npz")], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0 and f"using caffe from {ROOT / 'caffe' / '__init__.py'}" in result.stderr
    assert result.stdout.strip() == f"Wrote 8 blobs to {tmp_path / 'x.npz'}"
