#!/usr/bin/env python3
"""Data-parallel scaling: LeNet training images/s with 1 and 2 CPU workers (engine.parallel).

Weak scaling, as Caffe's multi-GPU training: every worker keeps its batch (--batch), so k workers
step through k times the images per iteration. Each configuration is one `mpirun -np k` job of
this script in --worker mode; rank 0 times the iterations after --warmup with the solver's
callbacks and prints one JSON line. Data: the Fashion-MNIST training LMDB when it exists
(data/fashion_mnist/train_lmdb, or --lmdb), else generated 28x28 records in a temporary LMDB.

On a CPU the workers share the machine's cores, so the table has three rows: one worker on one
thread (the per-worker baseline), one worker on all cores (the best single process), and k
workers sharing the cores. Scaling efficiency is images/s of k workers over k times the
one-thread baseline; speed-up compares with the best single process. GPU scaling is not measured:
several GPU workers need the NCCL communicator, which is not available yet. Usage:

    python3 bench/scaling.py --iterations 40 --batch 64
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
FASHION = ROOT / "data" / "fashion_mnist" / "train_lmdb"
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS")


def lenet_net(source, batch):
    """bench/nets/lenet.prototxt with a Data layer reading `source` in place of its Input layer."""
    from engine import caffe_pb2, formats

    net = formats.read_net(str(ROOT / "bench" / "nets" / "lenet.prototxt"))
    layers = list(net.layer)
    data = caffe_pb2.LayerParameter(name="data", type="Data", top=["data", "label"])
    data.transform_param.scale = 0.00390625
    data.data_param.source, data.data_param.batch_size = str(source), batch
    data.data_param.backend = caffe_pb2.DataParameter.LMDB
    del net.layer[:]
    net.layer.extend([data] + [layer for layer in layers if layer.type != "Input"])
    return net


def generated_lmdb(folder, records):
    import numpy as np

    from engine.data.datum import array_to_datum
    from engine.data.db import open_writer

    rng = np.random.default_rng(0)
    with open_writer(str(folder / "lmdb"), "lmdb") as writer:
        for index in range(records):
            image = rng.integers(0, 256, (1, 28, 28), dtype=np.uint8)
            writer.put(f"{index:08d}", array_to_datum(image, int(rng.integers(10))).SerializeToString())
    return folder / "lmdb"


def write_solver(folder, source, batch, iterations):
    from engine import caffe_pb2, formats

    param = caffe_pb2.SolverParameter(type="SGD", base_lr=0.01, momentum=0.9, weight_decay=0.0005,
                                      lr_policy="fixed", max_iter=iterations, display=0, snapshot=0,
                                      snapshot_after_train=False, random_seed=1, snapshot_prefix=str(folder / "s"))
    param.net_param.CopyFrom(lenet_net(source, batch))
    path = folder / "solver.prototxt"
    formats.write_text(path, param)
    return path


def worker(solver_path, warmup):
    """One MPI worker: train, and on rank 0 print the time of the iterations after `warmup`."""
    from engine.parallel import run_distributed_training

    marks = {}

    def prepare(solver):
        solver.add_callback(lambda: marks.setdefault(solver.iter, time.perf_counter()), None)

    solver = run_distributed_training(str(solver_path), prepare=prepare)
    end = time.perf_counter()
    from engine import backend

    if backend.solver_rank() == 0:
        timed = solver.iter - warmup
        print(json.dumps({"iterations": timed, "seconds": end - marks[warmup]}), flush=True)


def run_job(solver_path, workers, threads, warmup):
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", GLOG_minloglevel="1")
    env.update({name: str(threads) for name in THREAD_VARS})
    command = ["mpirun", "--oversubscribe", "--bind-to", "none", "-np", str(workers), sys.executable, __file__,
               "--worker", str(solver_path), "--warmup", str(warmup)]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=1800)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode or not lines:
        sys.exit(f"scaling: the {workers}-worker run failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return json.loads(lines[-1])


def gpu_note():
    from engine import backend

    reason = backend.gpu_unavailable_reason()
    if reason:
        return f"GPU scaling was not measured: no GPU here ({reason})."
    return "GPU scaling was not measured: several GPU workers need the NCCL communicator, not available yet."


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--iterations", type=int, default=40, help="timed iterations per configuration")
    parser.add_argument("--warmup", type=int, default=5, help="untimed iterations first")
    parser.add_argument("--batch", type=int, default=64, help="batch size of each worker")
    parser.add_argument("--workers", type=int, default=2, help="workers of the parallel run")
    parser.add_argument("--lmdb", default=None, help="training LMDB (default: Fashion-MNIST, else generated)")
    parser.add_argument("--records", type=int, default=4096, help="records of the generated LMDB")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args.worker, args.warmup)
    if shutil.which("mpirun") is None:
        sys.exit("scaling: mpirun is not installed (apt-get install openmpi-bin)")
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        source = Path(args.lmdb) if args.lmdb else FASHION if FASHION.is_dir() else None
        data = f"LMDB {source}" if source else f"{args.records} generated 28x28 records"
        source = source or generated_lmdb(folder, args.records)
        solver = write_solver(folder, source, args.batch, args.warmup + args.iterations)
        rows = []
        configs = [(1, 1)] + ([(1, cores)] if cores > 1 else []) + [(args.workers, max(1, cores // args.workers))]
        for workers, threads in configs:
            result = run_job(solver, workers, threads, args.warmup)
            rate = workers * args.batch * result["iterations"] / result["seconds"]
            rows.append((workers, threads, rate))
    base, best = rows[0][2], max(rate for w, _, rate in rows if w == 1)
    print(f"LeNet, SGD, {args.batch} images per worker per iteration, {args.iterations} timed iterations "
          f"after {args.warmup}; data: {data}; {cores} CPU cores")
    print("| workers | threads/worker | images/s | speed-up vs best 1 worker | scaling efficiency |")
    print("|---|---|---|---|---|")
    for workers, threads, rate in rows:
        print(f"| {workers} | {threads} | {rate:.0f} | {rate / best:.2f} | {rate / (workers * base):.0%} |")
    print(gpu_note())
    return 0


if __name__ == "__main__":
    sys.exit(main())
