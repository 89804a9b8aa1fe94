"""Every real-world prototxt in ../shared/caffe-configs parses; every BVLC-only net builds.

The corpus is third-party material kept outside the repository: without it
these tests have no cases and test_corpus_is_present skips.

Nets whose data layers read absent databases take the shapes their settings
declare; where those settings do not fix a shape the case is skipped with
the recorded reason, never silently.
"""

import os
import re

import pytest

from engine import caffe_pb2, formats, netgraph
from engine.errors import CaffeError, NetError, ProtoError
from engine.net import Net

from paths import CONFIGS, needs_corpus  # noqa: E402

# Caffe's registered layer types (BVLC master); anything else is a fork's layer.
BVLC_TYPES = set("""
AbsVal Accuracy ArgMax BNLL BatchNorm BatchReindex Bias Clip Concat ContrastiveLoss Convolution Crop
Data Deconvolution Dropout DummyData ELU Eltwise Embed EuclideanLoss Exp Filter Flatten HDF5Data
HDF5Output HingeLoss Im2col ImageData InfogainLoss InnerProduct Input LRN LSTM LSTMUnit Log MVN
MemoryData MultinomialLogisticLoss PReLU Parameter Pooling Power Python RNN ReLU Reduction Reshape
SPP Scale Sigmoid SigmoidCrossEntropyLoss Silence Slice Softmax SoftmaxWithLoss Split Swish TanH
Threshold Tile WindowData""".split())


def _is_solver(path):
    return "solver" in path.name.lower()


FILES = sorted(p for p in CONFIGS.rglob("*") if p.is_file() and p.name != "README.md")
NETS = [p for p in FILES if not _is_solver(p)]
SOLVERS = [p for p in FILES if _is_solver(p)]


def _fork_files():
    """Files the corpus README marks as using fields outside BVLC's schema."""
    names = set()
    if not (CONFIGS / "README.md").exists():
        return names  # no corpus here: every corpus test below has no cases
    readme = (CONFIGS / "README.md").read_text()
    for row in readme.splitlines():
        cells = [c.strip() for c in row.split("|")]
        if len(cells) > 9 and cells[8] == "NO":
            names.add(cells[2].strip("`"))
    return names


FORK_FILES = _fork_files()


def _rel(path):
    return str(path.relative_to(CONFIGS))


@needs_corpus
@pytest.mark.parametrize("path", SOLVERS, ids=_rel)
def test_solver_parses(path):
    if _rel(path) in FORK_FILES:
        with pytest.raises(ProtoError, match=r":\d+:\d+: .*has no field named"):
            formats.read_solver(path)
        return
    solver = formats.read_solver(path)
    assert solver.type in {"SGD", "Nesterov", "AdaGrad", "RMSProp", "AdaDelta", "Adam"}


@needs_corpus
@pytest.mark.parametrize("path", NETS, ids=_rel)
def test_net_parses(path):
    if _rel(path) in FORK_FILES:
        with pytest.raises(ProtoError, match=r":\d+:\d+: .*has no field named"):
            formats.read_net(path)
        return
    net = formats.read_net(path)
    assert len(net.layer) > 0 and not len(net.layers)


def _declared_states(net):
    """(phase, stages) combinations the net's include rules name; TEST when it names none."""
    states = set()
    for layer in net.layer:
        for rule in layer.include:
            if rule.HasField("phase"):
                states.add((rule.phase, tuple(rule.stage)))
        for rule in layer.exclude:
            if rule.HasField("phase"):
                states.add((rule.phase, ()))
    if net.state.HasField("phase"):
        states.add((net.state.phase, tuple(net.state.stage)))
    # A stage-less state of a phase whose layers all need stages builds nothing useful.
    staged = {phase for phase, stages in states if stages}
    states = {(p, s) for p, s in states if s or p not in staged}
    return sorted(states) or [(caffe_pb2.TEST, ())]


def _build_cases():
    cases = []
    for path in NETS:
        if _rel(path) in FORK_FILES:
            continue
        net = formats.read_net(path)
        for phase, stages in _declared_states(net):
            label = caffe_pb2.Phase.Name(phase) + "".join(f"+{s}" for s in stages)
            cases.append(pytest.param(path, phase, stages, id=f"{_rel(path)}-{label}"))
    return cases


def _python_modules_missing(net):
    missing = []
    for layer in net.layer:
        if layer.type == "Python":
            try:
                __import__(layer.python_param.module)
            except ImportError:
                missing.append(f"{layer.name}: Python layer module '{layer.python_param.module}' is not importable")
    return missing


@needs_corpus
@pytest.mark.parametrize("path, phase, stages", _build_cases())
def test_net_builds(path, phase, stages):
    param = formats.read_net(path)
    foreign = sorted({layer.type for layer in param.layer} - BVLC_TYPES)
    if foreign:
        with pytest.raises(NetError, match=rf"{re.escape(str(path))}:\d+: .*Unknown layer type: "
                                           rf"({'|'.join(map(re.escape, foreign))})"):
            Net(param, phase=phase, stages=stages, source=str(path))
        return
    state = caffe_pb2.NetState(phase=phase, stage=stages)
    param, reasons = netgraph.stand_in_for_data(param, os.path.exists)
    active = netgraph.filter_net(param, state)
    missing = [f"{name}: {why}" for name, why in reasons.items()
               if any(layer.name == name for layer in active.layer)]
    missing += _python_modules_missing(active)
    if missing:
        pytest.skip("cannot shape without data: " + "; ".join(missing))
    net = Net(param, phase=phase, stages=stages, source=str(path))
    for name, blob in net.blobs.items():
        assert all(d > 0 for d in blob.shape) or blob.shape == (), f"blob {name} has shape {blob.shape}"


@needs_corpus
def test_corpus_is_present():
    assert len(NETS) > 80 and len(SOLVERS) > 20, "../shared/caffe-configs looks incomplete"


def test_fork_layer_error_names_type_and_line(tmp_path):
    text = ('layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 1 } } }\n'
            'layer { name: "odd" type: "ShuffleChannel" bottom: "x" top: "y" }\n')
    path = tmp_path / "fork.prototxt"
    path.write_text(text)
    with pytest.raises(CaffeError, match=r"fork.prototxt:2: layer 'odd': Unknown layer type: ShuffleChannel"):
        Net(str(path), phase=caffe_pb2.TEST)
