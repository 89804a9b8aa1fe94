"""MultiBox training targets, as SSD's bbox_util builds them for MultiBoxLoss:
ground truth from the label blob, matching of priors (or decoded predictions)
to it per image, and the choice of negatives (hard-example mining).

Host (NumPy) code: per image, one vectorised step per ground-truth box at most.
"""

import numpy as np

from .bbox import decode_bboxes
from .matching import apply_nms, match_bboxes

# MultiBoxLossParameter.MiningType, LocLossType
NO_MINING, MAX_NEGATIVE, HARD_EXAMPLE = 0, 1, 2
L2, SMOOTH_L1 = 0, 1


class GroundTruth:
    """One image's ground-truth boxes (G, 4), labels (G,) and difficult flags (G,)."""

    def __init__(self, boxes, labels, difficult):
        self.boxes, self.labels, self.difficult = boxes, labels, difficult


def read_ground_truth(rows, background_label_id, use_difficult_gt):
    """SSD's GetGroundTruth over label rows [item, label, instance, xmin, ymin,
    xmax, ymax, difficult]: {image: GroundTruth}; rows of item -1 are skipped.
    Raises ValueError on a background label."""
    rows = np.asarray(rows).reshape(-1, 8)
    rows = rows[rows[:, 0].astype(np.int64) != -1]
    labels = rows[:, 1].astype(np.int64)
    if (labels == background_label_id).any():
        raise ValueError("Found background label in the dataset.")
    difficult = rows[:, 7] != 0
    if not use_difficult_gt:
        rows, labels, difficult = rows[~difficult], labels[~difficult], difficult[~difficult]
    items = rows[:, 0].astype(np.int64)
    return {int(item): GroundTruth(rows[items == item, 3:7], labels[items == item], difficult[items == item])
            for item in np.unique(items)}


def find_matches(p, loc, priors, variances, truths, num):
    """SSD's FindMatches: per image, {loc label: (match indices, match overlaps)}
    over the priors; loc label -1 when locations are shared. Images without
    ground truth get an empty dict."""
    loc_classes = 1 if p.share_location else p.num_classes
    all_matches = []
    for image in range(num):
        matches = {}
        gt = truths.get(image)
        if gt is None:
            all_matches.append(matches)
            continue
        if not p.use_prior_for_matching:
            for c in range(loc_classes):
                label = -1 if p.share_location else c
                if not p.share_location and label == p.background_label_id:
                    continue
                boxes = decode_bboxes(priors, variances, p.code_type, p.encode_variance_in_target, loc[image, :, c])
                chosen = np.arange(len(gt.labels)) if label == -1 else np.flatnonzero(gt.labels == label)
                idx, ov = match_bboxes(gt.boxes[chosen], boxes, p.match_type, p.overlap_threshold,
                                       p.ignore_cross_boundary_bbox)
                matches[label] = (np.where(idx >= 0, chosen[np.maximum(idx, 0)] if len(chosen) else idx, idx), ov)
        else:
            idx, ov = match_bboxes(gt.boxes, priors, p.match_type, p.overlap_threshold, p.ignore_cross_boundary_bbox)
            if p.share_location:
                matches[-1] = (idx, ov)
            else:
                matched_labels = np.where(idx > -1, gt.labels[np.maximum(idx, 0)], -1)
                for c in range(loc_classes):
                    if c == p.background_label_id:
                        continue
                    matches[c] = (np.where((idx > -1) & (matched_labels == c), idx, -1), ov)
        all_matches.append(matches)
    return all_matches


def matched_labels(all_matches, truths, num_priors, background_label_id):
    """(N, P) class per prior for the confidence loss: the matched ground
    truth's label (first loc label in order that has a match), else background."""
    labels = np.full((len(all_matches), num_priors), background_label_id, dtype=np.int64)
    for image, matches in enumerate(all_matches):
        done = np.zeros(num_priors, dtype=bool)
        for label in sorted(matches):
            idx = matches[label][0]
            take = (idx > -1) & ~done
            labels[image, take] = truths[image].labels[idx[take]]
            done |= take
    return labels


def mine_examples(p, all_matches, losses, priors, variances, loc):
    """SSD's MineHardExamples (in place on the match indices): returns the
    negative prior indices per image. `losses` (N, P) is the confidence loss
    (plus the localization loss for HARD_EXAMPLE) per prior."""
    negatives = []
    for image, matches in enumerate(all_matches):
        chosen = []
        for label in sorted(matches):
            idx, ov = matches[label]
            loss = losses[image]
            if p.mining_type == MAX_NEGATIVE:
                eligible = np.flatnonzero((idx == -1) & (ov < np.float32(p.neg_overlap)))
                num_pos = int((idx > -1).sum())
                num_sel = min(int(np.float32(num_pos) * np.float32(p.neg_pos_ratio)), len(eligible))
            else:
                eligible = np.arange(len(idx))
                num_sel = min(p.sample_size, len(eligible))
            if p.HasField("nms_param") and p.nms_param.nms_threshold > 0:
                if p.use_prior_for_nms:
                    boxes = priors
                else:
                    boxes = decode_bboxes(priors, variances, p.code_type, p.encode_variance_in_target,
                                          loc[image, :, 0])
                kept = apply_nms(boxes[eligible], loss[eligible], p.nms_param.nms_threshold, p.nms_param.top_k)
                selected = eligible[np.array(kept[:num_sel], dtype=np.int64)]
            else:
                order = np.argsort(-loss[eligible].astype(np.float64), kind="stable")
                selected = eligible[order[:num_sel]]
            picked = np.zeros(len(idx), dtype=bool)
            picked[selected] = True
            if p.mining_type == HARD_EXAMPLE:
                idx[(idx > -1) & ~picked] = -1
            chosen.append(np.flatnonzero((idx == -1) & picked))
        negatives.append(np.concatenate(chosen) if chosen else np.zeros(0, dtype=np.int64))
    return negatives


def smooth_l1(diff):
    absolute = np.abs(diff)
    return np.where(absolute < 1, 0.5 * diff * diff, absolute - 0.5)


def encode_locations(p, all_matches, truths, loc, priors, variances, encode):
    """SSD's EncodeLocPrediction: (positions, predictions, targets) of every
    match, in SSD's order (image, loc label, prior). `positions` are
    (image, prior, loc slot) index rows; `encode` is encode_bboxes."""
    positions, gt_boxes = [], []
    for image, matches in enumerate(all_matches):
        for label in sorted(matches):
            idx = matches[label][0]
            where = np.flatnonzero(idx > -1)
            slot = 0 if p.share_location else label
            positions.append(np.stack([np.full(len(where), image), where, np.full(len(where), slot)], axis=1))
            gt_boxes.append(truths[image].boxes[idx[where]] if len(where) else np.zeros((0, 4)))
    if not positions:
        return np.zeros((0, 3), np.int64), np.zeros((0, 4), loc.dtype), np.zeros((0, 4), loc.dtype)
    positions = np.concatenate(positions).astype(np.int64)
    gt_boxes = np.concatenate(gt_boxes).astype(loc.dtype)
    prior_rows = priors[positions[:, 1]]
    var_rows = variances[positions[:, 1]]
    targets = encode(prior_rows, var_rows, p.code_type, p.encode_variance_in_target, gt_boxes)
    preds = loc[positions[:, 0], positions[:, 1], positions[:, 2]].copy()
    if p.bp_inside:
        match_boxes = prior_rows
        if not p.use_prior_for_matching:
            match_boxes = decode_bboxes(prior_rows, var_rows, p.code_type, p.encode_variance_in_target, preds)
        outside = (match_boxes < 0) | (match_boxes > 1)
        preds = np.where(outside, targets, preds)
    if p.encode_variance_in_target:
        preds, targets = preds / var_rows, targets / var_rows
    return positions, preds.astype(loc.dtype), targets.astype(loc.dtype)


def location_losses(p, positions, preds, targets, num, num_priors):
    """(N, P) per-prior localization loss (ComputeLocLoss), for HARD_EXAMPLE mining."""
    losses = np.zeros((num, num_priors), dtype=np.float32)
    diff = preds - targets
    per_box = (smooth_l1(diff) if p.loc_loss_type == SMOOTH_L1 else 0.5 * diff * diff).sum(axis=1)
    losses[positions[:, 0], positions[:, 1]] = per_box
    return losses


__all__ = ["GroundTruth", "read_ground_truth", "find_matches", "matched_labels", "mine_examples",
           "encode_locations", "location_losses"]
