"""Draw a graph of the net architecture, as Caffe's python/draw_net.py.

Usage:
    draw_net NET OUT.(svg|png|pdf|dot|raw) [--rankdir LR|TB|BT|RL] [--phase TRAIN|TEST|ALL] [--display_lrm]

The format is the output file's extension (rendered by Graphviz's `dot`;
'.raw' writes the DOT text without needing Graphviz). Old V0/V1 prototxts
are upgraded first, so they draw like current ones.
"""

import argparse

from . import run


def _main(argv):
    parser = argparse.ArgumentParser(prog="draw_net", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("input_net_proto_file", help="input network prototxt file")
    parser.add_argument("output_image_file", help="output image file")
    parser.add_argument("--rankdir", default="LR",
                        help="one of TB (top-bottom, vertical), LR (left-right, horizontal), BT, RL "
                             "or another Graphviz rankdir (default: LR)")
    parser.add_argument("--phase", default="ALL", choices=["TRAIN", "TEST", "ALL"],
                        help="which phase's layers to draw (default: ALL)")
    parser.add_argument("--display_lrm", action="store_true",
                        help="show the learning rate multipliers of Convolution and InnerProduct layers")
    args = parser.parse_args(argv)

    from .. import caffe_pb2, draw, formats

    net = formats.read_net(args.input_net_proto_file)
    phase = {"TRAIN": caffe_pb2.TRAIN, "TEST": caffe_pb2.TEST, "ALL": None}[args.phase]
    print(f"Drawing net to {args.output_image_file}")
    draw.draw_net_to_file(net, args.output_image_file, args.rankdir, phase, args.display_lrm)
    return 0


def main(argv=None):
    return run(_main, argv)
