"""Parity with BVLC Caffe's own training runs in caffe-reference/solvers (README: run from the
case folder; start from init.caffemodel; compare the loss after every step(1) and the final
weights; and again when restored from Caffe's state_iter_<k>.solverstate)."""

import json
import logging
import re
from pathlib import Path

import numpy as np
import pytest

from engine import backend
from engine.solvers import get_solver

from paths import REFERENCE  # noqa: E402
CASES = sorted(p for p in (REFERENCE / "solvers").glob("*") if (p / "case.json").exists())


def load(case):
    meta = json.loads((case / "case.json").read_text())
    result = np.load(case / "result.npz")
    return meta, result


def check_final(solver, result, meta):
    problems = []
    for key in result.files:
        if not key.startswith("final/"):
            continue
        _, layer, index = key.split("/")
        ours = backend.to_host(solver.net.params[layer][int(index)].data)
        if not np.allclose(ours, result[key], rtol=meta["rtol"], atol=meta["atol"]):
            problems.append(f"{key}: max abs error {np.abs(ours - result[key]).max():.3g}")
    return problems


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_training_matches_caffe(case, monkeypatch, caplog, mode):
    monkeypatch.chdir(case)
    meta, result = load(case)
    solver = get_solver("solver.prototxt")
    solver.net.copy_from("init.caffemodel")
    losses = []
    with caplog.at_level(logging.INFO, logger="engine"):
        for _ in range(meta["iters"]):
            solver.step(1)
            losses.append(float(solver.net.blobs["loss"].data))
    np.testing.assert_allclose(losses, result["loss"], rtol=meta["rtol"], atol=meta["atol"])
    problems = check_final(solver, result, meta)
    assert not problems, "\n".join(problems)
    # The log says what Caffe's said: the same lr lines and schedule messages, word for word.
    theirs = (case / "caffe.log").read_text()
    ours = "\n".join(caplog.messages)
    pattern = r"(?:^|\] )((?:Iteration \d+, lr = |MultiStep Status: ).*)"
    assert re.findall(pattern, theirs, re.M)
    assert re.findall(pattern, ours, re.M) == re.findall(pattern, theirs, re.M)
    ours_clip = re.findall(r"Gradient clipping: scaling down gradients \(L2 norm (\S+) > (\S+)\)", ours)
    theirs_clip = re.findall(r"Gradient clipping: scaling down gradients \(L2 norm (\S+) > (\S+)\)", theirs)
    assert len(ours_clip) == len(theirs_clip)
    for (a, ca), (b, cb) in zip(ours_clip, theirs_clip):
        assert ca == cb and float(a) == pytest.approx(float(b), rel=1e-4)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_resuming_from_caffes_state(case, monkeypatch, mode):
    monkeypatch.chdir(case)
    meta, result = load(case)
    states = sorted(case.glob("state_iter_*.solverstate"))
    assert states, "no Caffe snapshot in the case"
    k = int(re.search(r"_iter_(\d+)\.solverstate", states[0].name).group(1))
    solver = get_solver("solver.prototxt")
    solver.restore(states[0].name)
    assert solver.iter == k
    solver.step(meta["iters"] - k)
    problems = check_final(solver, result, meta)
    assert not problems, "\n".join(problems)


def test_caffes_lenet_state_restores(monkeypatch, tmp_path):
    """Caffe's LeNet snapshot at 5000 (SGD: 8 history blobs) restores into our LeNet."""
    trained = REFERENCE / "trained" / "lenet_fmnist"
    from engine import caffe_pb2, formats

    root = Path(__file__).resolve().parents[3]
    net = formats.read_net(str(root / "nets" / "lenet" / "train_test.prototxt"))
    keep = [layer for layer in net.layer if layer.type != "Data"]
    del net.layer[:]
    data = net.layer.add()
    data.name, data.type = "data", "Input"
    data.top.extend(["data", "label"])
    data.input_param.shape.add().dim.extend([2, 1, 28, 28])
    data.input_param.shape.add().dim.extend([2])
    net.layer.extend(keep)
    param = formats.read_solver(str(root / "solvers" / "lenet.prototxt"))
    param.ClearField("net")
    param.ClearField("test_iter")
    param.net_param.CopyFrom(net)
    param.snapshot_prefix = str(tmp_path / "lenet")
    solver = get_solver(param)
    monkeypatch.chdir(trained)
    solver.restore("state_iter_5000.solverstate")
    assert solver.iter == 5000
    state = formats.read_binary("state_iter_5000.solverstate", caffe_pb2.SolverState)
    np.testing.assert_array_equal(solver.history[4], formats.blobproto_to_array(state.history[4]))
    weights = formats.read_weights("weights_iter_5000.caffemodel")
    np.testing.assert_array_equal(solver.net.params["conv2"][0].data,
                                  formats.blobproto_to_array(weights["conv2"][0]))


@pytest.mark.slow
def test_caffe_test_command_reproduces_caffes_scores(tmp_path, capsys):
    """README: `caffe test` of Caffe's LeNet snapshot on Caffe's test_lmdb prints accuracy = 0.8981 and
    loss = 0.286322; tools/test (the same code as `caffe test`) must print the same."""
    trained = REFERENCE / "trained" / "lenet_fmnist"
    from engine.solvers import cli

    root = Path(__file__).resolve().parents[3]
    text = (root / "nets" / "lenet" / "train_test.prototxt").read_text()
    text = text.replace("data/fashion_mnist/test_lmdb", str(trained / "test_lmdb"))
    (tmp_path / "lenet.prototxt").write_text(text)
    status = cli.test_main(["--model", str(tmp_path / "lenet.prototxt"), "--weights",
                            str(trained / "weights_iter_5000.caffemodel"), "--iterations", "100"])
    err = capsys.readouterr().err
    assert status == 0, err
    assert re.search(r"\] accuracy = 0\.8981$", err, re.M)
    assert re.search(r"\] loss = 0\.286322 \(\* 1 = 0\.286322 loss\)$", err, re.M)
