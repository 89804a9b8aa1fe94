"""SSD's (weiliu89/caffe, branch ssd) MultiBoxLoss: match priors to ground
truth, mine negatives, and sum a localization loss (Smooth L1 or L2) over the
matches and a confidence loss (softmax or logistic) over matches and negatives.

Bottoms: loc (N, P * loc_classes * 4), conf (N, P * num_classes), priors
(1, 2, P * 4) and labels (1, 1, G, 8). Matching and mining run per image on
the host, as in SSD; the confidence loss over all priors runs on the device.
"""

import numpy as np

from ..backend import get_array_module, to_device, to_host
from ..detection import encode_bboxes
from ..detection.bbox import CODE_TYPES
from ..detection.multibox import (HARD_EXAMPLE, L2, NO_MINING, SMOOTH_L1, encode_locations, find_matches,
                                  location_losses, matched_labels, mine_examples, read_ground_truth, smooth_l1)
from .base import register_layer
from .loss import FLT_MIN, LossLayer
from .ssd_detection import legacy_dim, prior_arrays

SOFTMAX, LOGISTIC = 0, 1


def _log_softmax_picked(conf, labels, xp):
    """-log(max(softmax(conf)[label], FLT_MIN)) per row, and the probabilities."""
    shifted = conf - conf.max(axis=-1, keepdims=True)
    prob = xp.exp(shifted)
    prob /= prob.sum(axis=-1, keepdims=True)
    picked = xp.take_along_axis(prob, labels[..., None], axis=-1)[..., 0]
    return -xp.log(xp.maximum(picked, FLT_MIN)), prob


def _logistic_loss(conf, targets, xp):
    """Caffe's stable sigmoid cross-entropy, elementwise."""
    positive = (conf >= 0).astype(conf.dtype)
    return -(conf * (targets - positive) - xp.log1p(xp.exp(conf - 2 * conf * positive)))


@register_layer
class MultiBoxLossLayer(LossLayer):
    """The sum of localization and confidence losses, divided by the normalizer
    (loss_param.normalization; VALID counts the matches).

    Gradients follow SSD: with encode_variance_in_target the localization
    gradient is the one of the variance-scaled prediction, unscaled."""

    type = "MultiBoxLoss"
    exact_num_bottom_blobs = 4
    exact_num_top_blobs = 1

    def allow_force_backward(self, bottom_index):
        return bottom_index < 2

    def setup(self, bottom, top):
        p = self.mp = self.param.multibox_loss_param
        self.check(p.HasField("num_classes"), "Must provide num_classes.")
        self.check(p.num_classes >= 1, "num_classes should not be less than 1.")
        self.num_classes = p.num_classes
        self.loc_classes = 1 if p.share_location else p.num_classes
        self.mining = p.mining_type != NO_MINING
        if p.HasField("do_neg_mining"):
            self.check(p.do_neg_mining == self.mining, "do_neg_mining is deprecated and disagrees with mining_type")
        if self.mining:
            self.check(p.share_location, "Currently only support negative mining if share_location is true.")
        self.check(p.loc_loss_type in (L2, SMOOTH_L1), f"Unknown localization loss type {p.loc_loss_type}.")
        self.check(p.conf_loss_type in (SOFTMAX, LOGISTIC), f"Unknown confidence loss type {p.conf_loss_type}.")
        self.check(p.code_type in CODE_TYPES, f"unknown code_type {p.code_type}")
        if p.conf_loss_type == SOFTMAX:
            self.check(p.background_label_id < p.num_classes,
                       "background_label_id should be within [0, num_classes) for Softmax.")
        if p.map_object_to_agnostic:
            self.check(p.num_classes == 2, "map_object_to_agnostic needs num_classes 2 (background and object)")
        if p.mining_type == HARD_EXAMPLE:
            self.check(p.sample_size > 0, "sample_size must be positive for HARD_EXAMPLE mining")
        self.mode = self.normalization_mode()
        given = list(self.param.propagate_down)
        self.use_terms = (bool(given[0]), bool(given[1])) if len(given) >= 2 else (True, True)

    def reshape(self, bottom, top):
        super().reshape(bottom, top)
        self.num_priors = legacy_dim(bottom[2], 2) // 4
        self.check(self.num_priors * self.loc_classes * 4 == bottom[0].count_range(1),
                   f"Number of priors must match number of location predictions ({self.num_priors} priors, "
                   f"loc {bottom[0].shape})")
        self.check(self.num_priors * self.num_classes == bottom[1].count_range(1),
                   f"Number of priors must match number of confidence predictions ({self.num_priors} priors, "
                   f"{self.num_classes} classes, conf {bottom[1].shape})")
        self.check(bottom[3].count % 8 == 0, f"labels must be rows of 8 values, not {bottom[3].shape}")

    def _host(self, bottom):
        p = self.mp
        num = bottom[0].shape[0]
        loc = to_host(bottom[0].data).reshape(num, self.num_priors, self.loc_classes, 4)
        priors, variances = prior_arrays(self, bottom[2], self.num_priors)
        try:
            truths = read_ground_truth(to_host(bottom[3].data), p.background_label_id, p.use_difficult_gt)
        except ValueError as exc:
            raise self.error(str(exc)) from None
        if not (p.map_object_to_agnostic and not self.mining):  # SSD maps them only outside mining
            for gt in truths.values():
                self.check(((gt.labels >= 0) & (gt.labels < self.num_classes)).all(),
                           f"ground-truth labels must lie in [0, {self.num_classes - 1}]")
        return num, loc, priors, variances, truths

    def _encode(self, matches, truths, loc, priors, variances):
        try:
            return encode_locations(self.mp, matches, truths, loc, priors, variances, encode_bboxes)
        except ValueError as exc:
            raise self.error(str(exc)) from None

    def forward(self, bottom, top):
        p = self.mp
        xp = get_array_module(bottom[1].data)
        num, loc, priors, variances, truths = self._host(bottom)
        try:
            matches = find_matches(p, loc, priors, variances, truths, num)
        except ValueError as exc:
            raise self.error(str(exc)) from None
        conf = bottom[1].data.reshape(num, self.num_priors, self.num_classes)
        negatives = [np.zeros(0, np.int64)] * num
        if self.mining:
            labels = to_device(matched_labels(matches, truths, self.num_priors, p.background_label_id), xp)
            if p.conf_loss_type == SOFTMAX:
                losses = _log_softmax_picked(conf, labels, xp)[0]
            else:
                onehot = (xp.arange(self.num_classes) == labels[..., None]).astype(conf.dtype)
                losses = _logistic_loss(conf, onehot, xp).sum(axis=-1)
            losses = to_host(losses).astype(np.float32)
            if p.mining_type == HARD_EXAMPLE:
                positions, preds, targets = self._encode(matches, truths, loc, priors, variances)
                losses = losses + location_losses(p, positions, preds, targets, num, self.num_priors)
            negatives = mine_examples(p, matches, losses, priors, variances, loc)
        self.positions, preds, targets = self._encode(matches, truths, loc, priors, variances)
        self.num_matches = len(self.positions)
        self.norm = self.normalizer(self.mode, num, self.num_priors, self.num_matches)
        diff = preds - targets
        if p.loc_loss_type == SMOOTH_L1:
            loc_loss = float(smooth_l1(diff).sum())
            self.loc_grad = np.where(np.abs(diff) < 1, diff, np.sign(diff))
        else:
            loc_loss = float((diff * diff).sum()) / 2
            self.loc_grad = diff
        conf_loss = self._conf_forward(conf, matches, negatives, truths, xp)
        total = 0.0
        if self.use_terms[0]:
            total += p.loc_weight * loc_loss / self.norm
        if self.use_terms[1]:
            total += conf_loss / self.norm
        top[0].data[...] = total

    def _conf_rows(self, matches, negatives, truths):
        """(images, priors, labels) of the confidence rows SSD's EncodeConfPrediction builds."""
        p = self.mp
        rows = []
        for image, matches_i in enumerate(matches):
            if image not in truths:
                continue
            for label in sorted(matches_i):
                idx = matches_i[label][0]
                where = np.flatnonzero(idx > -1)
                gt_labels = (np.full(len(where), p.background_label_id + 1) if p.map_object_to_agnostic
                             else truths[image].labels[idx[where]])
                rows.append(np.stack([np.full(len(where), image), where, gt_labels], axis=1))
            if self.mining:
                neg = negatives[image]
                rows.append(np.stack([np.full(len(neg), image), neg, np.full(len(neg), -1)], axis=1))
        return np.concatenate(rows).astype(np.int64) if rows else np.zeros((0, 3), np.int64)

    def _conf_forward(self, conf, matches, negatives, truths, xp):
        p = self.mp
        rows = self._conf_rows(matches, negatives, truths)
        background = p.background_label_id
        if self.mining:
            self.conf_index = (to_device(rows[:, 0], xp), to_device(rows[:, 1], xp))
            pred = conf[self.conf_index]
            positive = rows[:, 2] >= 0
        else:
            self.conf_index = None
            pred = conf.reshape(-1, self.num_classes)
            flat = rows[:, 0] * self.num_priors + rows[:, 1]
        self.num_conf = len(pred)
        if self.num_conf == 0:
            self.conf_grad = None
            return 0.0
        if p.conf_loss_type == SOFTMAX:
            labels = np.full(self.num_conf, background, dtype=np.int64)
            if self.mining:
                labels[positive] = rows[positive, 2]
            else:
                labels[flat] = rows[:, 2]
            labels = to_device(labels, xp)
            losses, prob = _log_softmax_picked(pred, labels, xp)
            self.conf_grad = prob - (xp.arange(self.num_classes) == labels[:, None])
            return float(losses.sum())
        targets = np.full((self.num_conf, self.num_classes), background, dtype=np.float64)
        if self.mining:
            targets[np.flatnonzero(positive), rows[positive, 2]] = 1
            if 0 <= background < self.num_classes:
                targets[np.flatnonzero(~positive), background] = 1
        else:
            targets[flat, rows[:, 2]] = 1
        targets = to_device(targets.astype(pred.dtype), xp)
        self.conf_grad = 1 / (1 + xp.exp(-pred)) - targets
        return float(_logistic_loss(pred, targets, xp).sum())

    def backward(self, top, propagate_down, bottom):
        if propagate_down[2]:
            raise self.error("cannot backpropagate to prior inputs")
        if propagate_down[3]:
            raise self.error("cannot backpropagate to label inputs")
        xp = get_array_module(bottom[0].data)
        scale = float(top[0].diff.reshape(-1)[0]) / self.norm
        if propagate_down[0]:
            diff = np.zeros((bottom[0].shape[0], self.num_priors, self.loc_classes, 4), dtype=bottom[0].dtype)
            if self.num_matches:
                pos = self.positions
                diff[pos[:, 0], pos[:, 1], pos[:, 2]] = self.loc_grad * (self.mp.loc_weight * scale)
            bottom[0].diff[...] = to_device(diff.reshape(bottom[0].shape), xp)
        if propagate_down[1]:
            if self.conf_grad is None:
                bottom[1].diff[...] = 0
            elif self.conf_index is None:
                bottom[1].diff[...] = (self.conf_grad * scale).reshape(bottom[1].shape)
            else:
                diff = xp.zeros((bottom[1].shape[0], self.num_priors, self.num_classes), dtype=bottom[1].dtype)
                diff[self.conf_index] = self.conf_grad * scale
                bottom[1].diff[...] = diff.reshape(bottom[1].shape)
