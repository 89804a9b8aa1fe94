"""Check this engine's forward pass against saved blobs (another implementation's, e.g. BVLC Caffe's).

usage: compare --model NET.prototxt [--weights W.caffemodel] --reference BLOBS.npz
               [--input NAME=FILE.npy ...] [--rtol 1e-4] [--atol 1e-5] [--phase TEST|TRAIN] [--gpu N]

BLOBS.npz is what tools/dump_blobs writes (under BVLC's pycaffe or ours), or
a case of tests/caffe-reference: `data/<blob>` holds each blob after the
forward pass and `input/<blob>` the values fed to each net input; a file of
plain `<blob>` arrays works too. Net inputs take the --input values, else the
reference's input/ ones.

One row per blob in the reference, in net order, under the layer that last
wrote it: the largest absolute error, the relative error (largest absolute
error over the blob's largest magnitude) and whether the blob agrees, as
numpy.allclose(ours, reference, rtol, atol). The first layer that disagrees is
named at the end, where a difference starts; exit status 1 when one does.
"""

import argparse
from pathlib import Path

import numpy as np

from . import run
from ..errors import CaffeError

SECTIONS = ("data/", "input/")


def load_reference(path):
    """({blob: data after forward}, {input blob: values fed}) from a .npz file."""
    try:
        archive = np.load(path)
    except (OSError, ValueError) as exc:
        raise CaffeError(f"cannot read reference {path}: {getattr(exc, 'strerror', None) or exc}") from None
    with archive:
        blobs, inputs = {}, {}
        for key in archive.files:
            if key.startswith("data/"):
                blobs[key[len("data/"):]] = archive[key]
            elif key.startswith("input/"):
                inputs[key[len("input/"):]] = archive[key]
            elif "/" not in key:
                blobs[key] = archive[key]
    if not blobs:
        raise CaffeError(f"{path}: no blobs (expected data/<blob> or <blob> arrays)")
    return blobs, inputs


def parse_inputs(pairs):
    values = {}
    for pair in pairs:
        name, sep, path = pair.partition("=")
        if not sep or not name or not path:
            raise CaffeError(f"--input takes NAME=FILE.npy, got '{pair}'")
        try:
            values[name] = np.load(path)
        except (OSError, ValueError) as exc:
            raise CaffeError(f"--input {name}: cannot read {path}: {getattr(exc, 'strerror', None) or exc}") \
                from None
    return values


def feed(net, given, reference_inputs):
    from ..backend import get_array_module

    unknown = [name for name in given if name not in net.inputs]
    if unknown:
        raise CaffeError(f"--input {unknown[0]}: not an input of the net (its inputs: "
                         f"{', '.join(net.inputs) or 'none'})")
    for name in net.inputs:
        value = given.get(name, reference_inputs.get(name))
        if value is None:
            raise CaffeError(f"no values for the net input '{name}': give --input {name}=FILE.npy "
                             f"or a reference with input/{name}")
        blob = net.blobs[name]
        value = np.asarray(value, dtype=np.float32)
        blob.reshape(*value.shape)
        blob.data[...] = get_array_module(blob.data).asarray(value)


def producers(net):
    """{blob: (layer index, layer name)} of the layer that wrote each blob last (in-place layers included)."""
    owner = {}
    for index, (layer, tops) in enumerate(net.top_names.items()):
        for top in tops:
            owner[top] = (index, layer)
    return owner


def compare_blobs(net, reference, rtol, atol):
    """Rows (layer index, layer, blob, shape text, max abs, max rel, agrees), in net order."""
    from ..backend import to_host

    owner = producers(net)
    rows = []
    for name, blob in net.blobs.items():
        if name not in reference:
            continue
        ours = np.asarray(to_host(blob.data), dtype=np.float64)
        theirs = np.asarray(reference[name], dtype=np.float64)
        index, layer = owner.get(name, (-1, "(input)"))
        if ours.shape != theirs.shape:
            shape = f"{'x'.join(map(str, ours.shape))} vs {'x'.join(map(str, theirs.shape))}"
            rows.append((index, layer, name, shape, None, None, False))
            continue
        error = np.abs(ours - theirs)
        max_abs = float(error.max()) if error.size else 0.0
        scale = float(np.abs(theirs).max()) if theirs.size else 0.0
        max_rel = max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else float("inf"))
        agrees = bool(np.allclose(ours, theirs, rtol=rtol, atol=atol, equal_nan=True))
        rows.append((index, layer, name, "x".join(map(str, ours.shape)), max_abs, max_rel, agrees))
    rows.sort(key=lambda row: row[0])
    return rows


def format_rows(rows):
    header = ("layer", "blob", "shape", "max abs err", "max rel err", "")
    table = [header] + [(layer, blob, shape, "-" if a is None else f"{a:.3g}", "-" if r is None else f"{r:.3g}",
                         "ok" if ok else "DIFFERS") for _, layer, blob, shape, a, r, ok in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip() for line in table]


def _main(argv):
    parser = argparse.ArgumentParser(prog="compare", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="net prototxt")
    parser.add_argument("--weights", default="", help="its .caffemodel or HDF5 weights")
    parser.add_argument("--reference", required=True, help="the saved blobs (.npz)")
    parser.add_argument("--input", action="append", default=[], metavar="NAME=FILE.npy",
                        help="values for the net input NAME (repeatable; default: the reference's input/NAME)")
    parser.add_argument("--rtol", type=float, default=1e-4, help="relative tolerance (default: %(default)g)")
    parser.add_argument("--atol", type=float, default=1e-5, help="absolute tolerance (default: %(default)g)")
    parser.add_argument("--phase", default="TEST", choices=["TEST", "TRAIN"])
    parser.add_argument("--gpu", type=int, default=None, help="run on this GPU (default: the CPU)")
    args = parser.parse_args(argv)

    from ..net import Net
    from ..solvers.commands import set_mode

    if not Path(args.model).is_file():
        raise CaffeError(f"model definition not found: {args.model}")
    reference, reference_inputs = load_reference(args.reference)
    given = parse_inputs(args.input)
    set_mode([args.gpu] if args.gpu is not None else [])
    net = Net(args.model, args.phase)
    if args.weights:
        net.copy_from(args.weights)
    feed(net, given, reference_inputs)
    net.forward()
    rows = compare_blobs(net, reference, args.rtol, args.atol)
    print("\n".join(format_rows(rows)))
    missing = [name for name in reference if name not in net.blobs]
    if missing:
        print(f"in the reference only (not blobs of this net): {', '.join(missing)}")
    if not rows:
        raise CaffeError(f"{args.reference}: none of its blobs is a blob of this net")
    bad = [row for row in rows if not row[6]]
    if bad:
        _, layer, blob, shape, max_abs, _, _ = bad[0]
        why = f"shapes {shape}" if max_abs is None else f"max abs err {max_abs:.3g}"
        print(f"first disagreement: layer '{layer}' (blob '{blob}', {why}; rtol {args.rtol:g}, atol {args.atol:g}); "
              f"{len(bad)} of {len(rows)} blobs differ")
        return 1
    print(f"all {len(rows)} blobs agree (rtol {args.rtol:g}, atol {args.atol:g})")
    return 0


def main(argv=None):
    return run(_main, argv, prefix="compare")
