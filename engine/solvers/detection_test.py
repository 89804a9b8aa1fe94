"""SSD's detection test pass (weiliu89/caffe Solver::TestDetection), chosen by
the solver's `eval_type: "detection"`.

Every output of the test net is a DetectionEvaluate result: (1, 1, rows, 5)
with rows [item_id, label, score, tp, fp], and rows [-1, label, num_pos, ...]
that count the ground-truth boxes. Over test_iter batches the solver gathers,
per output and label, the (score, tp) and (score, fp) pairs and the positive
counts, then logs for each output
    Test net output #i: NAME = mAP
where mAP is the mean over the labels that have ground truth of SSD's
ComputeAP (ap_version "11point", "MaxIntegral" or "Integral"); a label with
ground truth but no detection counts as 0. With show_per_class_result each
label's AP is logged first, as "class<label>: AP". Pairs with tp = fp = 0
(detections matched to a difficult box that is not evaluated) are dropped.
Unlike SSD, which logs nothing for an output without any detection, such an
output logs an mAP of 0.
"""

import logging
from collections import defaultdict

import numpy as np

from .. import backend
from ..detection.average_precision import AP_VERSIONS, compute_ap
from ..errors import SolverError
from ..log import at, number

log = logging.getLogger("engine.solver")
EVAL_TYPES = ("classification", "detection")


def check_eval_param(param):
    if param.eval_type not in EVAL_TYPES:
        raise SolverError(f"Unknown evaluation type: {param.eval_type} (use classification or detection)")
    if param.ap_version not in AP_VERSIONS:
        raise SolverError(f"Unknown ap_version: {param.ap_version} (use {', '.join(AP_VERSIONS)})")


class DetectionResults:
    """What DetectionEvaluate emitted over the test batches, for one output blob."""

    def __init__(self):
        self.true_pos = defaultdict(list)
        self.false_pos = defaultdict(list)
        self.num_pos = defaultdict(int)

    def add(self, output, name):
        """Gather one batch's DetectionEvaluate output (any shape whose last axis is 5)."""
        output = np.asarray(output, dtype=np.float32)
        if output.ndim == 0 or output.shape[-1] != 5:
            raise SolverError(f"eval_type detection: test net output '{name}' has shape {output.shape}, "
                              f"expected a last axis of 5 (a DetectionEvaluate output)")
        rows = output.reshape(-1, 5)
        for item, label, score, tp, fp in rows:
            label = int(label)
            if int(item) == -1:
                self.num_pos[label] += int(score)
            elif int(tp) or int(fp):
                self.true_pos[label].append((float(score), int(tp)))
                self.false_pos[label].append((float(score), int(fp)))

    def average_precisions(self, ap_version):
        """{label: AP} for every label with ground truth (sorted), and their mean."""
        aps = {}
        for label in sorted(self.num_pos):
            if label not in self.true_pos:
                log.warning("Missing true_pos for label: %d", label)
                aps[label] = 0.0
                continue
            _, _, aps[label] = compute_ap(self.true_pos[label], self.num_pos[label],
                                          self.false_pos[label], ap_version)
        mean = float(np.float32(sum(np.float32(v) for v in aps.values())) / np.float32(len(aps))) if aps else 0.0
        return aps, mean


class DetectionTestMixin:
    """Solver.test_detection: the test pass of eval_type "detection"."""

    def test_detection(self, test_net_id=0):
        p = self.param
        log.info("Iteration %d, Testing net (#%d)", self.iter, test_net_id, extra=at("solver.cpp:433"))
        net = self.test_nets[test_net_id]
        net.share_with(self.net)
        iterations = p.test_iter[test_net_id]
        results = [DetectionResults() for _ in net.outputs]
        loss = np.float32(0)
        for _ in range(iterations):
            if self._poll_requests():
                break
            iter_loss = net.forward_from_to()
            if p.test_compute_loss:
                loss += np.float32(iter_loss)
            for result, name in zip(results, net.outputs):
                result.add(backend.to_host(net.blobs[name].data), name)
        if self.requested_early_exit:
            log.info("Test interrupted.", extra=at("solver.cpp:494"))
            return
        if p.test_compute_loss and iterations:
            log.info("Test loss: %s", number(loss / np.float32(iterations)), extra=at("solver.cpp:499"))
        scores = []
        for index, (result, name) in enumerate(zip(results, net.outputs)):
            aps, mean_ap = result.average_precisions(p.ap_version)
            if p.show_per_class_result:
                for label, ap in aps.items():
                    log.info("class%d: %s", label, number(ap), extra=at("solver.cpp:540"))
            log.info("    Test net output #%d: %s = %s", index, name, number(mean_ap), extra=at("solver.cpp:546"))
            scores.append(mean_ap)
        self.mean_scores[test_net_id] = scores
