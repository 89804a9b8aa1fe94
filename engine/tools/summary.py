"""Print a net's layers with top shapes, parameter counts and multiply-accumulates.

Data layers whose databases are absent take the shapes their settings declare
(batch_size, crop_size, mean_value/force_color for channels).
"""

import argparse

from . import run
import os


def _main(argv):
    parser = argparse.ArgumentParser(prog="summary", description=__doc__)
    parser.add_argument("--model", required=True, help="net prototxt")
    parser.add_argument("--phase", default="TEST", choices=["TRAIN", "TEST"])
    parser.add_argument("--stage", action="append", default=[], help="NetState stage (repeatable)")
    parser.add_argument("--level", type=int, default=0, help="NetState level")
    args = parser.parse_args(argv)

    from .. import formats, netgraph, summary
    from ..errors import NetError
    from ..net import Net

    param = formats.read_net(args.model)
    param, reasons = netgraph.stand_in_for_data(param, os.path.exists)
    state = engine_state(param, args)
    filtered = netgraph.filter_net(param, state)
    missing = [f"{name}: {why}" for name, why in reasons.items()
               if any(layer.name == name for layer in filtered.layer)]
    if missing:
        raise NetError(f"{args.model}: cannot shape the net without its data: " + "; ".join(missing))
    net = Net(param, phase=args.phase, level=args.level, stages=args.stage, source=args.model)
    print(summary.format_table(*summary.summarize(net)))


def engine_state(param, args):
    from .. import caffe_pb2

    state = caffe_pb2.NetState()
    state.phase = caffe_pb2.TRAIN if args.phase == "TRAIN" else caffe_pb2.TEST
    state.level = args.level
    state.stage.extend(args.stage)
    return state


def main(argv=None):
    return run(_main, argv)
