#!/usr/bin/env python3
"""CPU training-step benchmark: our engine against PyTorch on the same nets, same weights.

For each net the parent runs three child processes, so that peak resident
memory and thread settings never mix between frameworks:

  check  builds the net in both frameworks from the same prototxt and the same
         weights, and compares the loss, the scores and every parameter
         gradient; it writes the weights and inputs the timed workers load.
  ours   times our forward, backward and SGD step (engine's solver when it
         exists, else Net.forward_backward + an explicit momentum update).
  torch  times the torch model built by torch_from_prototxt.py.

BLAS/OpenMP thread counts go into the children's environment before NumPy
or torch is imported; torch also gets torch.set_num_threads. Times are
medians over `--iterations` after `--warmup` untimed iterations; memory is
the child's ru_maxrss. With several thread counts (by default every core,
then one) each net is timed at each, one table per count, and the end of
the report checks the targets: step time at most PyTorch's at every count,
peak memory at most 1.5 times PyTorch's, and on CaffeNet and ResNet-18 the
step at every core at least 1.6 times faster than on one. Usage:

    python3 bench/cpu_train_step.py                      # every net, every core and one thread
    python3 bench/cpu_train_step.py --nets lenet,caffenet --iterations 10 --threads 2
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

BASE_LR, MOMENTUM, WEIGHT_DECAY = 0.01, 0.9, 0.0005
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS",
               "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")


def peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
CLOCK = [time.perf_counter]


def timed(fn, iterations, warmup, before=None):
    """Median time of fn() in milliseconds; before() runs untimed ahead of each call."""
    clock = CLOCK[0]
    samples = []
    for index in range(warmup + iterations):
        if before:
            before()
        start = clock()
        fn()
        elapsed = (clock() - start) * 1000.0
        if index >= warmup:
            samples.append(elapsed)
    return statistics.median(samples)


# -- workers (each runs in its own process) -------------------------------------------
def worker_check(args, work):
    import numpy as np
    import torch
    from google.protobuf import text_format

    import consistency
    import engine
    import what_if
    from bench_nets import init_weights, loss_layer, make_inputs, read_weights, training_param, without_dropout

    what_if.apply(args.what_if or "")  # so that the check covers what the ours worker will run
    torch.set_num_threads(args.threads)
    param, source = training_param(args.net)
    (work / "train.prototxt").write_text(text_format.MessageToString(param))
    net = engine.Net(param, engine.TRAIN)
    init_weights(net)
    net.save_hdf5(str(work / "weights.h5"))
    inputs = make_inputs(net, param)
    np.savez(work / "inputs.npz", **inputs)
    del net
    report = consistency.check(engine, param, without_dropout(param), str(work / "weights.h5"),
                               read_weights(work / "weights.h5"), inputs, loss_layer(param).bottom[0])
    report["source"] = str(source)
    return report


def _our_step(engine, work, net_path, solver_mode="CPU", copy_weights=None):
    """(net, step function, description): engine's SGDSolver when available.

    `solver_mode` only labels the solver file (the GPU bench passes GPU): the
    engine's mode is whatever engine.set_mode_* chose before this call.
    `copy_weights(net)`, when given, loads the weights instead of
    net.copy_from(work / "weights.h5").
    """
    try:
        get_solver = engine.get_solver
    except (AttributeError, ImportError):
        get_solver = None
    if get_solver is not None:
        solver_path = work / "solver.prototxt"
        solver_path.write_text(f'net: "{net_path}"\nbase_lr: {BASE_LR}\nmomentum: {MOMENTUM}\n'
                               f'weight_decay: {WEIGHT_DECAY}\nlr_policy: "fixed"\nmax_iter: 1000000\n'
                               f'display: 0\nsnapshot: 0\nsolver_mode: {solver_mode}\ntype: "SGD"\n')
        solver = get_solver(str(solver_path))
        if copy_weights is None:
            solver.net.copy_from(str(work / "weights.h5"))
        else:
            copy_weights(solver.net)
        return solver.net, lambda: solver.step(1), "engine.get_solver(SGD).step(1)"
    if copy_weights is None:
        net = engine.Net(str(net_path), engine.TRAIN, weights=str(work / "weights.h5"))
    else:
        net = engine.Net(str(net_path), engine.TRAIN)
        copy_weights(net)
    history = [blob.xp.zeros_like(blob.data) for blob in net.learnable_params]
    rules = list(zip(net.learnable_params, history, net.params_lr, net.params_weight_decay))

    def step():
        net.clear_param_diffs()
        net.forward_backward()
        for blob, velocity, lr_mult, decay_mult in rules:
            if decay_mult:
                blob.diff[...] += (WEIGHT_DECAY * decay_mult) * blob.data
            velocity *= MOMENTUM
            velocity += (BASE_LR * lr_mult) * blob.diff
            blob.diff[...] = velocity
        net.update()
    return net, step, "Net.forward_backward + explicit momentum update"


def worker_ours(args, work):
    import engine  # before NumPy, as the tools import it: engine/_environment.py's BLAS settings apply

    import numpy as np

    import what_if

    what_if.apply(args.what_if or "")

    baseline = peak_mb()
    net, step, how = _our_step(engine, work, work / "train.prototxt")
    for name, values in np.load(work / "inputs.npz").items():
        net.blobs[name].data[...] = values
    fwd = timed(net.forward_from_to, args.iterations, args.warmup)
    # A fresh forward before each backward: layers keep state for it (im2col columns, pooling argmax).
    bwd = timed(net.backward_from_to, args.iterations, args.warmup,
                before=lambda: (net.forward_from_to(), net.clear_param_diffs()))
    stp = timed(step, args.iterations, args.warmup)
    return {"fwd": fwd, "bwd": bwd, "step": stp, "peak_mb": peak_mb(), "import_mb": baseline, "step_how": how}


def worker_torch(args, work):
    import numpy as np
    import torch

    from bench_nets import read_weights
    from engine import formats
    from torch_from_prototxt import TorchNet

    torch.set_num_threads(args.threads)
    baseline = peak_mb()
    model = TorchNet(formats.read_net(str(work / "train.prototxt")), read_weights(work / "weights.h5"))
    optimizer = torch.optim.SGD(model.param_groups(BASE_LR, WEIGHT_DECAY), lr=BASE_LR, momentum=MOMENTUM)
    inputs = {name: torch.from_numpy(values) for name, values in np.load(work / "inputs.npz").items()}
    state = {}

    def forward():
        state["loss"] = model.loss(model(inputs))

    def step():
        optimizer.zero_grad()
        model.loss(model(inputs)).backward()
        optimizer.step()

    fwd = timed(forward, args.iterations, args.warmup, before=optimizer.zero_grad)
    bwd = timed(lambda: state["loss"].backward(), args.iterations, args.warmup,
                before=lambda: (optimizer.zero_grad(), forward()))
    stp = timed(step, args.iterations, args.warmup)
    return {"fwd": fwd, "bwd": bwd, "step": stp, "peak_mb": peak_mb(), "import_mb": baseline,
            "torch": torch.__version__}


WORKERS = {"check": worker_check, "ours": worker_ours, "torch": worker_torch}


# -- the parent ---------------------------------------------------------------------
def child_env(threads):
    env = dict(os.environ)
    env["ENGINE_CPU_COMPILE"] = "wait"  # our CPU kernels compiled (or loaded from the cache) before timing
    for var in THREAD_VARS:
        env[var] = str(threads)
    return env


def run_child(kind, args, work, threads):
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", kind, "--net", args.net_name,
               "--workdir", str(work), "--iterations", str(args.iterations), "--warmup", str(args.warmup),
               "--threads", str(threads), "--clock", args.clock, "--what-if", args.what_if or ""]
    done = subprocess.run(command, env=child_env(threads), capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{kind} worker for {args.net_name} failed (exit {done.returncode}):\n"
                           f"{done.stderr[-4000:]}")
    return json.loads((work / f"{kind}.json").read_text())


def best_of(args, work, threads):
    """Alternate ours/torch children `--rounds` times; keep each framework's best median.

    On a shared machine a burst of load hits one child and not the other;
    alternating and keeping the best of each spreads that risk evenly.
    """
    best = {}
    for _ in range(args.rounds):
        for kind in ("ours", "torch"):
            result = run_child(kind, args, work, threads)
            if kind in best:
                for key in ("fwd", "bwd", "step"):
                    result[key] = min(result[key], best[kind][key])
                result["peak_mb"] = max(result["peak_mb"], best[kind]["peak_mb"])
            best[kind] = result
    return best["ours"], best["torch"]


def format_table(rows):
    head = ("net", "ours fwd", "ours bwd", "ours step", "torch fwd", "torch bwd", "torch step",
            "fwd x", "bwd x", "step x", "ours MB", "torch MB", "mem x")
    lines = [head]
    for name, ours, theirs in rows:
        lines.append((name, *(f"{ours[k]:.1f}" for k in ("fwd", "bwd", "step")),
                      *(f"{theirs[k]:.1f}" for k in ("fwd", "bwd", "step")),
                      *(f"{ours[k] / theirs[k]:.2f}" for k in ("fwd", "bwd", "step")),
                      f"{ours['peak_mb']:.0f}", f"{theirs['peak_mb']:.0f}",
                      f"{ours['peak_mb'] / theirs['peak_mb']:.2f}"))
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    out = ["| " + " | ".join(cell.ljust(w) for cell, w in zip(line, widths)) + " |" for line in lines]
    out.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(out)


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nets", default="lenet,cifar10_quick,caffenet,resnet18,mobilenet_v1",
                        help="comma-separated: lenet, cifar10_quick, caffenet, resnet18, mobilenet_v1")
    parser.add_argument("--iterations", type=int, default=10, help="timed iterations (median reported)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed iterations first")
    cores = len(os.sched_getaffinity(0))
    parser.add_argument("--threads", default=",".join(dict.fromkeys((str(cores), "1"))),
                        help="BLAS/OpenMP/torch threads, comma-separated for one table each "
                             f"(default: {cores},1 = the cores available, then one)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="alternate the ours/torch children this many times, keeping the best medians")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                        help="cpu: the child's CPU time (all threads), steadier on a shared machine; "
                             "meaningful as a time only with --threads 1")
    parser.add_argument("--what-if", default="",
                        help="apply proposed engine changes to our worker first (bench/what_if.py): "
                             "winograd")
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    parser.add_argument("--net", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        args.thread_counts = list(dict.fromkeys(int(n) for n in args.threads.split(",") if n.strip()))
    except ValueError:
        args.thread_counts = []
    if args.iterations < 1 or args.warmup < 0 or args.rounds < 1 or not args.thread_counts or \
            min(args.thread_counts) < 1:
        parser.error("--iterations, --rounds and --threads must be positive, --warmup non-negative")
    args.threads = args.thread_counts[0]  # a worker's own count
    return args


# The targets: ours/torch step time at most this at every thread count, and peak memory ...
STEP_TARGET, MEMORY_TARGET = 1.0, 1.5
# ... and on these nets the step at the most threads at least this much faster than on one.
SPEEDUP_NETS, SPEEDUP_TARGET = ("caffenet", "resnet18"), 1.6


def target_checks(tables):
    """Lines `PASS|MISS  what: value (target)` for the measured tables {threads: [(net, ours, torch)]}."""
    lines = []

    def check(ok, what, value, target):
        lines.append(f"{'PASS' if ok else 'MISS'}  {what}: {value} ({target})")

    for threads, rows in tables.items():
        for name, ours, theirs in rows:
            ratio = ours["step"] / theirs["step"]
            check(ratio <= STEP_TARGET, f"{name} step, {threads} thread(s)", f"{ratio:.2f}x torch",
                  f"at most {STEP_TARGET:.1f}x")
    for threads, rows in tables.items():
        for name, ours, theirs in rows:
            ratio = ours["peak_mb"] / theirs["peak_mb"]
            check(ratio <= MEMORY_TARGET, f"{name} peak memory, {threads} thread(s)", f"{ratio:.2f}x torch",
                  f"at most {MEMORY_TARGET:.1f}x")
    most, one = max(tables), min(tables)
    if most > one:
        steps = {threads: {name: ours["step"] for name, ours, _ in rows} for threads, rows in tables.items()}
        for name in SPEEDUP_NETS:
            if name in steps[most] and name in steps[one]:
                speedup = steps[one][name] / steps[most][name]
                check(speedup >= SPEEDUP_TARGET, f"{name} ours, {most} threads against {one}",
                      f"{speedup:.2f}x faster", f"at least {SPEEDUP_TARGET:.1f}x")
    return lines


def main(argv=None):
    args = parse_args(argv)
    CLOCK[0] = CLOCKS[args.clock]
    if args.worker:
        work = Path(args.workdir)
        result = WORKERS[args.worker](args, work)
        (work / f"{args.worker}.json").write_text(json.dumps(result))
        return 0
    from bench_nets import NETS

    import what_if

    unknown_patches = [n for n in args.what_if.split(",") if n.strip() and n.strip() not in what_if.PATCHES]
    if unknown_patches:
        print(f"unknown --what-if: {', '.join(unknown_patches)} (known: {', '.join(what_if.PATCHES)})",
              file=sys.stderr)
        return 2
    names = [n.strip() for n in args.nets.split(",") if n.strip()]
    unknown = [n for n in names if n not in NETS]
    if unknown:
        print(f"unknown net(s): {', '.join(unknown)} (known: {', '.join(NETS)})", file=sys.stderr)
        return 2
    tables, results, failed = {threads: [] for threads in args.thread_counts}, {}, False
    load_before = os.getloadavg()[0]
    cores = len(os.sched_getaffinity(0))
    started = time.perf_counter()
    if args.clock == "wall" and load_before > cores / 2:
        print(f"warning: load average {load_before:.1f} on {cores} cores; other processes share the CPUs, so "
              "wall-clock times (multi-threaded BLAS above all) will be unreliable. "
              "--threads 1 --clock cpu measures CPU time instead.", file=sys.stderr)
    for name in names:
        args.net_name = name
        with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as tmp:
            work = Path(tmp)
            check = run_child("check", args, work, args.thread_counts[0])
            (fkey, fwd, fwd32), (gkey, grad, grad32) = check["worst_forward"], check["worst_gradient"]
            print(f"{name}: built from {check['source']}; against torch float64, closest to failing: "
                  f"{fkey} error {fwd:.1e} (torch float32 {fwd32:.1e}), {gkey} error {grad:.1e} "
                  f"(torch float32 {grad32:.1e})", flush=True)
            if not check["ok"]:
                print(f"{name}: the torch model does not compute what ours does:\n  "
                      + "\n  ".join(check["failures"]), file=sys.stderr)
                failed = True
                continue
            results[name] = {"check": check}
            for threads in args.thread_counts:
                ours, theirs = best_of(args, work, threads)
                tables[threads].append((name, ours, theirs))
                results[name][f"threads_{threads}"] = {"ours": ours, "torch": theirs}
                print(f"{name}, {threads} thread(s): ours {ours['step']:.1f} ms/step, torch {theirs['step']:.1f} "
                      f"ms/step", flush=True)
    tables = {threads: rows for threads, rows in tables.items() if rows}
    for threads, rows in tables.items():
        step_how = rows[0][1]["step_how"]
        print(f"\nthreads {threads}, median of {args.iterations} iterations after {args.warmup} warm-up, "
              f"best of {args.rounds} round(s); {args.clock} times in ms; x = ours/torch; our step: {step_how}; "
              f"{'ours with --what-if ' + args.what_if + '; ' if args.what_if else ''}"
              f"torch {rows[0][2]['torch']}")
        print(format_table(rows))
        print("peak above the post-import baseline (MB, ours/torch): " + "; ".join(
            f"{name} {ours['peak_mb'] - ours['import_mb']:.0f}/{theirs['peak_mb'] - theirs['import_mb']:.0f}"
            for name, ours, theirs in rows))
    if tables:
        print(f"\ntargets ({cores} cores; load average {load_before:.2f} before, {os.getloadavg()[0]:.2f} after; "
              f"{time.perf_counter() - started:.0f} s in all):")
        checks = target_checks(tables)
        print("\n".join(checks))
        print(f"{sum(line.startswith('PASS') for line in checks)} of {len(checks)} targets met")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
