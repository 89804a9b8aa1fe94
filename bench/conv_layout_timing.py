#!/usr/bin/env python3
"""Times engine's Convolution layer, the Winograd candidate and torch on the benchmark nets' conv shapes.

    python3 bench/conv_layout_timing.py [--threads 1] [--clock cpu] [--repeat 5]

Each row is one convolution of a benchmark net at its benchmark batch size:
forward, and backward with weight, bias and bottom diffs (medians, ms).
The Winograd columns (bench/winograd.py) appear for 3x3 stride-1 layers,
torch's (F.conv2d under autograd) when torch is installed.
"""

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

# name: (num, channels, size, num_output, kernel, stride, pad, group)
SHAPES = {
    "lenet conv1": (64, 1, 28, 20, 5, 1, 0, 1),
    "lenet conv2": (64, 20, 12, 50, 5, 1, 0, 1),
    "cifar conv1": (100, 3, 32, 32, 5, 1, 2, 1),
    "cifar conv2": (100, 32, 16, 32, 5, 1, 2, 1),
    "cifar conv3": (100, 32, 8, 64, 5, 1, 2, 1),
    "caffenet conv1": (16, 3, 227, 96, 11, 4, 0, 1),
    "caffenet conv2": (16, 96, 27, 256, 5, 1, 2, 2),
    "caffenet conv3": (16, 256, 13, 384, 3, 1, 1, 1),
    "caffenet conv4": (16, 384, 13, 384, 3, 1, 1, 2),
    "caffenet conv5": (16, 384, 13, 256, 3, 1, 1, 2),
    "resnet conv1": (8, 3, 112, 64, 7, 2, 3, 1),
    "resnet res2 3x3": (8, 64, 28, 64, 3, 1, 1, 1),
    "resnet res3 3x3": (8, 128, 14, 128, 3, 1, 1, 1),
    "resnet res3a 3x3/2": (8, 64, 28, 128, 3, 2, 1, 1),
    "resnet res3a 1x1/2": (8, 64, 28, 128, 1, 2, 0, 1),
    "resnet res4 3x3": (8, 256, 7, 256, 3, 1, 1, 1),
    "resnet res5 3x3": (8, 512, 4, 512, 3, 1, 1, 1),
}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--clock", choices=("wall", "cpu"), default="cpu")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--only", help="comma-separated substrings of the row names to run")
    args = parser.parse_args(argv)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    import numpy as np
    from google.protobuf import text_format

    import engine
    import winograd

    try:
        import torch
        torch.set_num_threads(args.threads)
    except ImportError:
        torch = None
    clock = time.process_time if args.clock == "cpu" else time.perf_counter

    def median_ms(fn):
        fn()
        samples = []
        for _ in range(args.repeat):
            start = clock()
            fn()
            samples.append((clock() - start) * 1000.0)
        return statistics.median(samples)

    rng = np.random.default_rng(0)
    print(f"{'layer':20s} {'engine fwd':>10s} {'bwd':>7s} {'winograd fwd':>12s} {'bwd':>7s} {'speed-up':>8s} "
          f"{'torch fwd':>9s} {'bwd':>7s} {'engine/torch':>12s} {'winograd/torch':>14s}")
    for name, (num, channels, size, outputs, kernel, stride, pad, group) in SHAPES.items():
        if args.only and not any(part in name for part in args.only.split(",")):
            continue
        text = (f'force_backward: true layer {{ name: "x" type: "Input" top: "x" input_param {{ shape {{ dim: {num} '
                f'dim: {channels} dim: {size} dim: {size} }} }} }} layer {{ name: "c" type: "Convolution" bottom: "x" '
                f'top: "y" convolution_param {{ num_output: {outputs} kernel_size: {kernel} stride: {stride} '
                f'pad: {pad} group: {group} }} }}')
        net = engine.Net(text_format.Parse(text, engine.caffe_pb2.NetParameter()), engine.TRAIN)
        layer, bottom, top = net.layers[1], [net.blobs["x"]], [net.blobs["y"]]
        bottom[0].data[...] = rng.standard_normal(bottom[0].shape)
        top[0].diff[...] = rng.standard_normal(top[0].shape)
        w, b = layer.blobs[0], layer.blobs[1]
        x, dy = bottom[0].data, top[0].diff
        fwd = median_ms(lambda: layer.forward(bottom, top))
        bwd = median_ms(lambda: (layer.forward(bottom, top), layer.backward(top, [True], bottom))) - fwd
        line = f"{name:20s} {fwd:10.2f} {bwd:7.2f}"
        wino = None
        if winograd.supported((kernel,) * 2, (stride,) * 2, (1, 1), (pad,) * 2):
            conv = winograd.WinogradConvolution((pad, pad), group)
            fwd2 = median_ms(lambda: conv.forward(x, w.data, b.data))
            bwd2 = median_ms(lambda: (conv.forward(x, w.data, b.data),
                                      conv.backward(x, dy, w.data, w.diff, b.diff))) - fwd2
            wino = fwd2 + bwd2
            line += f" {fwd2:12.2f} {bwd2:7.2f} {(fwd + bwd) / wino:8.2f}"
        else:
            line += f" {'-':>12s} {'-':>7s} {'-':>8s}"
        if torch is not None:
            tx = torch.from_numpy(x.copy()).requires_grad_()
            tw = torch.from_numpy(w.data.copy()).requires_grad_()
            tb = torch.from_numpy(b.data.copy()).requires_grad_()
            tdy = torch.from_numpy(dy.copy())

            def torch_forward():
                return torch.nn.functional.conv2d(tx, tw, tb, stride, pad, 1, group)
            fwd3 = median_ms(torch_forward)
            bwd3 = median_ms(lambda: torch_forward().backward(tdy)) - fwd3
            line += f" {fwd3:9.2f} {bwd3:7.2f} {(fwd + bwd) / (fwd3 + bwd3):12.2f}"
            line += f" {wino / (fwd3 + bwd3):14.2f}" if wino else f" {'-':>14s}"
        print(line, flush=True)


if __name__ == "__main__":
    main()
