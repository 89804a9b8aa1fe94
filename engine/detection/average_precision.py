"""Average precision from true/false-positive flags, as SSD's ComputeAP does it
(the solver's detection test feeds it what DetectionEvaluate emits)."""

import numpy as np

AP_VERSIONS = ("11point", "MaxIntegral", "Integral")


def _cumsum(pairs):
    """Flags summed in descending score order (ties keep their order)."""
    scores = np.array([p[0] for p in pairs], dtype=np.float32)
    flags = np.array([p[1] for p in pairs], dtype=np.int64)
    order = np.argsort(-scores.astype(np.float64), kind="stable")
    return np.cumsum(flags[order])


def compute_ap(tp, num_pos, fp, ap_version="Integral"):
    """SSD's ComputeAP. `tp` and `fp` are lists of (score, flag) pairs for one
    class, with complementary flags; `num_pos` is the number of ground-truth
    boxes. Returns (precision, recall, ap) with float32 precision and recall
    arrays, as SSD computes them in float."""
    if len(tp) != len(fp):
        raise ValueError("tp must have same size as fp")
    for (tscore, tflag), (fscore, fflag) in zip(tp, fp):
        if abs(tscore - fscore) > 1e-6 or tflag != 1 - fflag:
            raise ValueError("tp and fp must hold the same detections with complementary flags")
    if ap_version not in AP_VERSIONS:
        raise ValueError(f"Unknown ap_version: {ap_version}")
    if not tp or num_pos == 0:
        return np.zeros(0, np.float32), np.zeros(0, np.float32), 0.0
    tp_cum = _cumsum(tp)
    fp_cum = _cumsum(fp)
    if int(tp_cum[-1]) > num_pos:
        raise ValueError(f"more true positives ({int(tp_cum[-1])}) than ground truth ({num_pos})")
    prec = (tp_cum.astype(np.float32) / (tp_cum + fp_cum).astype(np.float32)).astype(np.float32)
    rec = (tp_cum.astype(np.float32) / np.float32(num_pos)).astype(np.float32)
    num = len(tp)
    eps = np.float32(1e-6)
    ap = np.float32(0)
    if ap_version == "11point":
        max_precs = np.zeros(11, np.float32)
        start = num - 1
        for j in range(10, -1, -1):
            for i in range(start, -1, -1):
                if rec[i] < j / 10.0:
                    start = i
                    if j > 0:
                        max_precs[j - 1] = max_precs[j]
                    break
                if max_precs[j] < prec[i]:
                    max_precs[j] = prec[i]
        for j in range(10, -1, -1):
            ap += max_precs[j] / np.float32(11)
    elif ap_version == "MaxIntegral":
        cur_rec, cur_prec = rec[-1], prec[-1]
        for i in range(num - 2, -1, -1):
            cur_prec = max(prec[i], cur_prec)
            if abs(cur_rec - rec[i]) > eps:
                ap += cur_prec * abs(cur_rec - rec[i])
            cur_rec = rec[i]
        ap += cur_rec * cur_prec
    else:
        prev = np.float32(0)
        for i in range(num):
            if abs(rec[i] - prev) > eps:
                ap += prec[i] * abs(rec[i] - prev)
            prev = rec[i]
    return prec, rec, float(ap)


class DetectionResults:
    """What SSD's Solver::TestDetection gathers from one DetectionEvaluate
    output over the test iterations: `add` each iteration's rows (K, 5), then
    `mean_ap` gives the mAP the solver logs and the per-class APs."""

    def __init__(self):
        self.true_pos, self.false_pos, self.num_pos = {}, {}, {}

    def add(self, rows):
        rows = np.asarray(rows, dtype=np.float32).reshape(-1, 5)
        for item, label, score, tp, fp in rows:
            label = int(label)
            if int(item) == -1:  # a class row: its number of ground-truth boxes
                self.num_pos[label] = self.num_pos.get(label, 0) + int(score)
            elif int(tp) or int(fp):  # (0, 0): matched a difficult box that is not evaluated
                self.true_pos.setdefault(label, []).append((float(score), int(tp)))
                self.false_pos.setdefault(label, []).append((float(score), int(fp)))

    def mean_ap(self, ap_version="Integral"):
        """(mAP, {label: AP}); classes without detections count as 0 in the mean, as in SSD."""
        aps = {}
        for label in sorted(self.num_pos):
            if label in self.true_pos:
                aps[label] = compute_ap(self.true_pos[label], self.num_pos[label], self.false_pos[label],
                                        ap_version)[2]
        total = np.float32(0)
        for ap in aps.values():
            total += np.float32(ap)
        return float(total / np.float32(max(len(self.num_pos), 1))), aps
