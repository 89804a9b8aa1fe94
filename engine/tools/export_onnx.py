"""Export a deploy net and its weights to an ONNX model, with Caffe's exact arithmetic.

usage: export_onnx --model DEPLOY.prototxt --weights W.caffemodel --output X.onnx
                   [--outputs BLOB[,BLOB...]] [--opset N] [--check]

The net is built in TEST phase at the input shapes its Input layers (or input
header) declare; the model has those static shapes. The model's outputs are
the net's outputs, or the blobs --outputs names (each one's final value), and
only the layers they depend on are exported: SSD's deploy nets, whose
DetectionOutput has no ONNX form, export up to the blobs it reads. A layer
with no ONNX equivalent is a one-line error naming it. --check runs the model
in ONNX Runtime on a random input and prints each output's relative
difference from this engine's.
"""

import argparse

from . import run
from ..errors import CaffeError


def _require(module, purpose):
    try:
        return __import__(module)
    except ImportError:
        raise CaffeError(f"{purpose} needs the {module} package: pip install '.[onnx]' "
                         f"(or pip install {module})") from None


def _main(argv):
    _require("onnx", "export_onnx")
    from ..export import onnx_export

    parser = argparse.ArgumentParser(prog="export_onnx", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 2)[2])
    parser.add_argument("--model", required=True, help="deploy net prototxt (Input layers or input header)")
    parser.add_argument("--weights", required=True, help=".caffemodel or HDF5 weights")
    parser.add_argument("--output", required=True, help="the .onnx file to write")
    parser.add_argument("--outputs", action="append", default=[],
                        help="blobs the model returns, comma-separated or repeated (default: the net's outputs)")
    parser.add_argument("--opset", type=int, default=onnx_export.DEFAULT_OPSET,
                        help=f"ONNX opset ({onnx_export.MIN_OPSET} or newer; default {onnx_export.DEFAULT_OPSET})")
    parser.add_argument("--check", action="store_true",
                        help="run the model in ONNX Runtime on a random input and print its agreement "
                             "with this engine")
    args = parser.parse_args(argv)
    import onnx

    if args.check:
        _require("onnxruntime", "--check")
    outputs = [name for value in args.outputs for name in value.split(",") if name]
    net = onnx_export.build_net(args.model, args.weights)
    model = onnx_export.export_net(net, args.opset, source=args.model, outputs=outputs or None)
    try:
        onnx.save(model, args.output)
    except OSError as exc:
        raise CaffeError(f"cannot write {args.output}: {exc.strerror or exc}") from None
    print(f"wrote {args.output}: {len(model.graph.node)} nodes, opset {args.opset}, outputs "
          f"{', '.join(o.name for o in model.graph.output)}")
    if args.check:
        for name, error in onnx_export.agreement(net, model).items():
            print(f"output {name}: max |engine - onnxruntime| / max |engine| = {error:.2e}")
    return 0


def main(argv=None):
    return run(_main, argv, prefix="export_onnx")
