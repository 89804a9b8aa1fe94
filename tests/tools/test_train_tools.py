"""tools/train, tools/caffe, tools/test, tools/time, tools/parse_log and tools/plot_log:
Caffe's flags and output lines, and one clear line (exit status 1, nothing on disk
touched) for each kind of bad input."""

import hashlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from engine import formats
from engine.backend import gpu_available
from engine.solvers import cli

ROOT = Path(__file__).resolve().parents[2]
from paths import REFERENCE  # noqa: E402
GLOG = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:\d\d\.\d{6} +\d+ [\w.]+:\d+\] ")

NET = """name: "toolnet"
layer { name: "data" type: "HDF5Data" top: "data" top: "label" hdf5_data_param { source: "list.txt" batch_size: 8 } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
        inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "accuracy" type: "Accuracy" bottom: "ip" bottom: "label" top: "accuracy" include { phase: TEST } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
"""
SOLVER = """net: "net.prototxt"
base_lr: 0.1
momentum: 0.9
lr_policy: "step"
gamma: 0.5
stepsize: 4
max_iter: 6
display: 2
test_iter: 2
test_interval: 3
snapshot_prefix: "snap"
random_seed: 7
solver_mode: CPU
"""


@pytest.fixture
def work(tmp_path, monkeypatch):
    """A folder with an HDF5 dataset (one batch of 8), net and solver; the tools run inside it."""
    rng = np.random.default_rng(0)
    with h5py.File(tmp_path / "data.h5", "w") as f:
        f["data"] = rng.standard_normal((8, 2, 3)).astype(np.float32)
        f["label"] = (np.arange(8) % 3).astype(np.float32)
    (tmp_path / "list.txt").write_text("data.h5\n")
    (tmp_path / "net.prototxt").write_text(NET)
    (tmp_path / "solver.prototxt").write_text(SOLVER)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def call(main, *args, capsys):
    status = main(list(args))
    out, err = capsys.readouterr()
    return status, out, err


def error_lines(err, program="train"):
    """The tool's own message lines; a traceback would be a bug, never a user-facing error."""
    assert "Traceback" not in err, err
    return [line for line in err.splitlines() if line.startswith(f"{program}: ")]


def snapshot_state(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


# -- train ------------------------------------------------------------------------------
def test_train_runs_tests_displays_and_snapshots(work, capsys):
    status, _, err = call(cli.train_main, "--solver", "solver.prototxt", capsys=capsys)
    assert status == 0, err
    lines = [line for line in err.splitlines() if GLOG.match(line)]
    assert lines and all(GLOG.match(line) for line in lines)
    messages = [GLOG.sub("", line) for line in lines]
    for expected in ("Use CPU.", "Solving toolnet", "Learning Rate Policy: step", "Iteration 0, Testing net (#0)",
                     "Iteration 3, Testing net (#0)", "Iteration 6, Testing net (#0)", "Optimization Done.",
                     "Snapshotting to binary proto file snap_iter_6.caffemodel", "Iteration 4, lr = 0.05"):
        assert expected in messages, expected
    assert any(m.startswith("    Test net output #0: accuracy = ") for m in messages)
    assert any(re.match(r"    Test net output #1: loss = \S+ \(\* 1 = \S+ loss\)", m) for m in messages)
    assert any(re.match(r"Iteration 2 \(\S+ iter/s, \S+s/2 iters\), loss = \S+", m) for m in messages)
    assert {"snap_iter_6.caffemodel", "snap_iter_6.solverstate"} <= set(os.listdir(work))


@pytest.mark.parametrize("spelling", [["-solver", "solver.prototxt"], ["--solver=solver.prototxt"],
                                      ["-solver=solver.prototxt"], ["--solver", "solver.prototxt"]])
def test_caffe_train_accepts_gflags_spellings(work, capsys, spelling):
    status, _, err = call(cli.caffe_main, "train", *spelling, capsys=capsys)
    assert status == 0, err
    assert (work / "snap_iter_6.caffemodel").is_file()


def test_iterations_overrides_max_iter(work, capsys):
    status, _, err = call(cli.train_main, "--solver", "solver.prototxt", "--iterations", "2", capsys=capsys)
    assert status == 0, err
    assert (work / "snap_iter_2.solverstate").is_file() and not (work / "snap_iter_6.solverstate").exists()


def test_resume_from_snapshot_matches_uninterrupted(work, capsys):
    assert call(cli.train_main, "--solver", "solver.prototxt", capsys=capsys)[0] == 0
    whole = formats.read_weights("snap_iter_6.caffemodel")
    for name in os.listdir(work):
        if name.startswith("snap_iter_6"):
            os.remove(name)
    assert call(cli.train_main, "--solver", "solver.prototxt", "--iterations", "4", capsys=capsys)[0] == 0
    status, _, err = call(cli.train_main, "--solver", "solver.prototxt", "--snapshot", "snap_iter_4.solverstate",
                          capsys=capsys)
    assert status == 0, err
    assert "Resuming from snap_iter_4.solverstate" in err
    resumed = formats.read_weights("snap_iter_6.caffemodel")
    for name in whole:
        for a, b in zip(whole[name], resumed[name]):
            assert a.data == b.data


def test_weights_finetune(work, capsys):
    assert call(cli.train_main, "--solver", "solver.prototxt", capsys=capsys)[0] == 0
    os.rename("snap_iter_6.caffemodel", "trained.caffemodel")
    status, _, err = call(cli.train_main, "--solver", "solver.prototxt", "--weights", "trained.caffemodel",
                          "--iterations", "0", capsys=capsys)
    assert status == 0, err
    assert "Finetuning from trained.caffemodel" in err
    assert formats.read_weights("snap_iter_0.caffemodel")["ip"][0].data == \
        formats.read_weights("trained.caffemodel")["ip"][0].data


def test_snapshot_and_weights_together_are_refused(work, capsys):
    status, _, err = call(cli.caffe_main, "train", "--solver=solver.prototxt", "--snapshot=a.solverstate",
                          "--weights=b.caffemodel", capsys=capsys)
    assert status == 1
    assert error_lines(err, "caffe") == [
        "caffe: Give a snapshot to resume training or weights to finetune but not both."]


def _other_net_snapshot(work, capsys):
    (work / "other").mkdir()
    (work / "other" / "net.prototxt").write_text(NET.replace("num_output: 3", "num_output: 5"))
    (work / "other" / "list.txt").write_text("../data.h5\n")
    (work / "other" / "solver.prototxt").write_text(SOLVER)
    os.chdir(work / "other")
    assert call(cli.train_main, "--solver", "solver.prototxt", "--iterations", "1", capsys=capsys)[0] == 0
    os.chdir(work)
    return ["--snapshot", "other/snap_iter_1.solverstate"]


BAD_INPUTS = {
    "missing_solver": (lambda w, c: ["--solver", "nope.prototxt"], ["nope.prototxt"]),
    "missing_net_file": (lambda w, c: (w / "solver.prototxt").write_text(
        SOLVER.replace("net.prototxt", "gone.prototxt")) and [], ["net file not found", "gone.prototxt"]),
    "missing_hdf5_source": (lambda w, c: (w / "net.prototxt").write_text(NET.replace("list.txt", "nolist.txt"))
                            and [], ["nolist.txt"]),
    "missing_lmdb": (lambda w, c: (w / "net.prototxt").write_text(NET.replace(
        'type: "HDF5Data" top: "data" top: "label" hdf5_data_param { source: "list.txt" batch_size: 8 }',
        'type: "Data" top: "data" top: "label" data_param { source: "no_lmdb" batch_size: 8 backend: LMDB }'))
        and [], ["no_lmdb"]),
    "zero_batch": (lambda w, c: (w / "net.prototxt").write_text(NET.replace("batch_size: 8", "batch_size: 0"))
                   and [], ["batch_size"]),
    "negative_batch": (lambda w, c: (w / "net.prototxt").write_text(NET.replace("batch_size: 8", "batch_size: -4"))
                       and [], ["net.prototxt:2", "-4"]),
    "unknown_solver_type": (lambda w, c: (w / "solver.prototxt").write_text(SOLVER + 'type: "Adamax"\n')
                            and [], ["Unknown solver type: Adamax"]),
    "unknown_lr_policy": (lambda w, c: (w / "solver.prototxt").write_text(SOLVER.replace('"step"', '"cyclic"'))
                          and [], ["Unknown learning rate policy", "cyclic"]),
    "snapshot_of_other_net": (_other_net_snapshot, ["other/snap_iter_1.solverstate"]),
    "missing_snapshot": (lambda w, c: ["--snapshot", "none.solverstate"], ["none.solverstate"]),
    "bad_signal_effect": (lambda w, c: ["--sigint_effect", "explode"], ['Invalid signal effect "explode"']),
    "unknown_flag": (lambda w, c: ["--learning_rate", "3"], ["unknown command line flag 'learning_rate'"]),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_one_line_and_harmless(work, capsys, case):
    prepare, words = BAD_INPUTS[case]
    args = prepare(work, capsys) or []
    if "--solver" not in args:
        args = ["--solver", "solver.prototxt"] + args
    (work / "snap_iter_1.caffemodel").write_bytes(b"precious")
    before = snapshot_state(work)
    status, _, err = call(cli.train_main, *args, capsys=capsys)
    assert status == 1, err
    lines = error_lines(err)
    assert len(lines) == 1, err
    assert lines[0].startswith("train: ")
    for word in words:
        assert word in lines[0], lines[0]
    assert snapshot_state(work) == before


def test_gpu_mode_without_gpu_falls_back_with_one_warning(work, capsys):
    if gpu_available():
        pytest.skip("a GPU is present")
    (work / "solver.prototxt").write_text(SOLVER.replace("solver_mode: CPU", "solver_mode: GPU"))
    status, _, err = call(cli.train_main, "--solver", "solver.prototxt", "--iterations", "1", capsys=capsys)
    assert status == 0, err
    warnings = [line for line in err.splitlines() if line.startswith("W")]
    assert len(warnings) == 1 and "running on the CPU" in warnings[0]


def test_explicit_gpu_without_gpu_is_an_error_naming_the_cause(work, capsys):
    if gpu_available():
        pytest.skip("a GPU is present")
    status, _, err = call(cli.train_main, "--solver", "solver.prototxt", "--gpu", "0", "--iterations", "1",
                          capsys=capsys)
    assert status == 1
    lines = error_lines(err, "train")
    assert len(lines) == 1 and "--gpu 0 asked for, but" in lines[0]
    assert "CuPy" in lines[0] or "CUDA" in lines[0] or "device" in lines[0]


@pytest.mark.gpu
def test_train_on_gpu_gives_the_cpu_weights(work, capsys):
    from engine import formats

    assert call(cli.train_main, "--solver", "solver.prototxt", capsys=capsys)[0] == 0
    cpu = formats.read_weights("snap_iter_6.caffemodel")
    status, _, err = call(cli.train_main, "--solver", "solver.prototxt", "--gpu", "0", capsys=capsys)
    assert status == 0, err
    assert "Using GPUs 0" in err and "Traceback" not in err
    gpu = formats.read_weights("snap_iter_6.caffemodel")
    for mine, theirs in zip(gpu["ip"], cpu["ip"]):
        np.testing.assert_allclose(formats.blobproto_to_array(mine), formats.blobproto_to_array(theirs),
                                   rtol=1e-4, atol=1e-6)
    # Resuming on the GPU from the GPU's own state finishes the same way.
    (work / "solver.prototxt").write_text(SOLVER.replace("max_iter: 6", "max_iter: 8"))
    status, _, err = call(cli.train_main, "--solver", "solver.prototxt", "--gpu", "0", "--snapshot",
                          "snap_iter_6.solverstate", capsys=capsys)
    assert status == 0, err and (work / "snap_iter_8.caffemodel").is_file()


@pytest.mark.gpu
def test_device_query_on_gpu(capsys):
    status, _, err = call(cli.caffe_main, "device_query", "-gpu", "0", capsys=capsys)
    assert status == 0, err
    assert "Querying GPUs 0" in err and "Number of multiprocessors:" in err


def test_ctrl_c_writes_a_snapshot_and_exits_cleanly(work):
    (work / "solver.prototxt").write_text(SOLVER.replace("max_iter: 6", "max_iter: 100000000")
                                          .replace("display: 2", "display: 1"))
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([str(ROOT / "tools" / "train"), "--solver", "solver.prototxt"], cwd=work, env=env,
                            stderr=subprocess.PIPE, text=True)
    lines = []
    deadline = time.time() + 60
    for line in proc.stderr:
        lines.append(line)
        if "Iteration 3 (" in line or time.time() > deadline:
            break
    proc.send_signal(signal.SIGINT)
    _, rest = proc.communicate(timeout=60)
    text = "".join(lines) + rest
    assert proc.returncode == 0, text
    assert "Optimization stopped early." in text
    states = [p for p in os.listdir(work) if p.endswith(".solverstate")]
    assert len(states) == 1 and (work / states[0].replace(".solverstate", ".caffemodel")).is_file()


def test_tools_are_executable_scripts():
    for name in ("caffe", "train", "test", "time", "parse_log", "plot_log"):
        tool = ROOT / "tools" / name
        assert os.access(tool, os.X_OK) and tool.read_text().startswith("#!/usr/bin/env python3\n"), name


def test_caffe_without_command_prints_usage(capsys):
    status, _, err = call(cli.caffe_main, capsys=capsys)
    assert status == 1 and "usage: caffe <command> <args>" in err


def test_device_query_without_gpu(capsys):
    if gpu_available():
        pytest.skip("a GPU is present")
    status, _, err = call(cli.caffe_main, "device_query", "-gpu", "0", capsys=capsys)
    assert status == 1 and len(error_lines(err, "caffe")) == 1 and "device_query needs a GPU" in err


# -- test and time -------------------------------------------------------------------------
def test_test_tool_prints_batches_and_averages(work, capsys):
    assert call(cli.train_main, "--solver", "solver.prototxt", capsys=capsys)[0] == 0
    status, _, err = call(cli.test_main, "--model", "net.prototxt", "--weights", "snap_iter_6.caffemodel",
                          "--iterations", "3", capsys=capsys)
    assert status == 0, err
    messages = [GLOG.sub("", line) for line in err.splitlines() if GLOG.match(line)]
    assert "Running for 3 iterations." in messages
    batches = [m for m in messages if m.startswith("Batch ")]
    assert [m.split(",")[0] for m in batches] == [f"Batch {i}" for i in range(3) for _ in range(2)]
    accuracy = [float(m.split(" = ")[1]) for m in batches if "accuracy" in m]
    final = [m for m in messages if m.startswith("accuracy = ")]
    assert final == [f"accuracy = {np.float32(np.mean(accuracy)):g}"]
    assert any(re.match(r"loss = \S+ \(\* 1 = \S+ loss\)$", m) for m in messages)
    assert call(cli.test_main, "--model", "net.prototxt", capsys=capsys)[0] == 1


def test_time_tool_prints_caffes_summary(work, capsys):
    status, _, err = call(cli.time_main, "--model", "net.prototxt", "--iterations", "2", capsys=capsys)
    assert status == 0, err
    messages = [GLOG.sub("", line) for line in err.splitlines() if GLOG.match(line)]
    for prefix in ("Average Forward pass: ", "Average Backward pass: ", "Average Forward-Backward: ", "Total Time: "):
        assert any(m.startswith(prefix) and m.endswith(" ms.") for m in messages), prefix
    assert any(re.match(r"^\s+ip\tforward: \S+ ms\.$", m) for m in messages)
    assert any(re.match(r"^\s+ip\tbackward: \S+ ms\.$", m) for m in messages)
    assert "Iteration: 2 forward-backward time: " in err
    assert call(cli.time_main, "--model", "missing.prototxt", capsys=capsys)[0] == 1


# -- parse_log and plot_log ----------------------------------------------------------------
def run_tool(name, *args, cwd):
    return subprocess.run([sys.executable, str(ROOT / "tools" / name), *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


CAFFE_LOGS = sorted((REFERENCE / "solvers").glob("*/caffe.log"))


def read_csv(path):
    rows = path.read_text().splitlines()
    header = rows[0].split(",")
    return header, [dict(zip(header, map(float, row.split(",")))) for row in rows[1:]]


def test_parse_log_on_caffes_logs(tmp_path):
    assert CAFFE_LOGS
    for log in CAFFE_LOGS:
        out = tmp_path / log.parent.name
        out.mkdir()
        result = run_tool("parse_log", log, out, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        header, rows = read_csv(out / "caffe.log.train")
        assert header == ["NumIters", "Seconds", "LearningRate", "loss"]
        expected = np.load(log.parent / "result.npz")["loss"]
        assert [r["NumIters"] for r in rows] == list(range(len(expected)))
        np.testing.assert_allclose([r["loss"] for r in rows], expected, rtol=1e-5)
        # As Caffe's parse_log: a row takes the last "lr =" printed before its outputs (the previous
        # iteration's), and the first row copies the second's.
        rates = [float(x) for x in re.findall(r"Iteration \d+, lr = (\S+)", log.read_text())]
        assert [r["LearningRate"] for r in rows] == [rates[0]] + rates[:len(rows) - 1]
        assert all(r["Seconds"] >= 0 for r in rows)
        assert (out / "caffe.log.test").read_text().strip() == "NumIters,Seconds,LearningRate"


def test_parse_log_on_our_log(work, capsys, tmp_path):
    status, _, err = call(cli.train_main, "--solver", "solver.prototxt", capsys=capsys)
    assert status == 0
    (work / "train.log").write_text(err)
    result = run_tool("parse_log", "train.log", cwd=work)
    assert result.returncode == 0, result.stderr
    header, rows = read_csv(work / "train.log.test")
    assert header == ["NumIters", "Seconds", "LearningRate", "accuracy", "loss"]
    assert [r["NumIters"] for r in rows] == [0, 3, 6]
    header, rows = read_csv(work / "train.log.train")
    assert [r["NumIters"] for r in rows] == [0, 2, 4]
    assert [r["LearningRate"] for r in rows] == [0.1, 0.1, 0.1]
    assert run_tool("parse_log", "missing.log", cwd=work).returncode == 1


def test_plot_log(tmp_path):
    log = CAFFE_LOGS[0]
    result = run_tool("plot_log", log, tmp_path / "out.png", cwd=tmp_path)
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert result.returncode == 1 and "matplotlib is not installed" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
    else:
        assert result.returncode == 0, result.stderr
        assert (tmp_path / "out.png").read_bytes()[:4] == b"\x89PNG"


# -- engine.log ------------------------------------------------------------------------------
def test_glog_lines_and_progress_only_on_a_terminal():
    import io
    import logging

    from engine import log as elog

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    stream = Terminal()
    handler = elog.setup(stream=stream)
    try:
        logging.getLogger("engine.solver").info("hello %d", 5, extra=elog.at("solver.cpp:239"))
        logging.getLogger("engine.solver").warning("careful")
        progress = elog.Progress(0, 100, images_per_iter=64, stream=stream, interval=0)
        progress.started -= 10  # ten seconds ago
        progress.update(50)
        assert "iter 50/100" in stream.getvalue() and "img/s" in stream.getvalue() and "left" in stream.getvalue()
        logging.getLogger("engine.solver").info("after")
        progress.close()
    finally:
        elog.remove(handler)
    lines = [line for line in stream.getvalue().replace("\r\033[K", "\n").splitlines() if line]
    assert GLOG.match(lines[0]) and lines[0].endswith(" solver.cpp:239] hello 5")
    assert lines[1].startswith("W") and lines[1].endswith("] careful") and GLOG.match(lines[1])
    assert any(line.endswith("] after") for line in lines)
    quiet = io.StringIO()
    progress = elog.Progress(0, 10, stream=quiet, interval=0)
    progress.update(5)
    progress.close()
    assert quiet.getvalue() == ""


def test_gpu_all_without_gpu_warns_once(work, capsys):
    if gpu_available():
        pytest.skip("a GPU is present")
    status, _, err = call(cli.train_main, "--solver", "solver.prototxt", "--gpu", "all", "--iterations", "1",
                          capsys=capsys)
    assert status == 0, err
    assert len([line for line in err.splitlines() if line.startswith("W")]) == 1


def test_gpu_id_beyond_the_devices_is_an_error(monkeypatch):
    """`--gpu 3` on a machine with one GPU names the IDs it has (checked without a GPU by standing in
    a one-device machine)."""
    from engine.errors import CaffeError
    from engine.solvers import commands

    monkeypatch.setattr(commands.backend, "gpu_unavailable_reason", lambda: None)
    monkeypatch.setattr(commands, "_device_count", lambda: 1)
    with pytest.raises(CaffeError, match=r"no GPU with ID 3: this machine has 1 \(IDs 0\.\.0\)"):
        commands.set_mode([3])
