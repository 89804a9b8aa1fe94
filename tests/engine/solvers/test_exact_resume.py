"""Exact resume: LeNet trained by tools/train, killed with SIGKILL at random moments and resumed
each time from its newest snapshot, ends with the same weights and solver state, bit for bit, as
an uninterrupted run. The data comes from an LMDB through the prefetching Data layer with random
mirroring, a Dropout layer draws from the engine's generator, and the database wraps around."""

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from engine import caffe_pb2, formats
from engine.data.datum import array_to_datum
from engine.data.db import open_writer

ROOT = Path(__file__).resolve().parents[3]
MAX_ITER, SNAPSHOT, KILLS = 96, 4, 3


def write_dbs(folder):
    write_db(folder / "train_db", 80, 7)
    write_db(folder / "test_db", 30, 8)


def write_db(path, count, seed):
    rng = np.random.default_rng(seed)
    with open_writer(str(path), "lmdb") as writer:
        for index in range(count):
            label = index % 10
            image = (rng.integers(0, 60, (1, 28, 28)) + 150 * (np.arange(28) % 10 == label)).astype(np.uint8)
            writer.put(f"{index:08d}", array_to_datum(image, label).SerializeToString())


def write_run(folder):
    """LeNet (nets/lenet) reading `db`, with mirroring and a dropout layer, and its solver."""
    folder.mkdir()
    net = formats.read_net(str(ROOT / "nets" / "lenet" / "train_test.prototxt"))
    for layer in net.layer:
        if layer.type == "Data":
            train = layer.include[0].phase == caffe_pb2.TRAIN
            layer.data_param.source = "../train_db" if train else "../test_db"
            layer.data_param.batch_size = 12
            layer.transform_param.mirror = True
    index = [layer.name for layer in net.layer].index("ip1") + 1
    dropout = caffe_pb2.LayerParameter(name="drop", type="Dropout", bottom=["ip1"], top=["ip1"])
    net.layer.insert(index, dropout)
    formats.write_text(folder / "net.prototxt", net)
    (folder / "solver.prototxt").write_text(
        'net: "net.prototxt" base_lr: 0.01 momentum: 0.9 weight_decay: 0.0005 lr_policy: "inv" gamma: 0.0001 '
        f'power: 0.75 display: 8 max_iter: {MAX_ITER} snapshot: {SNAPSHOT} snapshot_prefix: "snap/lenet" '
        'test_iter: 2 test_interval: 20 random_seed: 5 solver_mode: CPU\n')


def train(folder, resume=None):
    argv = [sys.executable, str(ROOT / "tools" / "train"), "--solver", "solver.prototxt"]
    if resume:
        argv += ["--snapshot", resume]
    return subprocess.Popen(argv, cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def newest_state(folder):
    states = sorted((folder / "snap").glob("lenet_iter_*.solverstate"),
                    key=lambda p: int(p.name.split("_")[-1].split(".")[0]))
    return states[-1] if states else None


def final_files(folder):
    prefix = folder / "snap" / f"lenet_iter_{MAX_ITER}"
    return {ext: Path(f"{prefix}{ext}").read_bytes() for ext in (".caffemodel", ".solverstate")}


@pytest.mark.slow
def test_killed_and_resumed_run_ends_bit_for_bit_as_an_uninterrupted_one(tmp_path):
    write_dbs(tmp_path)
    write_run(tmp_path / "straight")
    write_run(tmp_path / "killed")
    straight = train(tmp_path / "straight")

    rng = random.Random(11)
    killed = tmp_path / "killed"
    kills, starts = 0, 0
    while True:
        state = newest_state(killed)
        process = train(killed, resume=str(state.relative_to(killed)) if state else None)
        starts += 1
        if kills < KILLS:
            # Let it write at least one snapshot of its own, then kill it a random moment later:
            # mid-iteration, mid-prefetch or mid-snapshot.
            deadline = time.monotonic() + 120
            while newest_state(killed) == state and process.poll() is None and time.monotonic() < deadline:
                time.sleep(0.01)
            time.sleep(rng.uniform(0.0, 0.15))
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
                process.wait()
                process.stderr.close()
                kills += 1
                continue
        _, err = process.communicate(timeout=300)
        assert process.returncode == 0, err.decode()[-3000:]
        break
    _, err = straight.communicate(timeout=300)
    assert straight.returncode == 0, err.decode()[-3000:]
    assert kills == KILLS and starts == KILLS + 1, f"a run ended before its kill ({kills} kills)"
    # A kill mid-write may leave a temporary file (the next resume removes it), never a half-written snapshot.
    assert not list((killed / "snap").glob(".*.tmp"))
    for path in (killed / "snap").glob("lenet_iter_*.caffemodel"):
        formats.read_weights(path)
    for path in (killed / "snap").glob("lenet_iter_*.solverstate"):
        formats.read_binary(path, caffe_pb2.SolverState)

    expected, got = final_files(tmp_path / "straight"), final_files(killed)
    assert got[".solverstate"] == expected[".solverstate"]
    assert got[".caffemodel"] == expected[".caffemodel"]


def solver_in(folder):
    from engine.solvers import get_solver
    from engine.solvers.netsetup import read_solver_param

    (folder / "snap").mkdir(exist_ok=True)
    return get_solver(read_solver_param("solver.prototxt"))


def stop_readers(*solvers):
    for solver in solvers:
        for net in (solver.net, *solver.test_nets):
            for layer in net.layers:
                if hasattr(layer, "stop"):
                    layer.stop()


@pytest.fixture
def solvers(tmp_path, monkeypatch):
    """A run folder on the test databases, and a maker of solvers in it whose readers stop at the end."""
    write_dbs(tmp_path)
    write_run(tmp_path / "run")
    monkeypatch.chdir(tmp_path / "run")
    made = []

    def new():
        made.append(solver_in(tmp_path / "run"))
        return made[-1]

    yield new
    stop_readers(*made)


def test_in_process_resume_continues_the_same_batches(solvers):
    """Restoring a snapshot in a fresh solver gives the batches, dropout masks and weights the
    first solver goes on to produce (the prefetched batches are read again from the reader's state)."""
    solver = solvers()
    solver.step(5)
    _, state = solver.snapshot()
    solver.step(3)
    weights = [blob.data.copy() for blob in solver.net.learnable_params]
    data = solver.net.blobs["data"].data.copy()
    stop_readers(solver)  # one process opens an LMDB once
    fresh = solvers()
    fresh.restore(state)
    fresh.step(3)
    for mine, theirs in zip(weights, fresh.net.learnable_params):
        np.testing.assert_array_equal(mine, theirs.data)
    np.testing.assert_array_equal(data, fresh.net.blobs["data"].data)


def test_resume_without_the_sidecar_starts_the_data_over(solvers, caplog):
    """A Caffe snapshot (no .resume beside it) still resumes, as Caffe does, and says so."""
    solver = solvers()
    solver.step(2)
    _, state = solver.snapshot()
    os.unlink(f"{state}.resume")
    stop_readers(solver)
    fresh = solvers()
    fresh.restore(state)
    assert fresh.iter == 2
    assert "has no .resume beside it" in caplog.text


@pytest.mark.parametrize("content, message", [
    ('{"format": "caffe-engine exact resume 1", "iter"', r"cannot read .*\.resume: .*truncated or garbled\?"),
    ('{"format": "something else"}', r"\.resume: not an exact-resume file of this engine"),
    ('{"format": "caffe-engine exact resume 1", "iter": 7, "rng": {}, "readers": {}}',
     r"\.resume is for iteration 7, but its solver state is for iteration 2"),
    ('{"format": "caffe-engine exact resume 1", "iter": 2, "rng": {}, "readers": {"train/nope": {}}}',
     r"the train net has no data layer 'nope'"),
    ('{"format": "caffe-engine exact resume 1", "iter": 2, "readers": {}}', r"\.resume: garbled \(no reader"),
    ('{"format": "caffe-engine exact resume 1", "iter": 2, "rng": {}, "readers": {"train/mnist": {"key": 5}}}',
     r"\.resume: garbled reader state"),
])
def test_a_bad_resume_file_is_refused_in_one_line(solvers, content, message):
    from engine.errors import SolverError

    solver = solvers()
    solver.step(2)
    _, state = solver.snapshot()
    Path(f"{state}.resume").write_text(content)
    stop_readers(solver)
    fresh = solvers()
    with pytest.raises(SolverError, match=message) as info:
        fresh.restore(state)
    assert "\n" not in str(info.value)
    if "garbled reader state" not in message:  # refused before anything changed
        assert fresh.iter == 0


def test_data_parallel_resume_starts_the_readers_over(solvers, monkeypatch, caplog):
    """Only rank 0 snapshots; its random states are not the other workers', so every worker starts over."""
    from engine import backend

    caplog.set_level("INFO", "engine.solver")
    solver = solvers()
    solver.step(2)
    _, state = solver.snapshot()
    stop_readers(solver)
    fresh = solvers()
    monkeypatch.setattr(backend, "_parallel", {"rank": 1, "count": 2})
    before = fresh.net.layer_dict["mnist"].resume_state()
    fresh.restore(state)
    assert fresh.iter == 2 and fresh.net.layer_dict["mnist"].resume_state() == before
    assert "Data-parallel resume: the data readers and random generators start over" in caplog.text
