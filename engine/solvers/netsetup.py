"""Reading a solver definition and building its train and test nets (Caffe's
Solver::InitTrainNet / InitTestNets), with Caffe's NetState precedence:
the phase, then the net's own `state`, then the solver's train_state/test_state.
"""

import logging
from pathlib import Path

from .. import caffe_pb2, formats
from ..errors import SolverError
from ..log import at
from ..net import Net

log = logging.getLogger("engine.solver")

TRAIN_NET_FIELDS = ("net", "net_param", "train_net", "train_net_param")


def read_solver_param(source):
    """A SolverParameter from a prototxt path or a message (copied), upgraded as Caffe reads it."""
    if isinstance(source, caffe_pb2.SolverParameter):
        param = caffe_pb2.SolverParameter()
        param.CopyFrom(source)
        return formats.read_solver(param)
    path = Path(source)
    if not path.is_file():
        raise SolverError(f"solver definition not found: {path}")
    param = formats.read_solver(str(path))
    # Caffe's UpgradeSnapshotPrefixProperty: the prefix defaults to the solver file's name.
    if not param.HasField("snapshot_prefix"):
        param.snapshot_prefix = str(path.with_suffix(""))
        log.info("snapshot_prefix was not specified and is set to %s", param.snapshot_prefix,
                 extra=at("upgrade_proto.cpp:1104"))
    elif Path(param.snapshot_prefix).is_dir():
        param.snapshot_prefix = str(Path(param.snapshot_prefix) / path.stem)
        log.info("snapshot_prefix was a directory and is replaced to %s", param.snapshot_prefix,
                 extra=at("upgrade_proto.cpp:1108"))
    return param


def _read_net_file(path, field):
    if not Path(path).is_file():
        raise SolverError(f"net file not found: {path} (the solver's `{field}`; paths are relative to the "
                          f"folder training runs in, {Path.cwd()})")
    return formats.read_net(path)


def _state(phase, net_param, override=None):
    state = caffe_pb2.NetState()
    state.phase = phase
    state.MergeFrom(net_param.state)
    if override is not None:
        state.MergeFrom(override)
    return state


def load_weights(net, weights):
    """Caffe's LoadNetWeights: a comma-separated list of .caffemodel / .h5 files, copied in order."""
    for name in str(weights).split(","):
        name = name.strip()
        if name:
            log.info("Finetuning from %s", name, extra=at("net.cpp:758"))
            net.copy_from(name)


def build_train_net(param):
    given = [f for f in TRAIN_NET_FIELDS if param.HasField(f)]
    if not given:
        raise SolverError("SolverParameter must specify a train net using one of these fields: "
                          + ", ".join(TRAIN_NET_FIELDS))
    if len(given) > 1:
        raise SolverError("SolverParameter must not contain more than one of these fields specifying a "
                          f"train_net: {', '.join(TRAIN_NET_FIELDS)} (found {', '.join(given)})")
    field = given[0]
    source = None  # the file the net came from, so that its errors name it
    if field == "train_net_param":
        log.info("Creating training net specified in train_net_param.", extra=at("solver.cpp:90"))
        net_param = formats.read_net(param.train_net_param)
    elif field == "train_net":
        log.info("Creating training net from train_net file: %s", param.train_net, extra=at("solver.cpp:94"))
        net_param, source = _read_net_file(param.train_net, "train_net"), param.train_net
    elif field == "net_param":
        log.info("Creating training net specified in net_param.", extra=at("solver.cpp:98"))
        net_param = formats.read_net(param.net_param)
    else:
        log.info("Creating training net from net file: %s", param.net, extra=at("solver.cpp:102"))
        net_param, source = _read_net_file(param.net, "net"), param.net
    net_param = _copy(net_param)
    state = _state(caffe_pb2.TRAIN, net_param, param.train_state)
    net_param.state.CopyFrom(state)
    net = Net(source or net_param, state=state)
    for weights in param.weights:
        load_weights(net, weights)
    return net


def _copy(net_param):
    copy = caffe_pb2.NetParameter()
    copy.CopyFrom(net_param)
    return copy


def build_test_nets(param):
    generic = int(param.HasField("net_param")) + int(param.HasField("net"))
    if generic > 1:
        raise SolverError("Both net_param and net_file may not be specified.")
    specific = len(param.test_net_param) + len(param.test_net)
    if (generic and len(param.test_iter) < specific) or (not generic and len(param.test_iter) != specific):
        raise SolverError(f"test_iter must be specified for each test network ({len(param.test_iter)} test_iter "
                          f"for {specific} test_net/test_net_param)")
    instances = len(param.test_iter) if generic else specific
    if len(param.test_state) and len(param.test_state) != instances:
        raise SolverError(f"test_state must be unspecified or specified once per test net "
                          f"({len(param.test_state)} given for {instances} test nets)")
    if instances and param.test_interval <= 0:
        raise SolverError(f"test_interval must be positive when the solver has test nets (test_iter is given); "
                          f"got {param.test_interval}")
    sources = []  # (description, NetParameter, file or None)
    for net_param in param.test_net_param:
        sources.append(("test_net_param", formats.read_net(net_param), None))
    for path in param.test_net:
        sources.append((f"test_net file: {path}", _read_net_file(path, "test_net"), path))
    remaining = len(param.test_iter) - len(sources)
    if param.HasField("net_param"):
        sources += [("net_param", formats.read_net(param.net_param), None)] * remaining
    if param.HasField("net"):
        if remaining > 0:
            net_param = _read_net_file(param.net, "net")
            sources += [(f"net file: {param.net}", net_param, param.net)] * remaining
    nets = []
    for index, (source, net_param, path) in enumerate(sources):
        net_param = _copy(net_param)
        state = _state(caffe_pb2.TEST, net_param, param.test_state[index] if len(param.test_state) else None)
        net_param.state.CopyFrom(state)
        log.info("Creating test net (#%d) specified by %s", index, source, extra=at("solver.cpp:190"))
        net = Net(path or net_param, state=state)
        net.debug_info = bool(param.debug_info)
        for weights in param.weights:
            load_weights(net, weights)
        nets.append(net)
    return nets
