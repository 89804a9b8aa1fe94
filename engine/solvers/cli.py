"""Entry points of tools/caffe, tools/train, tools/test and tools/time: flags in, exit status out."""

import sys

from . import commands, timing
from .. import gflags
from ..tools import quiet_on_closed_pipe

CAFFE_USAGE = """caffe: command line brew
usage: caffe <command> <args>

commands:
  train           train or finetune a model
  test            score a model
  device_query    show GPU diagnostic information
  time            benchmark model execution time"""

TRAIN_USAGE = """train: train or finetune a model, as `caffe train`
usage: train --solver SOLVER.prototxt [--weights W[,W2]] [--snapshot X.solverstate] [--gpu N|all]
             [--iterations N] [--sigint_effect stop|snapshot|none] [--sighup_effect stop|snapshot|none]
             [--level N] [--stage S[,S2]]
--iterations overrides the solver's max_iter. Ctrl-C (stop) ends training after the current iteration
and writes a final snapshot (snapshot_after_train); pressing it twice aborts at once."""

TEST_USAGE = """test: score a model, as `caffe test`
usage: test --model NET.prototxt --weights W.caffemodel [--iterations N] [--gpu N] [--level N] [--stage S]
            [--oversample]
--oversample scores the four corner crops, the centre crop and their mirror images of each image and
averages the ten predictions (softmax probabilities), as the AlexNet paper reports its results; the data
layers' crop_size gives the crops' size."""

TIME_USAGE = """time: benchmark a model's forward and backward passes, as `caffe time`
usage: time --model NET.prototxt [--iterations N] [--phase TRAIN|TEST] [--weights W] [--gpu N]"""


def _flags(*names):
    return [commands.FLAGS[name] for name in names]


def _parse(program, argv, flags, usage):
    if any(arg in ("-h", "--help", "-help", "--helpfull") for arg in argv):
        print(gflags.usage(program, usage, flags))
        return None, None, 0
    try:
        values, positional = gflags.parse(argv, flags)
    except gflags.FlagError as exc:
        print(f"{program}: {exc}", file=sys.stderr)
        return None, None, 1
    return values, positional, None


def _no_positional(program, positional, usage):
    if positional:
        print(f"{program}: unexpected argument '{positional[0]}'\n{usage}", file=sys.stderr)
        return 1
    return None


ALL = ("gpu", "solver", "model", "phase", "level", "stage", "snapshot", "weights", "iterations",
       "sigint_effect", "sighup_effect")


@quiet_on_closed_pipe
def caffe_main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    flags = _flags(*ALL)
    values, positional, status = _parse("caffe", argv, flags, CAFFE_USAGE)
    if values is None:
        return status
    actions = {"train": commands.train, "test": commands.test, "time": timing.time_net,
               "device_query": timing.device_query}
    if len(positional) != 1 or positional[0] not in actions:
        print(gflags.usage("caffe", CAFFE_USAGE, flags), file=sys.stderr)
        return 1
    from .. import parallel

    if positional[0] == "train" and parallel.launched_by_mpi():
        return parallel.train_tool(values, program="caffe")
    return commands.run("caffe", actions[positional[0]], values)


@quiet_on_closed_pipe
def train_main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    flags = _flags("solver", "weights", "snapshot", "gpu", "iterations", "sigint_effect", "sighup_effect",
                   "level", "stage")
    values, positional, status = _parse("train", argv, flags, TRAIN_USAGE)
    if values is None:
        return status
    status = _no_positional("train", positional, TRAIN_USAGE)
    if status is not None:
        return status
    max_iter = values["iterations"] if "iterations" in values["_given"] else None
    if max_iter is not None and max_iter < 0:
        print(f"train: --iterations must not be negative (got {max_iter})", file=sys.stderr)
        return 1
    from .. import parallel

    if parallel.launched_by_mpi():
        return parallel.train_tool(values, max_iter, program="train")
    return commands.run("train", commands.train, values, max_iter)


@quiet_on_closed_pipe
def test_main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    flags = _flags("model", "weights", "iterations", "gpu", "level", "stage", "oversample")
    values, positional, status = _parse("test", argv, flags, TEST_USAGE)
    if values is None:
        return status
    status = _no_positional("test", positional, TEST_USAGE)
    if status is not None:
        return status
    return commands.run("test", commands.test, values)


@quiet_on_closed_pipe
def time_main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    flags = _flags("model", "weights", "iterations", "phase", "gpu", "level", "stage")
    values, positional, status = _parse("time", argv, flags, TIME_USAGE)
    if values is None:
        return status
    status = _no_positional("time", positional, TIME_USAGE)
    if status is not None:
        return status
    return commands.run("time", timing.time_net, values)
