"""Matching of boxes to ground truth, and non-maximum suppression, as SSD's
bbox_util does them. These run per image on host (NumPy) arrays: their
greedy loops are sequential by nature; each step is a whole-array operation.
"""

import numpy as np

from .bbox import bbox_size, is_cross_boundary, jaccard_overlap

# MultiBoxLossParameter.MatchType
BIPARTITE, PER_PREDICTION = 0, 1

_MIN_OVERLAP = 1e-6  # SSD keeps only overlaps above this for matching
_NMS_MATRIX_LIMIT = 2048  # candidates for which NMS precomputes all overlaps


def match_bboxes(gt_boxes, pred_boxes, match_type, overlap_threshold, ignore_cross_boundary_bbox=False):
    """SSD's MatchBBox: match predictions (P, 4) to ground-truth boxes (G, 4).

    Returns (match_indices, match_overlaps), both of length P: the matched
    ground-truth row (-1 none, -2 ignored cross-boundary prediction) and the
    overlap that goes with it (for unmatched predictions, their best overlap).
    Bipartite matching first gives each ground truth its best free prediction,
    greedily by overlap; PER_PREDICTION then matches every other prediction to
    its best ground truth at or above `overlap_threshold`.
    """
    num_pred = len(pred_boxes)
    indices = np.full(num_pred, -1, dtype=np.int64)
    overlaps = np.zeros(num_pred, dtype=pred_boxes.dtype)
    if len(gt_boxes) == 0 or num_pred == 0:
        return indices, overlaps
    ignored = (is_cross_boundary(pred_boxes) if ignore_cross_boundary_bbox
               else np.zeros(num_pred, dtype=bool))
    indices[ignored] = -2
    table = jaccard_overlap(pred_boxes, gt_boxes)
    table[ignored] = 0
    present = table > _MIN_OVERLAP
    overlaps[:] = np.where(present, table, 0).max(axis=1)

    # Bipartite: the best (prediction, ground truth) pair in row-major order, repeatedly.
    work = np.where(present, table, -1).astype(np.float64)
    for _ in range(len(gt_boxes)):
        flat = int(np.argmax(work))
        row, col = divmod(flat, work.shape[1])
        if work[row, col] <= -1:
            break
        indices[row] = col
        overlaps[row] = table[row, col]
        work[row, :] = -1
        work[:, col] = -1

    if match_type == PER_PREDICTION:
        free = (indices == -1) & present.any(axis=1)
        threshold = table.dtype.type(overlap_threshold)
        candidates = np.where(present & (table >= threshold), table, -1)
        best = np.argmax(candidates, axis=1)
        best_overlap = candidates[np.arange(num_pred), best]
        take = free & (best_overlap > -1)
        indices[take] = best[take]
        overlaps[take] = best_overlap[take]
    elif match_type != BIPARTITE:
        raise ValueError(f"unknown match_type {match_type}")
    return indices, overlaps


def _descending(scores, candidates):
    """`candidates` ordered by score, highest first, ties in index order (std::stable_sort)."""
    return candidates[np.argsort(-scores[candidates].astype(np.float64), kind="stable")]


def apply_nms_fast(boxes, scores, score_threshold, nms_threshold, eta=1.0, top_k=-1):
    """SSD's ApplyNMSFast, used by DetectionOutput: boxes scoring above
    `score_threshold`, best first (at most `top_k` of them), each kept unless it
    overlaps a kept box by more than the (adaptive, `eta`) threshold.
    Returns the kept indices in the order kept."""
    order = _descending(scores, np.flatnonzero(scores > score_threshold))
    if top_k > -1:
        order = order[:top_k]
    if len(order) == 0:
        return []
    cand = boxes[order]
    table = jaccard_overlap(cand, cand) if len(order) <= _NMS_MATRIX_LIMIT else None
    threshold = float(nms_threshold)
    if table is not None and not (eta < 1 and threshold > 0.5):
        # Fixed threshold: a box survives unless a kept, better box overlaps it too much.
        over = table > np.float32(threshold)
        suppressed = np.zeros(len(order), dtype=bool)
        kept = []
        for pos in range(len(order)):
            if not suppressed[pos]:
                kept.append(pos)
                suppressed |= over[pos]
        return [int(order[pos]) for pos in kept]
    kept = []  # positions in `order`
    for pos in range(len(order)):
        if kept:
            row = table[pos, kept] if table is not None else jaccard_overlap(cand[pos:pos + 1], cand[kept])[0]
            keep = bool((row <= np.float32(threshold)).all())
        else:
            keep = True
        if keep:
            kept.append(pos)
            if eta < 1 and threshold > 0.5:
                threshold *= eta
    return [int(order[pos]) for pos in kept]


def apply_nms(boxes, scores, threshold, top_k=-1):
    """SSD's ApplyNMS, used by MultiBoxLoss's hard-example mining: best box
    first, boxes of area under 1e-5 dropped, boxes overlapping a kept box by
    more than `threshold` removed; stops after `top_k` kept boxes."""
    order = _descending(scores, np.arange(len(scores)))
    if top_k > -1:
        order = order[:top_k]
    alive = np.ones(len(order), dtype=bool)
    small = bbox_size(boxes[order]) < 1e-5 if len(order) else alive
    kept = []
    for pos in range(len(order)):
        if not alive[pos]:
            continue
        alive[pos] = False
        if small[pos]:
            continue
        kept.append(int(order[pos]))
        if top_k > -1 and len(kept) >= top_k:
            break
        rest = np.flatnonzero(alive)
        if len(rest):
            overlap = jaccard_overlap(boxes[order[pos]][None], boxes[order[rest]])[0]
            alive[rest[small[rest] | (overlap > threshold)]] = False
    return kept
