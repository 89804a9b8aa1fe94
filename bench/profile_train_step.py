#!/usr/bin/env python3
"""Where our training step spends its time: per-layer forward/backward times and cProfile.

    python3 bench/profile_train_step.py --net caffenet --iterations 5 [--cprofile 25] [--threads 2]

Per-layer times wrap each layer's forward and backward (medians over the
iterations, after one warm-up step); cProfile then runs the same steps
through engine's SGD solver and prints the functions with the most own time.
Thread variables are set before NumPy is imported, as in cpu_train_step.py.
"""

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--net", default="lenet")
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--cprofile", type=int, default=25, help="functions to list (0: skip cProfile)")
    parser.add_argument("--what-if", default="", help="proposed engine changes to apply first (bench/what_if.py)")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="cpu: this process's CPU time, steadier on a loaded machine with --threads 1")
    return parser.parse_args(argv)


def wrap_layers(net, times, clock):
    """Replace each layer's forward/backward by a timed call (instance attributes shadow the class)."""
    for index, layer in enumerate(net.layers):
        key = f"{index:02d} {layer.name} ({layer.type})"
        times[key] = {"fwd": [], "bwd": []}

        def timed(fn, bucket):
            def run(*args):
                start = clock()
                fn(*args)
                bucket.append((clock() - start) * 1000.0)
            return run
        layer.forward = timed(layer.forward, times[key]["fwd"])
        layer.backward = timed(layer.backward, times[key]["bwd"])


def per_layer_table(times, total_ms):
    rows = []
    for key, buckets in times.items():
        fwd = statistics.median(buckets["fwd"]) if buckets["fwd"] else 0.0
        bwd = statistics.median(buckets["bwd"]) if buckets["bwd"] else 0.0
        rows.append((key, fwd, bwd))
    print(f"{'layer':40s} {'fwd ms':>9s} {'bwd ms':>9s} {'% step':>7s}")
    for key, fwd, bwd in sorted(rows, key=lambda r: -(r[1] + r[2])):
        print(f"{key:40s} {fwd:9.2f} {bwd:9.2f} {100 * (fwd + bwd) / total_ms:7.1f}")
    layers_ms = sum(f + b for _, f, b in rows)
    print(f"{'sum of layers':40s} {layers_ms:19.2f}   (median step {total_ms:.2f} ms; "
          f"the rest is the net, the solver update and Python)")


def main(argv=None):
    args = parse_args(argv)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    import cProfile
    import pstats
    import tempfile

    import engine  # before NumPy, as the tools import it: engine/_environment.py's BLAS settings apply

    import numpy as np
    from google.protobuf import text_format

    import what_if
    from bench_nets import init_weights, make_inputs, training_param

    what_if.apply(args.what_if)
    engine.cpu.ready(np.float32, wait=True)  # the CPU kernels compiled (or loaded) before timing

    param, _ = training_param(args.net)
    with tempfile.TemporaryDirectory() as tmp:
        net_path = Path(tmp) / "train.prototxt"
        net_path.write_text(text_format.MessageToString(param))
        solver_path = Path(tmp) / "solver.prototxt"
        solver_path.write_text(f'net: "{net_path}"\nbase_lr: 0.01\nmomentum: 0.9\nweight_decay: 0.0005\n'
                               'lr_policy: "fixed"\nmax_iter: 1000000\ndisplay: 0\nsnapshot: 0\n')
        solver = engine.get_solver(str(solver_path))
    net = solver.net
    init_weights(net)
    for name, values in make_inputs(net, param).items():
        net.blobs[name].data[...] = values
    solver.step(1)
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    times = {}
    wrap_layers(net, times, clock)
    steps = []
    for _ in range(args.iterations):
        start = clock()
        solver.step(1)
        steps.append((clock() - start) * 1000.0)
    per_layer_table(times, statistics.median(steps))
    if args.cprofile:
        profile = cProfile.Profile(clock) if args.clock == "cpu" else cProfile.Profile()
        profile.enable()
        for _ in range(args.iterations):
            solver.step(1)
        profile.disable()
        print(f"\ncProfile over {args.iterations} steps (own time first):")
        pstats.Stats(profile).sort_stats("tottime").print_stats(args.cprofile)
    dtypes = {str(b.data.dtype) for b in net.blobs.values()} | {str(b.data.dtype) for b in net.learnable_params}
    print(f"blob dtypes after the steps: {sorted(dtypes)}; numpy {np.__version__}")


if __name__ == "__main__":
    main()
