#!/usr/bin/env python3
"""Each compiled kernel and matrix product of one training step, timed alone at every thread count.

    python3 bench/replay_step.py --net resnet18 [--threads 2] [--repeat 7] [--top 12]

One forward and backward of the net records every call into engine.cpu's
kernel modules and every product of engine/cpu/products.py (split products,
products of a stack by index, work handed to the pool in turns or parts),
with its arguments. Each call is then run again, alone, --repeat times at
the step's thread count and as many at one thread (the kernels' and the
pool's), and the medians are summed per kernel. A call that runs slower on
every thread than on one shows at the end. The calls write into the step's
own arrays again, so the numbers of the net are not meaningful afterwards.
Thread variables are set before NumPy is imported, as in cpu_train_step.py.
"""

import argparse
import collections
import os
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

PRODUCTS = ("matmul", "matmul_indexed", "in_turns", "in_parts")


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--net", default="lenet")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--repeat", type=int, default=7, help="timed runs of each call (median)")
    parser.add_argument("--top", type=int, default=12, help="calls listed that lose most on every thread")
    return parser.parse_args(argv)


class _Calls(list):
    """Recorded (name, function, args, kwargs); a call made inside a recorded one (a kernel module's
    function that hands work to the pool) is part of it and not recorded again, and nothing is recorded
    once `closed` (the replays run closures that hold wrapped kernels)."""

    depth = 0
    closed = False

    def wrap(self, name, function):
        def record(*args, **kwargs):
            if self.depth or self.closed:
                return function(*args, **kwargs)
            self.append((name, function, args, kwargs))
            self.depth += 1
            try:
                return function(*args, **kwargs)
            finally:
                self.depth -= 1
        return record


class _Recorder:
    """A kernel module whose functions are recorded when called."""

    def __init__(self, module, calls):
        self._module, self._calls = module, calls

    def __getattr__(self, attribute):
        value = getattr(self._module, attribute)
        if not callable(value) or isinstance(value, type):
            return value
        return self._calls.wrap(f"{self._module.__name__.rsplit('.', 1)[-1]}.{attribute}", value)


def record_step(net, cpu, products):
    """The kernel and product calls of one forward and backward of `net`."""
    calls = _Calls()
    kernels = cpu.kernels
    originals = {name: getattr(products, name) for name in PRODUCTS}
    cpu.kernels = lambda name: _Recorder(kernels(name), calls)
    for name, function in originals.items():
        setattr(products, name, calls.wrap(f"products.{name}", function))
    try:
        net.forward()
        net.backward()
    finally:
        calls.closed = True
        cpu.kernels = kernels
        for name, function in originals.items():
            setattr(products, name, function)
    return calls


def median_ms(call, repeat):
    call()
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        samples.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(samples)


def main(argv=None):
    args = parse_args(argv)
    for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[variable] = str(args.threads)
    os.environ.setdefault("ENGINE_CPU_COMPILE", "wait")
    import engine
    from bench_nets import init_weights, make_inputs, training_param
    from engine import cpu
    from engine.cpu import products
    from engine.cpu.threads import one_thread

    param, _ = training_param(args.net)
    net = engine.Net(param, engine.TRAIN)
    init_weights(net)
    for name, values in make_inputs(net, param).items():
        net.blobs[name].data[...] = values
    for _ in range(2):
        net.forward()
        net.backward()
    calls = record_step(net, cpu, products)
    totals = collections.defaultdict(lambda: [0, 0.0, 0.0])
    losses = []
    pool_threads = products.threads()
    for name, function, call_args, call_kwargs in calls:
        def call():
            function(*call_args, **call_kwargs)
        every = median_ms(call, args.repeat)
        products._STATE["threads"] = 1
        try:
            with one_thread():
                one = median_ms(call, args.repeat)
        finally:
            products._STATE["threads"] = pool_threads
        entry = totals[name]
        entry[0] += 1
        entry[1] += every
        entry[2] += one
        largest = max((a.size for a in call_args if hasattr(a, "size") and hasattr(a, "shape")), default=0)
        losses.append((every - one, name, largest, every, one))
    print(f"{args.net}: {len(calls)} calls in one forward and backward, {args.threads} thread(s) against 1")
    print(f"{'call':40s} {'calls':>5s} {'ms now':>8s} {'ms on 1':>8s}")
    for name, (count, every, one) in sorted(totals.items(), key=lambda item: -item[1][1]):
        print(f"{name:40s} {count:5d} {every:8.2f} {one:8.2f}")
    print(f"sum {sum(t[1] for t in totals.values()):.1f} ms, on one thread {sum(t[2] for t in totals.values()):.1f}")
    slower = [loss for loss in sorted(losses, reverse=True)[:args.top] if loss[0] > 0]
    if slower:
        print("slower on every thread than on one (us):")
        for _, name, largest, every, one in slower:
            print(f"  {name:38s} largest array {largest:>10d}  {every * 1000:8.0f} against {one * 1000:8.0f}")


if __name__ == "__main__":
    main()
