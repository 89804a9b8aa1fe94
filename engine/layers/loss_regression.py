"""Losses on raw values: EuclideanLoss, HingeLoss and ContrastiveLoss.

Each divides by the batch size (bottom[0]'s first axis), as Caffe does, and
scales its gradient by the loss weight that the net leaves in the top's diff.
"""

import numpy as np

from ..backend import get_array_module
from .base import register_layer
from .loss import LossLayer


def batch_size(blob):
    """Caffe's num(): the first axis, 1 for a scalar blob."""
    return blob.shape[0] if blob.num_axes else 1


def loss_weight(top):
    """The weight backward scales by: whatever the (scalar) top diff holds."""
    return float(top[0].diff.reshape(-1)[0])


def class_labels(layer, blob, classes):
    """bottom[1] as integer class indices, checked to lie in [0, classes)."""
    labels = blob.data.reshape(-1).astype(np.int64)
    if labels.size and int(((labels < 0) | (labels >= classes)).sum()):
        raise layer.error(f"label values must lie in [0, {classes - 1}]")
    return labels


@register_layer
class EuclideanLossLayer(LossLayer):
    """sum((a - b)^2) / (2 N); both bottoms may take a gradient."""

    type = "EuclideanLoss"

    def allow_force_backward(self, bottom_index):
        return True

    def reshape(self, bottom, top):
        super().reshape(bottom, top)
        self.check(bottom[0].count_range(1) == bottom[1].count_range(1),
                   f"Inputs must have the same dimension ({bottom[0].shape} vs {bottom[1].shape})")

    def forward(self, bottom, top):
        xp = get_array_module(bottom[0].data)
        self.difference = bottom[0].data - bottom[1].data.reshape(bottom[0].shape)
        flat = self.difference.reshape(-1)
        top[0].data[...] = xp.dot(flat, flat) / batch_size(bottom[0]) / 2

    def backward(self, top, propagate_down, bottom):
        for i, sign in ((0, 1.0), (1, -1.0)):
            if propagate_down[i]:
                alpha = sign * loss_weight(top) / batch_size(bottom[i])
                bottom[i].diff[...] = (alpha * self.difference).reshape(bottom[i].shape)


@register_layer
class HingeLossLayer(LossLayer):
    """One-vs-all hinge: sum_k max(0, 1 - y_k x_k) / N, y_k = +1 for the label, -1 else.

    `norm: L2` squares each margin before summing.
    """

    type = "HingeLoss"

    def setup(self, bottom, top):
        self.squared = self.param.hinge_loss_param.norm == self._caffe_pb2.HingeLossParameter.L2

    def _signed(self, bottom, values):
        """`values` viewed (num, dim) with the label column negated (a copy)."""
        xp = get_array_module(values)
        num = batch_size(bottom[0])
        dim = bottom[0].count // num
        out = values.reshape(num, dim).copy()
        self.check(bottom[1].count == num,
                   f"HingeLoss takes one label per item: {bottom[1].count} labels for {num} items")
        rows = xp.arange(num)
        labels = class_labels(self, bottom[1], dim)
        out[rows, labels] *= -1
        return out

    def forward(self, bottom, top):
        xp = get_array_module(bottom[0].data)
        self.margins = xp.maximum(0, 1 + self._signed(bottom, bottom[0].data))
        total = (self.margins * self.margins).sum() if self.squared else self.margins.sum()
        top[0].data[...] = total / batch_size(bottom[0])

    def backward(self, top, propagate_down, bottom):
        self.refuse_label_gradient(propagate_down)
        if not propagate_down[0]:
            return
        xp = get_array_module(bottom[0].data)
        grad = self._signed(bottom, self.margins)
        scale = loss_weight(top) / batch_size(bottom[0])
        grad = grad * (2 * scale) if self.squared else xp.sign(grad) * scale
        bottom[0].diff[...] = grad.reshape(bottom[0].shape)


@register_layer
class ContrastiveLossLayer(LossLayer):
    """Siamese loss over pairs (a_n, b_n) with similarity flags s_n (bottom 2).

    Similar pairs pay d^2, dissimilar ones max(margin - d, 0)^2, or with
    `legacy_version` max(margin - d^2, 0); the sum is divided by 2 N.
    """

    type = "ContrastiveLoss"
    exact_num_bottom_blobs = 3

    def allow_force_backward(self, bottom_index):
        return bottom_index != 2

    def setup(self, bottom, top):
        p = self.param.contrastive_loss_param
        self.margin = p.margin
        self.legacy = p.legacy_version

    def reshape(self, bottom, top):
        super().reshape(bottom, top)
        a, b, s = bottom
        self.check(all(blob.num_axes <= 4 for blob in bottom), "ContrastiveLoss takes blobs of at most 4 axes")
        self.check(a.channels == b.channels and a.height == b.height == 1 and a.width == b.width == 1,
                   f"the two feature bottoms must be (N, C, 1, 1) with equal C; got {a.shape} and {b.shape}")
        self.check(s.channels == s.height == s.width == 1 and s.num == a.num,
                   f"the similarity bottom must hold one value per pair; got {s.shape} for {a.num} pairs")

    def forward(self, bottom, top):
        xp = get_array_module(bottom[0].data)
        num = batch_size(bottom[0])
        self.difference = (bottom[0].data - bottom[1].data.reshape(bottom[0].shape)).reshape(num, -1)
        self.dist_sq = (self.difference * self.difference).sum(axis=1)
        self.similar = bottom[2].data.reshape(-1).astype(np.int64) != 0
        if self.legacy:
            dissimilar = xp.maximum(self.margin - self.dist_sq, 0)
        else:
            dissimilar = xp.maximum(self.margin - xp.sqrt(self.dist_sq), 0) ** 2
        losses = xp.where(self.similar, self.dist_sq, dissimilar)
        top[0].data[...] = losses.sum() / num / 2

    def backward(self, top, propagate_down, bottom):
        if len(propagate_down) > 2 and propagate_down[2]:
            raise self.error("cannot backpropagate to the similarity input")
        xp = get_array_module(bottom[0].data)
        for i, sign in ((0, 1.0), (1, -1.0)):
            if not propagate_down[i]:
                continue
            alpha = sign * loss_weight(top) / batch_size(bottom[i])
            if self.legacy:
                short = self.margin - self.dist_sq
                beta = xp.full_like(self.dist_sq, -alpha)
            else:
                dist = xp.sqrt(self.dist_sq)
                short = self.margin - dist
                beta = -alpha * short / (dist + self.dist_sq.dtype.type(1e-4))
            coeff = xp.where(self.similar, alpha, xp.where(short > 0, beta, 0))
            grad = coeff[:, None] * self.difference
            bottom[i].diff[...] = grad.reshape(bottom[i].shape)
