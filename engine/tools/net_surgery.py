"""Edit a trained net, as in Caffe's examples/net_surgery.

Subcommands:
    fc2conv   turn InnerProduct layers into the equivalent Convolution layers and
              carry their weights over, making e.g. CaffeNet fully convolutional:

    net_surgery fc2conv --model nets/caffenet/deploy.prototxt --weights caffenet.caffemodel \\
        --out-model caffenet_full_conv.prototxt --out-weights caffenet_full_conv.caffemodel \\
        [--layers fc6,fc7,fc8] [--input-shape 1,3,451,451] [--suffix -conv]

On a 451x451 input the fully convolutional CaffeNet gives an 8x8 map of
class scores, one per 227x227 window at a stride of 32 pixels.
"""

import argparse

from . import run


def _names(text):
    return [name for name in text.split(",") if name]


def _shape(text):
    try:
        dims = [int(d) for d in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got '{text}'") from None
    if not dims or any(d <= 0 for d in dims):
        raise argparse.ArgumentTypeError(f"dimensions must be positive, got '{text}'")
    return dims


def fc2conv(args):
    from .. import formats, surgery

    converted, net, conversions = surgery.fc_to_conv(args.model, args.weights, args.layers, args.suffix,
                                                     args.input_shape)
    converted.name = converted.name + "Conv" if converted.name else "FullConv"
    formats.write_text(args.out_model, converted)
    if args.out_weights.endswith(".h5"):
        net.save_hdf5(args.out_weights)  # Caffe's HDF5 snapshot format: much faster for big nets
    else:
        net.save(args.out_weights)
    for c in conversions:
        channels, height, width = c.kernel
        print(f"{c.old_name} -> {c.new_name}: Convolution {channels}x{height}x{width}")
    outputs = ", ".join(f"{name} {'x'.join(map(str, net.blobs[name].shape))}" for name in net.outputs)
    print(f"wrote {args.out_model} and {args.out_weights} (outputs: {outputs})")


def _main(argv):
    parser = argparse.ArgumentParser(prog="net_surgery", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    fc = commands.add_parser("fc2conv", help="InnerProduct layers to equivalent Convolution layers")
    fc.add_argument("--model", required=True, help="the net's deploy prototxt")
    fc.add_argument("--weights", required=True, help="its .caffemodel (or HDF5 weights)")
    fc.add_argument("--out-model", required=True, help="where to write the converted prototxt")
    fc.add_argument("--out-weights", required=True,
                    help="where to write the converted weights (.caffemodel, or HDF5 when it ends in .h5)")
    fc.add_argument("--layers", type=_names, default=None,
                    help="comma-separated InnerProduct layers to convert (default: all)")
    fc.add_argument("--input-shape", type=_shape, default=None,
                    help="N,C,H,W for the converted net's Input layer (default: unchanged)")
    fc.add_argument("--suffix", default="-conv", help="appended to converted layers and their tops")
    args = parser.parse_args(argv)
    if args.command == "fc2conv":
        fc2conv(args)
    return 0


def main(argv=None):
    return run(_main, argv)
