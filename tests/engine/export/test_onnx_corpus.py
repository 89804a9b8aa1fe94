"""ONNX export of the real-world corpus (../shared/caffe-configs): every deploy net there
(inputs from Input layers or an input header) that builds exports and agrees with ONNX
Runtime on every blob within 1e-4 relative error, or stops at a layer with no ONNX form with
the one-line error naming it; SSD's nets then export up to their DetectionOutput.

To keep the test short each net runs on batch 1, and at 64 x 64 pixels where the net builds
at that size (its weights are random, so a smaller input only shrinks the first
InnerProduct), else at 128 x 128, else at its own size.
"""

import pytest

from engine import formats
from engine.errors import CaffeError
from engine.export import onnx_export
from engine.export.onnx_graph import ExportError
from engine.net import TEST, Net

import onnx_check
from paths import CONFIGS, needs_corpus

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

MAX_SIDE = 64
# Nets whose case takes over 8 s on one core (big weights or inputs that cannot shrink).
SLOW = {"shelhamer__fcn.berkeleyvision.org/voc-fcn8s__deploy.prototxt",
        "KaimingHe__deep-residual-networks/prototxt__ResNet-152-deploy.prototxt",
        "BVLC__caffe/examples/net_surgery/bvlc_caffenet_full_conv.prototxt"}
# Corpus deploy nets with a layer ONNX cannot express: the layer type refused.
REFUSED = {
    "Robert-JunWang__Pelee/model__voc__deploy_merged.prototxt": "DetectionOutput",
    "chuanqi305__MobileNet-SSD/voc__MobileNetSSD_deploy.prototxt": "DetectionOutput",
    "soeaver__caffe-model/det__rfcn__models__pascal_voc__air101__rpn_rcnn_deploys__"
    "rcnn_deploy_rfcn_voc_air101-merge.prototxt": "PSROIPooling",
}


def _deploy_nets():
    """Corpus nets that parse and read no data layers, by path relative to the corpus."""
    if not CONFIGS.is_dir():
        return []
    found = []
    for path in sorted(p for p in CONFIGS.rglob("*") if p.is_file() and p.name != "README.md"):
        if "solver" in path.name.lower():
            continue
        try:
            onnx_export.check_deploy(formats.read_net(path), str(path))
        except CaffeError:
            continue
        found.append(str(path.relative_to(CONFIGS)))
    return found


DEPLOY = _deploy_nets()


def _input_sides(param):
    shapes = [list(s.dim) for layer in param.layer if layer.type == "Input" for s in layer.input_param.shape]
    shapes += [list(s.dim) for s in param.input_shape]
    shapes += [list(param.input_dim[i:i + 4]) for i in range(0, len(param.input_dim), 4)]
    return [max(shape[2:]) for shape in shapes if len(shape) == 4]


def _build(path):
    """The net at batch 1, shrunk to MAX_SIDE (or twice that) where it builds so; the error where it does not
    build at all."""
    sides = _input_sides(formats.read_net(path))
    attempts = [None]
    if sides and len(set(sides)) == 1:
        attempts = [side for side in (MAX_SIDE, 2 * MAX_SIDE) if side < sides[0]] + [None]
    for size in attempts:
        try:
            return Net(onnx_check.deploy_param(path, size), phase=TEST, source=str(path))
        except CaffeError as exc:
            error = exc
    return error


@needs_corpus
def test_corpus_has_deploy_nets():
    assert len(DEPLOY) >= 40 and set(REFUSED) <= set(DEPLOY)


@needs_corpus
@pytest.mark.parametrize("name", [pytest.param(name, marks=pytest.mark.slow) if name in SLOW else name
                                  for name in DEPLOY])
def test_corpus_deploy_net_exports(name):
    path = CONFIGS / name
    net = _build(path)
    if isinstance(net, CaffeError):
        pytest.skip(f"does not build here: {net}")  # tests/engine/test_corpus.py covers building
    feeds = onnx_check.prepare(net)
    if name not in REFUSED:
        onnx_check.export_and_check(net, feeds)
        return
    with pytest.raises(ExportError) as error:
        onnx_export.export_net(net)
    refused = [layer for layer in net.layers if layer.type == REFUSED[name]][0]
    message = str(error.value)
    assert message.startswith(f"{path}:{formats.locate_layer(path, refused.name)}: layer '{refused.name}' "
                              f"({refused.type}): ") and "\n" not in message
    if refused.type == "DetectionOutput":
        model, _ = onnx_check.export_and_check(net, feeds, outputs=net.bottom_names[refused.name])
        assert len(model.graph.output) == 3
