"""Run one forward pass and save every blob, for tools/compare to check another implementation against.

usage: dump_blobs --model NET.prototxt [--weights W.caffemodel] [--input NAME=FILE.npy ...]
                  [--phase TEST|TRAIN] [--seed N] [--gpu N] --output BLOBS.npz

Writes BLOBS.npz in the layout of tests/caffe-reference: `input/<blob>` for
the values put into each net input, `data/<blob>` for every blob after the
forward pass. An input not given with --input is filled with standard normal
values (from --seed), and saved, so the other side can feed the same.

This file uses nothing but NumPy and pycaffe's API (`import caffe`,
caffe.Net, net.blobs, net.forward), so it runs under BVLC Caffe as well as
under this engine: tools/dump_blobs takes the `caffe` that Python finds first
(BVLC's when its python/ folder is on PYTHONPATH, else this engine's
drop-in), and the file can be copied alone to a machine with Caffe.
"""

import argparse
import sys


def _inputs(pairs):
    import numpy as np

    values = {}
    for pair in pairs:
        name, sep, path = pair.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"--input takes NAME=FILE.npy, got '{pair}'")
        try:
            values[name] = np.load(path)
        except (OSError, ValueError) as exc:
            raise ValueError(f"--input {name}: cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
    return values


def dump(caffe, args):
    """{key: array} after one forward pass of the net the arguments describe."""
    import numpy as np

    given = _inputs(args.input)
    phase = caffe.TRAIN if args.phase == "TRAIN" else caffe.TEST
    if args.weights:
        net = caffe.Net(args.model, args.weights, phase)
    else:
        net = caffe.Net(args.model, phase)
    unknown = [name for name in given if name not in net.inputs]
    if unknown:
        raise ValueError(f"--input {unknown[0]}: not an input of the net (its inputs: {', '.join(net.inputs) or 'none'})")
    rng = np.random.RandomState(args.seed)
    saved = {}
    for name in net.inputs:
        blob = net.blobs[name]
        if name in given:
            value = np.asarray(given[name], dtype=np.float32)
            blob.reshape(*value.shape)
        else:
            value = rng.standard_normal(blob.data.shape).astype(np.float32)
        blob.data[...] = value
        saved["input/" + name] = value
    net.forward()
    for name, blob in net.blobs.items():
        saved["data/" + name] = np.array(blob.data, dtype=np.float32)
    return saved


def main(argv=None):
    parser = argparse.ArgumentParser(prog="dump_blobs", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="net prototxt")
    parser.add_argument("--weights", default="", help="its .caffemodel (default: the fillers' values)")
    parser.add_argument("--input", action="append", default=[], metavar="NAME=FILE.npy",
                        help="values for the net input NAME (repeatable)")
    parser.add_argument("--phase", default="TEST", choices=["TEST", "TRAIN"])
    parser.add_argument("--seed", type=int, default=0, help="seed of the values of inputs not given")
    parser.add_argument("--gpu", type=int, default=None, help="run on this GPU (default: the CPU)")
    parser.add_argument("--output", required=True, help="the .npz file to write")
    args = parser.parse_args(argv)

    import numpy as np

    try:
        import caffe
    except ImportError as exc:
        print(f"dump_blobs: cannot import caffe: {exc}", file=sys.stderr)
        return 1
    print(f"dump_blobs: using caffe from {getattr(caffe, '__file__', '?')}", file=sys.stderr)
    if args.gpu is not None:
        caffe.set_mode_gpu()
        caffe.set_device(args.gpu)
    else:
        caffe.set_mode_cpu()
    try:
        saved = dump(caffe, args)
        np.savez(args.output, **saved)
    except ValueError as exc:
        print(f"dump_blobs: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # pycaffe's and this engine's errors differ; report either on one line
        message = str(exc).strip().splitlines()
        print(f"dump_blobs: {type(exc).__name__}: {message[0] if message else ''}", file=sys.stderr)
        return 1
    count = sum(key.startswith("data/") for key in saved)
    print(f"Wrote {count} blobs to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
