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

