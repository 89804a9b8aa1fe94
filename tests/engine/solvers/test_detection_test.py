"""The solver's detection test pass (eval_type "detection"): AP of hand-made TP/FP lists
for each ap_version against values worked out by hand from SSD's ComputeAP, the gathering
of DetectionEvaluate rows over batches, and the log lines SSD's solver writes."""

import logging
import sys

import numpy as np
import pytest

from engine import caffe_pb2
from engine.errors import SolverError
from engine.formats import parse_text
from engine.solvers import get_solver
from engine.solvers.detection_test import DetectionResults
from engine.solvers.logparse import parse_lines

# Label 1: 4 ground-truth boxes; detections by score: TP, FP, TP, FP, TP.
#   precision 1, 1/2, 2/3, 1/2, 3/5; recall 1/4, 1/4, 1/2, 1/2, 3/4.
# Label 2: 2 ground-truth boxes; detections: FP, TP, TP.
#   precision 0, 1/2, 2/3; recall 0, 1/2, 1.
# Integral (sum of precision at each recall step):
#   label 1: 1/4 + (2/3)/4 + (3/5)/4 = 0.566667; label 2: (1/2)/2 + (2/3)/2 = 0.583333.
# MaxIntegral (precision made non-increasing from the right first):
#   label 1: the same 0.566667; label 2: (2/3)(1/2) + (2/3)(1/2) = 0.666667.
# 11point (SSD's loop; max precision at recall >= t for t = 1.0, 0.9, ..., 0):
#   label 1: [1, 1, 1, 2/3, 2/3, 2/3, 3/5, 3/5, 0, 0, 0] / 11 = 6.2 / 11 = 0.563636
#   (at t = 0.5 the scan reaches precision 2/3 before recall drops below 0.5)
#   label 2: 2/3 at every point = 0.666667.
ROWS_1 = [(0.9, 1), (0.8, 0), (0.7, 1), (0.6, 0), (0.5, 1)]
ROWS_2 = [(0.95, 0), (0.85, 1), (0.4, 1)]
EXPECTED = {"Integral": (0.566667, 0.583333), "MaxIntegral": (0.566667, 0.666667),
            "11point": (0.563636, 0.666667)}


def evaluate_rows(label, detections, item=0):
    return [[item, label, score, tp, 1 - tp] for score, tp in detections]


def batches():
    """Two batches of DetectionEvaluate output: num_pos rows split across them, one ignored row."""
    first = [[-1, 1, 3, -1, -1], [-1, 2, 2, -1, -1]] + evaluate_rows(1, ROWS_1[:3]) + evaluate_rows(2, ROWS_2)
    second = [[-1, 1, 1, -1, -1], [-1, 2, 0, -1, -1]] + evaluate_rows(1, ROWS_1[3:], item=1)
    second.append([1, 2, 0.99, 0, 0])  # matched to a difficult box: dropped
    return [np.array(b, np.float32).reshape(1, 1, -1, 5) for b in (first, second)]


@pytest.mark.parametrize("version", sorted(EXPECTED))
def test_average_precision_by_hand(version):
    results = DetectionResults()
    for batch in batches():
        results.add(batch, "detection_eval")
    assert dict(results.num_pos) == {1: 4, 2: 2}
    aps, mean = results.average_precisions(version)
    assert aps[1] == pytest.approx(EXPECTED[version][0], abs=1e-6)
    assert aps[2] == pytest.approx(EXPECTED[version][1], abs=1e-6)
    assert mean == pytest.approx(sum(EXPECTED[version]) / 2, abs=1e-6)


def test_label_without_detections_counts_as_zero():
    results = DetectionResults()
    results.add(np.array([[-1, 1, 2, -1, -1], [-1, 3, 5, -1, -1], [0, 1, 0.5, 1, 0]], np.float32), "out")
    aps, mean = results.average_precisions("Integral")
    assert aps == {1: 0.5, 3: 0.0} and mean == pytest.approx(0.25)
    with pytest.raises(SolverError, match="last axis of 5"):
        results.add(np.zeros((1, 1, 2, 4), np.float32), "out")


LAYER_MODULE = '''
import numpy as np
from engine.layers.base import Layer

BATCHES = []


class Rows(Layer):
    """Emits the scripted DetectionEvaluate outputs in turn; its bottom keeps the net trainable."""

    def setup(self, bottom, top):
        self.count = 0

    def reshape(self, bottom, top):
        top[0].reshape(*BATCHES[self.count % len(BATCHES)].shape)

    def forward(self, bottom, top):
        batch = BATCHES[self.count % len(BATCHES)]
        top[0].reshape(*batch.shape)
        top[0].data[...] = batch
        self.count += 1

    def backward(self, top, propagate_down, bottom):
        pass
'''

NET = """
layer { name: "data" type: "Input" top: "data" top: "label" include { phase: TRAIN }
        input_param { shape { dim: 2 dim: 3 } shape { dim: 2 } } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" include { phase: TRAIN }
        inner_product_param { num_output: 2 weight_filler { type: "xavier" } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" include { phase: TRAIN } }
layer { name: "x" type: "Input" top: "x" include { phase: TEST } input_param { shape { dim: 1 } } }
layer { name: "eval" type: "Python" bottom: "x" top: "detection_eval" include { phase: TEST }
        python_param { module: "%s" layer: "Rows" } }
"""


@pytest.fixture
def rows_module(tmp_path, monkeypatch):
    name = "detection_rows_for_test"
    (tmp_path / f"{name}.py").write_text(LAYER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib

    module = importlib.import_module(name)
    module.BATCHES[:] = batches()
    yield name
    sys.modules.pop(name, None)


def solver(module, extra):
    param = parse_text(f'base_lr: 0.01 lr_policy: "fixed" max_iter: 1 test_iter: 2 test_interval: 1 '
                       f'display: 1 snapshot_after_train: false {extra}', caffe_pb2.SolverParameter())
    parse_text(NET % module, param.net_param)
    return get_solver(param)


def test_solver_logs_map_and_per_class_results(rows_module, caplog):
    s = solver(rows_module, 'eval_type: "detection" ap_version: "11point" show_per_class_result: true')
    with caplog.at_level(logging.INFO):
        s.solve()
    text = "\n".join(record.getMessage() for record in caplog.records)
    assert "class1: 0.563636" in text and "class2: 0.666667" in text
    assert "    Test net output #0: detection_eval = 0.615152" in text
    assert s.test_scores(0)["detection_eval"] == pytest.approx((0.563636 + 0.666667) / 2, abs=1e-6)
    # parse_log reads the detection lines as any test output (given glog's stamps).
    stamped = [f"I1203 10:00:0{i % 10}.000000  7 solver.cpp:1] {line}" for i, line in enumerate(text.splitlines())]
    _, test_rows = parse_lines(stamped, year=2026)
    assert [row["detection_eval"] for row in test_rows] == pytest.approx([0.615152] * 2, abs=1e-6)


# SSD's solver log around a detection test (glog stamps; the mAP is the test output).
SSD_LOG = """I1207 12:00:00.000000  7 solver.cpp:239] Iteration 480 (3 iter/s, 6s/20 iters), loss = 2.5
I1207 12:00:00.000001  7 solver.cpp:258]     Train net output #0: mbox_loss = 2.4 (* 1 = 2.4 loss)
I1207 12:00:00.000002  7 sgd_solver.cpp:112] Iteration 480, lr = 0.001
I1207 12:00:06.000000  7 solver.cpp:433] Iteration 500, Testing net (#0)
I1207 12:00:09.000000  7 solver.cpp:546]     Test net output #0: detection_eval = 0.712
I1207 12:00:09.500000  7 solver.cpp:239] Iteration 500 (3 iter/s, 6s/20 iters), loss = 2.25
I1207 12:00:09.500001  7 solver.cpp:258]     Train net output #0: mbox_loss = 2.2 (* 1 = 2.2 loss)
I1207 12:00:09.500002  7 sgd_solver.cpp:112] Iteration 500, lr = 0.001
I1207 12:03:00.000000  7 solver.cpp:433] Iteration 1000, Testing net (#0)
I1207 12:03:03.000000  7 solver.cpp:546]     Test net output #0: detection_eval = 0.803
"""


class RecordingAxis:
    def __init__(self):
        self.curves = {}

    def plot(self, xs, ys, *style, label, **kwargs):
        self.curves[label] = (list(xs), list(ys))


def test_parse_log_and_plot_log_show_detection_eval():
    from engine.tools.plot_log import draw

    train, test = parse_lines(SSD_LOG.splitlines(), year=2026)
    # As Caffe's parse_log.py, the first test row is written once the second starts.
    assert [(row["NumIters"], row["detection_eval"]) for row in test] == [(500, 0.712), (1000, 0.803)]
    assert [row["mbox_loss"] for row in train] == [2.4, 2.2]
    axes = [RecordingAxis() for _ in range(3)]
    draw(axes, train, test)
    # The mAP, a score in [0, 1], goes on the accuracy axis; the loss on the loss axis.
    assert axes[1].curves == {"test detection_eval": ([500, 1000], [0.712, 0.803])}
    assert list(axes[0].curves) == ["train mbox_loss"]


def test_unknown_eval_settings_are_refused(rows_module):
    with pytest.raises(SolverError, match="Unknown evaluation type: segmentation"):
        solver(rows_module, 'eval_type: "segmentation"')
    with pytest.raises(SolverError, match="Unknown ap_version: VOC"):
        solver(rows_module, 'eval_type: "detection" ap_version: "VOC"')
