"""Data-parallel training (engine.parallel) and the data layers' Skip rule.

The MPI tests start real workers with `mpirun -np 2` on this machine (loopback): two workers
with batch 32 must end with the weights of one process with batch 64 over the same records
(float32 rounding apart), for SGD, Adam and a resumed run; failures must end the job with a
message naming the rank, never hang. This file is also the worker script (see `worker_main`).
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

NET = """
name: "{name}"
layer {{ name: "data" type: "{kind}" top: "data" top: "label" include {{ phase: TRAIN }}
        {data} }}
layer {{ name: "ip1" type: "InnerProduct" bottom: "data" top: "ip1"
        param {{ lr_mult: 1 decay_mult: 1 }} param {{ lr_mult: 2 decay_mult: 0 }}
        inner_product_param {{ num_output: {hidden} weight_filler {{ type: "xavier" }}
                               bias_filler {{ type: "constant" value: 0.1 }} }} }}
layer {{ name: "relu" type: "ReLU" bottom: "ip1" top: "ip1" }}
layer {{ name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2"
        inner_product_param {{ num_output: 4 weight_filler {{ type: "xavier" }} }} }}
layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "loss" }}
"""
RULES = {"sgd": 'type: "SGD" base_lr: 0.05 momentum: 0.9 weight_decay: 0.0005 lr_policy: "step" gamma: 0.5 '
                'stepsize: 6',
         "adam": 'type: "Adam" base_lr: 0.01 momentum: 0.9 momentum2: 0.999 lr_policy: "fixed"'}
RECORDS, FEATURES, ITERS = 256, 12, 12


# -- data and solver files ------------------------------------------------------------------------
def make_records(folder):
    """The same records as an HDF5 file (with its list) and an LMDB."""
    import h5py

    from engine.data.datum import array_to_datum
    from engine.data.db import open_writer

    rng = np.random.default_rng(3)
    data = rng.integers(0, 256, (RECORDS, 1, 1, FEATURES)).astype(np.uint8)
    labels = (data[:, 0, 0, :4].argmax(axis=1) + rng.integers(0, 2, RECORDS)) % 4
    with h5py.File(folder / "records.h5", "w") as handle:
        handle["data"] = data.reshape(RECORDS, FEATURES).astype(np.float32) / 256
        handle["label"] = labels.astype(np.float32)
    (folder / "list.txt").write_text(f"{folder / 'records.h5'}\n")
    with open_writer(str(folder / "lmdb"), "lmdb") as writer:
        for index in range(RECORDS):
            writer.put(f"{index:06d}", array_to_datum(data[index], int(labels[index])).SerializeToString())
    return data, labels


def write_solver(folder, name, rule, batch, kind="HDF5Data", hidden=16, extra="", snapshot=6, max_iter=ITERS):
    if kind == "HDF5Data":
        data = f'hdf5_data_param {{ source: "{folder / "list.txt"}" batch_size: {batch} }}'
    else:
        data = (f'transform_param {{ scale: 0.00390625 }} data_param {{ source: "{folder / "lmdb"}" '
                f'batch_size: {batch} backend: LMDB }}')
    net = folder / f"{name}_net.prototxt"
    net.write_text(NET.format(name=name, kind=kind, data=data, hidden=hidden))
    path = folder / f"{name}_solver.prototxt"
    path.write_text(f'net: "{net}" {RULES[rule]} max_iter: {max_iter} random_seed: 7 display: 0 '
                    f'snapshot: {snapshot} snapshot_prefix: "{folder / name}" {extra}\n')
    return path


def single_process(solver_path, snapshot=None):
    """The reference: the engine's own solver in this process, one worker, batch 64."""
    from engine.solvers import get_solver

    solver = get_solver(str(solver_path))
    solver.solve(resume_file=str(snapshot) if snapshot else None)
    return [backend_host(b.data) for b in solver.net.learnable_params]


def backend_host(array):
    from engine import backend

    return backend.to_host(array).copy()


# -- running workers --------------------------------------------------------------------------------
def _mpi_missing():
    if shutil.which("mpirun") is None:
        return "mpirun is not installed (apt-get install openmpi-bin)"
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return "mpi4py is not installed (pip install mpi4py)"
    return None


needs_mpi = pytest.mark.skipif(_mpi_missing() is not None, reason=str(_mpi_missing()))


def mpirun(tmp_path, jobs, np_=2, timeout=60):
    """Run this file as the worker script under mpirun; `jobs` is a list of dicts (see worker_main)."""
    spec = tmp_path / f"jobs_{len(list(tmp_path.glob('jobs_*')))}.json"
    spec.write_text(json.dumps(jobs))
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMPI_MCA_btl="self,vader,tcp", OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    command = ["mpirun", "--oversubscribe", "-np", str(np_), sys.executable, __file__, str(spec)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env,
                            cwd=str(tmp_path))
    return result.returncode, result.stdout + result.stderr


def weights_of(tmp_path, tag, rank):
    saved = np.load(tmp_path / f"{tag}_rank{rank}.npz")
    return [saved[f"w{i}"] for i in range(len(saved.files) - 1)], int(saved["iter"])


def assert_close(ours, theirs, what):
    assert len(ours) == len(theirs)
    for index, (a, b) in enumerate(zip(ours, theirs)):
        assert not np.array_equal(a, np.zeros_like(a)), f"{what}: parameter {index} is all zero"
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=f"{what}: parameter {index}")


@needs_mpi
def test_two_workers_train_like_one_process_with_twice_the_batch(tmp_path):
    make_records(tmp_path)
    jobs, references = [], {}
    for rule, kind in (("sgd", "HDF5Data"), ("adam", "Data")):
        pair = write_solver(tmp_path, f"{rule}2", rule, 32, kind)
        one = write_solver(tmp_path, f"{rule}1", rule, 64, kind)
        jobs.append({"tag": rule, "solver": str(pair)})
        references[rule] = single_process(one)
    # Resuming: both runs restart from the single process's iteration-6 snapshot (data from record 0).
    resume_pair = write_solver(tmp_path, "resume2", "sgd", 32)
    resume_one = write_solver(tmp_path, "resume1", "sgd", 64)
    state = tmp_path / "sgd1_iter_6.solverstate"
    assert state.is_file()
    # Workers start their readers over on resume (as Caffe does); so must the reference.
    (tmp_path / "sgd1_iter_6.solverstate.resume").unlink()
    jobs.append({"tag": "resume", "solver": str(resume_pair), "snapshot": str(state)})
    references["resume"] = single_process(resume_one, snapshot=state)
    code, output = mpirun(tmp_path, jobs)
    assert code == 0, output
    for tag, reference in references.items():
        rank0, iter0 = weights_of(tmp_path, tag, 0)
        rank1, iter1 = weights_of(tmp_path, tag, 1)
        assert iter0 == iter1 == ITERS
        for a, b in zip(rank0, rank1):
            assert np.array_equal(a, b), f"{tag}: the workers' weights differ"
        assert_close(rank0, reference, tag)
    # Rank 0 alone writes snapshots, at the usual iterations, and alone logs.
    assert (tmp_path / f"sgd2_iter_{ITERS}.caffemodel").is_file()
    assert (tmp_path / "resume2_iter_12.solverstate").is_file()
    assert not (tmp_path / "resume2_iter_6.caffemodel").exists()
    assert output.count("Starting Optimization") == len(jobs)
    assert "Data-parallel training on 2 workers" in output


@needs_mpi
def test_mismatched_nets_stop_every_worker_with_the_rank(tmp_path):
    make_records(tmp_path)
    good = write_solver(tmp_path, "good", "sgd", 32)
    other = write_solver(tmp_path, "other", "sgd", 32, hidden=17)
    code, output = mpirun(tmp_path, [{"tag": "x", "solver": [str(good), str(other)], "tool": True}], timeout=40)
    assert code != 0
    assert "worker rank 1 does not match rank 0" in output and "parameter values 293 (rank 0: 276)" in output
    assert output.count("does not match") == 1  # agreed by both, printed by rank 0 only


@needs_mpi
def test_a_failing_or_killed_worker_ends_the_job_naming_its_rank(tmp_path):
    make_records(tmp_path)
    path = write_solver(tmp_path, "fail", "sgd", 32)
    code, output = mpirun(tmp_path, [{"tag": "x", "solver": str(path), "raise_at": 3}], timeout=40)
    assert code != 0 and "rank 1 of 2 stopped the job: injected failure at iteration 3" in output
    code, output = mpirun(tmp_path, [{"tag": "x", "solver": str(path), "kill_at": 3}], timeout=40)
    assert code != 0 and "rank 1" in output and "signal 9" in output
    missing = tmp_path / "missing.prototxt"
    code, output = mpirun(tmp_path, [{"tag": "x", "solver": [str(path), str(missing)], "tool": True}], timeout=40)
    assert code != 0 and f"worker rank 1 of 2 failed to start: solver definition not found: {missing}" in output


@needs_mpi
def test_a_signal_to_one_worker_acts_on_all(tmp_path):
    make_records(tmp_path)
    path = write_solver(tmp_path, "sig", "sgd", 32, extra="snapshot_format: HDF5")
    code, output = mpirun(tmp_path, [{"tag": "sig", "solver": str(path), "signals": {"2": "SIGHUP", "4": "SIGINT"}}])
    assert code == 0, output
    assert weights_of(tmp_path, "sig", 0)[1] == weights_of(tmp_path, "sig", 1)[1] == 5
    names = sorted(p.name for p in tmp_path.glob("sig_iter_*"))
    assert names == ["sig_iter_3.caffemodel.h5", "sig_iter_3.solverstate.h5", "sig_iter_5.caffemodel.h5",
                     "sig_iter_5.solverstate.h5"]


@needs_mpi
def test_ctrl_c_on_mpirun_ends_every_worker_and_leaves_whole_snapshots(tmp_path):
    from engine.formats import read_weights

    make_records(tmp_path)
    path = write_solver(tmp_path, "long", "sgd", 32, snapshot=40, max_iter=1000000)
    spec = tmp_path / "jobs_long.json"
    spec.write_text(json.dumps([{"tag": "long", "solver": str(path)}]))
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OMP_NUM_THREADS="1")
    job = subprocess.Popen(["mpirun", "--oversubscribe", "-np", "2", sys.executable, __file__, str(spec)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=str(tmp_path), env=env)
    try:
        deadline = time.monotonic() + 40
        while not (tmp_path / "long_iter_40.solverstate").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert job.poll() is None, "the job ended before its first snapshot"
        job.send_signal(signal.SIGINT)
        code = job.wait(timeout=30)
    finally:
        if job.poll() is None:
            job.kill()
    assert code != 0
    models = sorted(tmp_path.glob("long_iter_*.caffemodel"))
    assert models and all(read_weights(model)["ip1"] for model in models)
    assert not list(tmp_path.glob("long_rank*.npz"))  # no worker finished its run


# -- in one process: the Skip rule, devices, the launcher's environment, the agreement -------------
@pytest.fixture
def rank_one_of_two():
    from engine import backend

    backend.set_solver_rank(1, 2)
    yield
    backend.set_solver_rank(0, 1)


def _data_layer(text, phase):
    from engine import caffe_pb2
    from engine.blob import Blob
    from engine.layers import layer_class
    from layer_check import layer_param

    param = layer_param(text, phase)
    layer = layer_class(param.type)(param)
    top = [Blob(), Blob()]
    layer.set_up([], top)
    return layer, top


@pytest.mark.parametrize("kind", ["Data", "HDF5Data"])
def test_data_layers_keep_every_other_record_in_train_only(tmp_path, kind, rank_one_of_two):
    from engine import caffe_pb2

    _, labels = make_records(tmp_path)
    (tmp_path / "list2.txt").write_text(f"{tmp_path / 'records.h5'}\n{tmp_path / 'records.h5'}\n")
    source = (f'hdf5_data_param {{ source: "{tmp_path / "list2.txt"}" batch_size: 100 }}' if kind == "HDF5Data"
              else f'data_param {{ source: "{tmp_path / "lmdb"}" batch_size: 100 backend: LMDB }}')
    wanted = {caffe_pb2.TRAIN: [(1 + 2 * i) % RECORDS for i in range(300)],
              caffe_pb2.TEST: [i % RECORDS for i in range(300)]}
    for phase, order in wanted.items():
        layer, top = _data_layer(f'type: "{kind}" top: "data" top: "label" {source}', phase)
        got = []
        for _ in range(3):
            layer.run_forward([], top)
            got += top[1].data.astype(int).tolist()
        if kind == "Data":
            layer.stop()
        else:  # the running offset counts skipped rows too (the Data layer's thread reads ahead)
            assert layer.offset == (600 if phase == caffe_pb2.TRAIN else 300)
        assert got == labels[order].tolist()


def test_launcher_environment_is_read():
    from engine.parallel import ParallelError, World, launched_by_mpi, world_from_environment

    assert world_from_environment({}) is None and not launched_by_mpi({})
    assert world_from_environment({"OMPI_COMM_WORLD_SIZE": "4", "OMPI_COMM_WORLD_RANK": "3",
                                   "OMPI_COMM_WORLD_LOCAL_RANK": "1"}) == World(3, 4, 1, "Open MPI")
    assert world_from_environment({"PMI_SIZE": "2", "PMI_RANK": "1"}).local_rank == 1
    assert world_from_environment({"PMIX_RANK": "3", "SLURM_LOCALID": "1"}) == World(3, 0, 1, "PMIx")
    with pytest.raises(ParallelError, match="rank 5 of 2"):
        world_from_environment({"PMI_SIZE": "2", "PMI_RANK": "5"})
    with pytest.raises(ParallelError, match="unreadable"):
        world_from_environment({"OMPI_COMM_WORLD_SIZE": "two", "OMPI_COMM_WORLD_RANK": "0"})


def test_devices_are_one_per_worker_and_must_exist():
    from engine.parallel import ParallelError, device_for_worker

    assert device_for_worker([], 0, 0, 0) is None
    assert device_for_worker([2, 3], 5, 1, 4) == 3
    with pytest.raises(ParallelError, match=r"rank 1: GPU 3 does not exist \(this machine has devices 0 to 1\)"):
        device_for_worker([0, 3], 1, 1, 2)
    with pytest.raises(ParallelError, match="rank 3 .*has no GPU: --gpu lists 1 device"):
        device_for_worker([0], 3, 1, 8)


def test_without_a_launcher_it_is_plain_training(tmp_path, monkeypatch):
    from engine.errors import SolverError
    from engine.parallel import run_distributed_training

    for name in ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK"):
        monkeypatch.delenv(name, raising=False)
    make_records(tmp_path)
    alone = run_distributed_training(str(write_solver(tmp_path, "alone", "sgd", 64)), iterations=8)
    reference = write_solver(tmp_path, "plain", "sgd", 64, max_iter=8)
    assert alone.iter == 8
    for ours, theirs in zip(alone.net.learnable_params, single_process(reference)):
        assert np.array_equal(ours.data, theirs)
    with pytest.raises(SolverError, match="solver definition not found"):
        run_distributed_training(str(tmp_path / "missing.prototxt"))


class FakePeers:
    """A communicator for rank 0 of 2 whose peer adds `other_gradient`, votes and fingerprints as told."""

    rank, size = 0, 2

    def __init__(self, other_gradient=1.0, other_votes=None, other_fingerprint=None):
        self.other_gradient, self.other_votes, self.other_fingerprint = other_gradient, other_votes or {}, \
            other_fingerprint
        self.calls = 0

    def allgather(self, obj):
        if isinstance(obj, tuple):  # the start-up agreement
            return [obj, self.other_fingerprint or obj]
        self.calls += 1
        return [obj, self.other_votes.get(self.calls, "none")]

    def broadcast(self, arrays, root=0):
        pass

    def allreduce_sum(self, arrays):
        for array in arrays:
            array += np.float32(self.other_gradient)


def test_gradients_are_averaged_and_votes_stop_every_worker(tmp_path):
    from engine.parallel import DataParallel, ParallelError
    from engine.solvers import get_solver

    make_records(tmp_path)
    solver = get_solver(str(write_solver(tmp_path, "one", "sgd", 8, extra="snapshot_after_train: false")))
    parallel = DataParallel(solver, FakePeers(other_gradient=3.0, other_votes={3: "stop"}))
    parallel.agree_start()
    for index, blob in enumerate(solver.net.learnable_params):
        blob.diff[...] = index + 1
    parallel.on_gradients_ready()  # the sum with the other worker's 3, over 2 workers
    for index, blob in enumerate(solver.net.learnable_params):
        assert np.array_equal(blob.diff, np.full(blob.shape, (index + 4) / 2, np.float32))
    parallel.attach()
    solver.solve()
    assert solver.iter == 2 and solver.requested_early_exit  # the other worker voted stop in iteration 1
    mismatch = ("ready", dict(parallel.fingerprint(), **{"parameter values": 1}))
    with pytest.raises(ParallelError, match="worker rank 1 does not match rank 0.*parameter values 1 "):
        DataParallel(solver, FakePeers(other_fingerprint=mismatch)).agree_start()
    with pytest.raises(ParallelError, match="worker rank 1 of 2 failed to start: no data"):
        DataParallel(solver, FakePeers(other_fingerprint=("failed", "no data"))).agree_start()


# -- the worker script ------------------------------------------------------------------------------
def worker_main(spec_path):
    """Runs each job of the spec on this MPI worker; writes <tag>_rank<r>.npz with its weights."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from engine import backend
    from engine.errors import CaffeError
    from engine.log import setup
    from engine.parallel import make_communicator, run_distributed_training, train_tool

    setup()
    comm = make_communicator()
    for job in json.loads(Path(spec_path).read_text()):
        solver_path = job["solver"][comm.rank] if isinstance(job["solver"], list) else job["solver"]
        if job.get("tool"):
            values = {"solver": solver_path, "weights": "", "snapshot": job.get("snapshot", ""), "gpu": "",
                      "sigint_effect": "stop", "sighup_effect": "snapshot", "level": 0, "stage": ""}
            status = train_tool(values)
            if status:
                sys.exit(status)
            continue

        def prepare(solver, job=job):
            def on_start():
                if comm.rank != 1:
                    return
                if solver.iter == job.get("raise_at"):
                    raise CaffeError(f"injected failure at iteration {solver.iter}")
                if solver.iter == job.get("kill_at"):
                    os.kill(os.getpid(), signal.SIGKILL)
                name = job.get("signals", {}).get(str(solver.iter))
                if name:
                    os.kill(os.getpid(), getattr(signal, name))
            solver.add_callback(on_start, None)

        solver = run_distributed_training(solver_path, snapshot=job.get("snapshot"), communicator=comm,
                                          prepare=prepare)
        arrays = {f"w{i}": backend.to_host(b.data) for i, b in enumerate(solver.net.learnable_params)}
        np.savez(f"{job['tag']}_rank{comm.rank}.npz", iter=solver.iter, **arrays)


if __name__ == "__main__":
    worker_main(sys.argv[1])
