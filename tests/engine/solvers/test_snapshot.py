"""Snapshots: Caffe's file names and layouts (binary and HDF5), atomic writes, and
restores that refuse a state of another net without changing anything."""

import os
from pathlib import Path

import h5py
import numpy as np
import pytest

from engine import caffe_pb2, formats
from engine.errors import CaffeError, SnapshotError, SolverError
from engine.formats import parse_text
from engine.solvers import get_solver
from engine.solvers import state as statefile

NET = """
name: "snapnet"
layer { name: "data" type: "Input" top: "data" top: "label"
        input_param { shape { dim: 2 dim: 4 } shape { dim: 2 } } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
        inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.2 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
"""
OTHER_NET = NET.replace('name: "ip"', 'name: "fc"').replace("num_output: 3", "num_output: 5")


def make(tmp_path, extra="", net=NET, solver_type="SGD"):
    p = parse_text(f'type: "{solver_type}" base_lr: 0.1 momentum: 0.9 lr_policy: "step" gamma: 0.5 stepsize: 2 '
                   f'max_iter: 4 random_seed: 2 snapshot_prefix: "{tmp_path}/run" {extra}',
                   caffe_pb2.SolverParameter())
    parse_text(net, p.net_param)
    solver = get_solver(p)
    solver.net.blobs["data"].data[...] = np.arange(8).reshape(2, 4) / 8.0
    return solver


SNAPSHOT_FILES = ("caffemodel", "solverstate", "solverstate.resume")


def names(folder):
    return sorted(p.name for p in folder.iterdir())


def test_binary_snapshot_files_and_contents(tmp_path):
    solver = make(tmp_path)
    solver.step(3)
    model, state = solver.snapshot()
    assert names(tmp_path) == ["run_iter_3.caffemodel", "run_iter_3.solverstate", "run_iter_3.solverstate.resume"]
    assert model == f"{tmp_path}/run_iter_3.caffemodel"
    proto = formats.read_binary(state, caffe_pb2.SolverState)
    assert proto.iter == 3 and proto.current_step == 1 and proto.learned_net == model
    assert [tuple(h.shape.dim) for h in proto.history] == [(3, 4), (3,)]
    np.testing.assert_array_equal(formats.blobproto_to_array(proto.history[0]), solver.history[0])
    weights = formats.read_weights(model)
    np.testing.assert_array_equal(formats.blobproto_to_array(weights["ip"][0]), solver.net.params["ip"][0].data)


def test_hdf5_snapshot_layout_is_caffes(tmp_path):
    solver = make(tmp_path, "snapshot_format: HDF5 snapshot_diff: true", solver_type="Adam")
    solver.step(2)
    solver.snapshot()
    assert names(tmp_path) == ["run_iter_2.caffemodel.h5", "run_iter_2.solverstate.h5",
                               "run_iter_2.solverstate.h5.resume"]
    with h5py.File(tmp_path / "run_iter_2.solverstate.h5", "r") as f:
        assert int(f["iter"][0]) == 2 and int(f["current_step"][0]) == 0
        assert f["learned_net"][()].decode() == f"{tmp_path}/run_iter_2.caffemodel.h5"
        assert sorted(f["history"]) == ["0", "1", "2", "3"]
        np.testing.assert_array_equal(f["history/2"][()], solver.history[2])
    with h5py.File(tmp_path / "run_iter_2.caffemodel.h5", "r") as f:
        np.testing.assert_array_equal(f["data/ip/0"][()], solver.net.params["ip"][0].data)
        assert "diff" in f


@pytest.mark.parametrize("fmt,ext", [("BINARYPROTO", ".solverstate"), ("HDF5", ".solverstate.h5")])
def test_restore_brings_back_weights_history_and_schedule(tmp_path, fmt, ext):
    solver = make(tmp_path, f"snapshot_format: {fmt}")
    solver.step(3)
    solver.snapshot()
    fresh = make(tmp_path, f"snapshot_format: {fmt}")
    fresh.restore(str(tmp_path / f"run_iter_3{ext}"))
    assert (fresh.iter, fresh.current_step) == (3, 1)
    for a, b in zip(fresh.net.learnable_params, solver.net.learnable_params):
        np.testing.assert_array_equal(a.data, b.data)
    for a, b in zip(fresh.history, solver.history):
        np.testing.assert_array_equal(a, b)


def test_periodic_and_final_snapshots(tmp_path):
    solver = make(tmp_path, "snapshot: 2 max_iter: 5")
    solver.solve()
    assert names(tmp_path) == [f"run_iter_{i}.{e}" for i in (2, 4, 5) for e in SNAPSHOT_FILES]
    (tmp_path / "b").mkdir()
    solver = make(tmp_path / "b", "snapshot: 2 max_iter: 4")
    solver.solve()  # the last periodic snapshot is the final one: not written twice
    assert names(tmp_path / "b") == [f"run_iter_{i}.{e}" for i in (2, 4) for e in SNAPSHOT_FILES]
    (tmp_path / "c").mkdir()
    make(tmp_path / "c", "snapshot_after_train: false").solve()
    assert names(tmp_path / "c") == []


def test_writes_are_atomic(tmp_path, monkeypatch):
    solver = make(tmp_path)
    solver.step(1)
    solver.snapshot()
    before = {n: (tmp_path / n).read_bytes() for n in names(tmp_path)}
    solver.iter = 1  # same names again, different contents
    solver.step(1)
    solver.iter = 1

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(formats.os, "replace", broken_replace)
    with pytest.raises(SnapshotError, match="No space left on device"):
        solver.snapshot()
    monkeypatch.undo()
    assert names(tmp_path) == sorted(before)  # no temporary file left behind
    assert {n: (tmp_path / n).read_bytes() for n in names(tmp_path)} == before


def test_hdf5_state_write_is_atomic(tmp_path, monkeypatch):
    data = statefile.SolverStateData(3, "x.caffemodel.h5", 1, [np.ones((2, 2), np.float32)])
    target = tmp_path / "s.solverstate.h5"
    target.write_bytes(b"old")
    monkeypatch.setattr(formats.os, "replace", lambda a, b: (_ for _ in ()).throw(OSError(5, "I/O error")))
    with pytest.raises(OSError):
        statefile.write(target, data, hdf5=True)
    assert target.read_bytes() == b"old" and names(tmp_path) == ["s.solverstate.h5"]


def test_state_of_another_net_is_refused_and_nothing_changes(tmp_path):
    (tmp_path / "other").mkdir()
    other = make(tmp_path / "other", net=OTHER_NET)
    other.step(1)
    _, other_state = other.snapshot()
    solver = make(tmp_path)
    before = [b.data.copy() for b in solver.net.learnable_params]
    files = {n: (tmp_path / "other" / n).read_bytes() for n in names(tmp_path / "other")}
    with pytest.raises(SolverError) as info:
        solver.restore(other_state)
    assert "different net" in str(info.value) or "history blob" in str(info.value)
    assert solver.iter == 0
    for a, b in zip(before, solver.net.learnable_params):
        np.testing.assert_array_equal(a, b.data)
    assert {n: (tmp_path / "other" / n).read_bytes() for n in names(tmp_path / "other")} == files


def test_state_of_another_solver_type_is_refused(tmp_path):
    sgd = make(tmp_path)
    _, state = sgd.snapshot()
    with pytest.raises(SolverError, match="history blobs"):
        make(tmp_path, solver_type="Adam").restore(state)


def test_learned_net_found_beside_a_moved_state(tmp_path, monkeypatch):
    (tmp_path / "run").mkdir()
    solver = make(tmp_path / "run")
    solver.step(1)
    monkeypatch.chdir(tmp_path / "run")
    solver.param.snapshot_prefix = "rel"  # Caffe writes learned_net as the prefix gives it: relative
    _, state = solver.snapshot()
    monkeypatch.chdir(tmp_path)
    fresh = make(tmp_path)
    fresh.restore(f"run/{state}")
    np.testing.assert_array_equal(fresh.net.learnable_params[0].data, solver.net.learnable_params[0].data)


def test_missing_or_corrupt_state(tmp_path):
    solver = make(tmp_path)
    with pytest.raises(SolverError, match="not found"):
        solver.restore(str(tmp_path / "nope.solverstate"))
    (tmp_path / "bad.solverstate").write_bytes(b"\xff\xfe garbage")
    with pytest.raises(CaffeError):
        solver.restore(str(tmp_path / "bad.solverstate"))


def test_unwritable_prefix_fails_before_training(tmp_path):
    with pytest.raises(SolverError, match="Cannot write to snapshot prefix"):
        make(tmp_path / "missing" / "dir", "snapshot: 2")
    solver = make(tmp_path / "missing" / "dir")  # no periodic snapshot: only solve() checks
    with pytest.raises(SolverError, match="Cannot write to snapshot prefix"):
        solver.solve()
    assert solver.iter == 0


def test_prefix_defaults_to_solver_file_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "net.prototxt").write_text(NET)
    (tmp_path / "mysolver.prototxt").write_text('net: "net.prototxt" base_lr: 0.1 lr_policy: "fixed" max_iter: 1')
    solver = get_solver("mysolver.prototxt")
    assert solver.param.snapshot_prefix == "mysolver"
    solver.solve()
    assert os.path.exists("mysolver_iter_1.caffemodel")


@pytest.mark.parametrize("fmt, ext", [("BINARYPROTO", ".solverstate"), ("HDF5", ".solverstate.h5")])
def test_truncated_state_is_refused_in_one_line(tmp_path, fmt, ext):
    solver = make(tmp_path, f"snapshot_format: {fmt}")
    solver.step(1)
    _, state = solver.snapshot()
    raw = Path(state).read_bytes()
    cut = tmp_path / f"cut{ext}"
    cut.write_bytes(raw[:len(raw) * 2 // 3])
    with pytest.raises(SolverError, match=rf"cannot read solver state.*{cut.name}.*truncated or garbled") as info:
        make(tmp_path).restore(str(cut))
    assert "\n" not in str(info.value)


def test_files_are_flushed_before_the_rename_and_the_folder_after(tmp_path, monkeypatch):
    solver = make(tmp_path)
    calls = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        calls.append(("fsync", "folder" if os.path.isdir(f"/proc/self/fd/{fd}") else
                      os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))))
        real_fsync(fd)

    def replace(src, dst):
        calls.append(("replace", os.path.basename(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(formats.os, "fsync", fsync)
    monkeypatch.setattr(formats.os, "replace", replace)
    solver.snapshot()
    model_tmp, resume_tmp, state_tmp = [name for kind, name in calls if kind == "fsync" and name != "folder"]
    assert model_tmp.startswith(".run_iter_0.caffemodel.") and state_tmp.startswith(".run_iter_0.solverstate.")
    assert calls == [("fsync", model_tmp), ("replace", "run_iter_0.caffemodel"), ("fsync", "folder"),
                     ("fsync", resume_tmp), ("replace", "run_iter_0.solverstate.resume"), ("fsync", "folder"),
                     ("fsync", state_tmp), ("replace", "run_iter_0.solverstate"), ("fsync", "folder")]


@pytest.mark.parametrize("fmt", ["BINARYPROTO", "HDF5"])
def test_full_disk_keeps_the_previous_snapshot_and_stops(tmp_path, monkeypatch, fmt):
    solver = make(tmp_path, f"snapshot: 2 snapshot_format: {fmt}")
    solver.step(2)
    before = {n: (tmp_path / n).read_bytes() for n in names(tmp_path)}
    real_fsync, count = os.fsync, [0]

    def fsync(fd):  # the state file of the next snapshot meets a full disk (its model file is written)
        count[0] += 1
        if count[0] == 5:
            raise OSError(28, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(formats.os, "fsync", fsync)
    with pytest.raises(SnapshotError) as info:
        solver.step(2)
    ext = ".solverstate.h5" if fmt == "HDF5" else ".solverstate"
    assert str(info.value) == (f"iteration 4: cannot write the snapshot {tmp_path}/run_iter_4{ext}: No space left "
                               f"on device; training stopped and the previous snapshot {tmp_path}/run_iter_2{ext} "
                               "is intact")
    assert {n: (tmp_path / n).read_bytes() for n in names(tmp_path)} == before


SMALL_DISK = """
import resource, signal, sys
import numpy as np
sys.path.insert(0, sys.argv[2])
from engine import caffe_pb2
from engine.errors import SnapshotError
from engine.formats import parse_text
from engine.solvers import get_solver
p = parse_text('type: "SGD" base_lr: 0.01 lr_policy: "fixed" max_iter: 9 snapshot: 2 random_seed: 1 '
               'snapshot_format: ' + sys.argv[3] + ' snapshot_prefix: "' + sys.argv[1] + '/run"',
               caffe_pb2.SolverParameter())
parse_text('layer { name: "data" type: "Input" top: "data" top: "label" input_param { shape { dim: 2 dim: 512 } '
           'shape { dim: 2 } } } layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" '
           'inner_product_param { num_output: 64 weight_filler { type: "gaussian" std: 0.01 } } } '
           'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }', p.net_param)
solver = get_solver(p)
solver.step(2)
# The files may grow no larger than 64 KiB from now on: the next model (128 KiB) does not fit.
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (64 << 10, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
try:
    solver.step(2)
except SnapshotError as exc:
    print(exc)
"""


@pytest.mark.parametrize("fmt, model, state", [("BINARYPROTO", ".caffemodel", ".solverstate"),
                                               ("HDF5", ".caffemodel.h5", ".solverstate.h5")])
def test_a_write_that_fails_in_the_kernel_keeps_the_previous_snapshot(tmp_path, fmt, model, state):
    """A real failing write (the file-size limit, as a full disk would): nothing half-written is left."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[3]
    result = subprocess.run([sys.executable, "-c", SMALL_DISK, str(tmp_path), str(root), fmt], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (f"iteration 4: cannot write the snapshot {tmp_path}/run_iter_4{model}: "
                                     f"File too large; training stopped and the previous snapshot "
                                     f"{tmp_path}/run_iter_2{state} is intact")
    assert names(tmp_path) == [f"run_iter_2{model}", f"run_iter_2{state}", f"run_iter_2{state}.resume"]
    assert statefile.read(tmp_path / f"run_iter_2{state}").iter == 2


def test_resume_removes_temporaries_a_killed_snapshot_left(tmp_path):
    solver = make(tmp_path)
    solver.step(1)
    _, state = solver.snapshot()
    stale = [".run_iter_2.caffemodel.k3j_x9.tmp", ".run_iter_2.solverstate.resume.a1b2c3.tmp",
             ".run_iter_4.caffemodel.h5.zz9q_1.tmp"]
    kept = [".other_iter_2.caffemodel.k3j_x9.tmp", "run_iter_2.notes.tmp", ".run_iter_x.caffemodel.ab.tmp"]
    for name in stale + kept:
        (tmp_path / name).write_bytes(b"half")
    make(tmp_path).restore(state)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")) == sorted(kept)


def test_state_whose_learned_net_name_is_not_utf8(tmp_path):
    path = tmp_path / "bad.solverstate"
    path.write_bytes(b"\x08\x03\x12\x02\xff\xfe")  # iter: 3, learned_net: two bytes that are not UTF-8
    with pytest.raises(SolverError, match=r"bad.solverstate: its learned_net name is not UTF-8 text"):
        make(tmp_path).restore(str(path))
