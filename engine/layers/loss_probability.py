"""Losses on probabilities: SigmoidCrossEntropyLoss, MultinomialLogisticLoss, InfogainLoss.

Probabilities are clamped at 1e-20 before the logarithm (Caffe's
kLOG_THRESHOLD); labels equal to `loss_param.ignore_label` contribute nothing
where the layer supports it.
"""

import numpy as np

from .. import formats
from ..backend import get_array_module
from .base import register_layer
from .loss import LossLayer
from .loss_regression import batch_size, class_labels, loss_weight
from .softmax import softmax

LOG_THRESHOLD = 1e-20


@register_layer
class SigmoidCrossEntropyLossLayer(LossLayer):
    """Cross-entropy of sigmoid(bottom[0]) against targets in [0, 1] (bottom[1]).

    The default normalization is BATCH_SIZE (Caffe's choice for this layer,
    unlike SoftmaxWithLoss); VALID counts the targets not equal to ignore_label.
    """

    type = "SigmoidCrossEntropyLoss"

    def setup(self, bottom, top):
        p = self.param.loss_param
        self.ignore_label = p.ignore_label if p.HasField("ignore_label") else None
        if p.HasField("normalization"):
            self.mode = p.normalization
        elif p.HasField("normalize"):
            self.mode = p.VALID if p.normalize else p.BATCH_SIZE
        else:
            self.mode = p.BATCH_SIZE

    def reshape(self, bottom, top):
        super().reshape(bottom, top)
        self.check(bottom[0].count == bottom[1].count,
                   "SIGMOID_CROSS_ENTROPY_LOSS layer inputs must have the same count "
                   f"({bottom[0].shape} vs {bottom[1].shape})")
        self.outer = batch_size(bottom[0])
        self.inner = bottom[0].count_range(1)

    def _valid(self, target):
        xp = get_array_module(target)
        if self.ignore_label is None:
            return xp.ones(target.shape, dtype=bool)
        return target.astype(np.int64) != self.ignore_label

    def forward(self, bottom, top):
        xp = get_array_module(bottom[0].data)
        x = bottom[0].data.reshape(-1)
        target = bottom[1].data.reshape(-1)
        valid = self._valid(target)
        # Stable form of -[t log s(x) + (1 - t) log(1 - s(x))].
        positive = (x >= 0).astype(x.dtype)
        losses = -(x * (target - positive) - xp.log1p(xp.exp(-xp.abs(x))))
        self.valid_count = int(valid.sum())
        self.norm = self.normalizer(self.mode, self.outer, self.inner, self.valid_count)
        top[0].data[...] = (losses * valid).sum() / self.norm
        self.sigmoid = 0.5 * xp.tanh(0.5 * x) + 0.5

    def backward(self, top, propagate_down, bottom):
        self.refuse_label_gradient(propagate_down)
        if not propagate_down[0]:
            return
        target = bottom[1].data.reshape(-1)
        grad = (self.sigmoid - target) * self._valid(target)
        bottom[0].diff[...] = (grad * (loss_weight(top) / self.norm)).reshape(bottom[0].shape)


@register_layer
class MultinomialLogisticLossLayer(LossLayer):
    """-log p[label] averaged over the batch; bottom[0] already holds probabilities."""

    type = "MultinomialLogisticLoss"

    def reshape(self, bottom, top):
        super().reshape(bottom, top)
        label = bottom[1]
        self.check(label.num_axes <= 4 and label.channels == label.height == label.width == 1,
                   f"the label must hold one value per item (N, 1, 1, 1); got {label.shape}")
        self.num = batch_size(bottom[0])
        self.dim = bottom[0].count // self.num

    def _picked(self, bottom):
        xp = get_array_module(bottom[0].data)
        labels = class_labels(self, bottom[1], self.dim)
        probs = bottom[0].data.reshape(self.num, self.dim)
        rows = xp.arange(self.num)
        return rows, labels, xp.maximum(probs[rows, labels], probs.dtype.type(LOG_THRESHOLD))

    def forward(self, bottom, top):
        xp = get_array_module(bottom[0].data)
        _, _, picked = self._picked(bottom)
        top[0].data[...] = -xp.log(picked).sum() / self.num

    def backward(self, top, propagate_down, bottom):
        self.refuse_label_gradient(propagate_down)
        if not propagate_down[0]:
            return
        rows, labels, picked = self._picked(bottom)
        grad = bottom[0].diff.reshape(self.num, self.dim)
        grad[...] = 0
        grad[rows, labels] = -loss_weight(top) / self.num / picked


@register_layer
class InfogainLossLayer(LossLayer):
    """-sum_l H[label, l] log softmax(x)_l, H a K x K matrix (bottom[2] or a file).

    Softmax is taken over `infogain_loss_param.axis`; a second top, when
    given, receives the probabilities.
    """

    type = "InfogainLoss"
    exact_num_bottom_blobs = None
    min_bottom_blobs = 2
    max_bottom_blobs = 3
    exact_num_top_blobs = None
    min_top_blobs = 1
    max_top_blobs = 2

    def allow_force_backward(self, bottom_index):
        return bottom_index == 0

    def setup(self, bottom, top):
        p = self.param.loss_param
        self.check(not p.HasField("normalize"), 'normalize is deprecated. use "normalization"')
        self.mode = p.normalization
        self.ignore_label = p.ignore_label if p.HasField("ignore_label") else None
        self.matrix = None
        if len(bottom) < 3:
            source = self.param.infogain_loss_param.source
            self.check(bool(source), "Infogain matrix source must be specified.")
            proto = formats.read_binary(source, self._caffe_pb2.BlobProto)
            xp = get_array_module(bottom[0].data)
            self.matrix = xp.asarray(formats.blobproto_to_array(proto), dtype=bottom[0].dtype)

    def reshape(self, bottom, top):
        super().reshape(bottom, top)
        try:
            self.axis = bottom[0].canonical_axis(self.param.infogain_loss_param.axis)
        except IndexError as exc:
            raise self.error(str(exc)) from None
        self.outer = bottom[0].count_range(0, self.axis)
        self.inner = bottom[0].count_range(self.axis + 1)
        self.classes = bottom[0].shape[self.axis]
        self.check(self.outer * self.inner == bottom[1].count,
                   "Number of labels must match number of predictions; e.g., if infogain axis == 1 and "
                   "prediction shape is (N, C, H, W), label count (number of labels) must be N*H*W, with "
                   f"integer values in {{0, 1, ..., C-1}}. Prediction shape {bottom[0].shape}, "
                   f"label count {bottom[1].count}")
        size = self.matrix.size if self.matrix is not None else bottom[2].count
        self.check(size == self.classes * self.classes,
                   f"H must be {self.classes}x{self.classes} (it holds {size} values)")
        if len(top) > 1:
            top[1].reshape(bottom[0].shape)

    def _matrix(self, bottom):
        source = self.matrix if self.matrix is not None else bottom[2].data
        return source.reshape(self.classes, self.classes)

    def forward(self, bottom, top):
        xp = get_array_module(bottom[0].data)
        self.prob = softmax(bottom[0].data, self.axis).reshape(self.outer, self.classes, self.inner)
        labels, valid = self.labels_and_mask(bottom[1])
        rows = self._matrix(bottom)[labels]  # (outer, inner, K): H[label, :]
        logs = xp.log(xp.maximum(self.prob, self.prob.dtype.type(LOG_THRESHOLD))).transpose(0, 2, 1)
        total = -(rows * logs * valid[:, :, None]).sum()
        top[0].data[...] = total / self.normalizer(self.mode, self.outer, self.inner, int(valid.sum()))
        if len(top) > 1:
            top[1].data[...] = self.prob.reshape(top[1].shape)

    def backward(self, top, propagate_down, bottom):
        self.refuse_label_gradient(propagate_down)
        if len(propagate_down) > 2 and propagate_down[2]:
            raise self.error("cannot backpropagate to infogain inputs")
        if not propagate_down[0]:
            return
        matrix = self._matrix(bottom)
        labels, valid = self.labels_and_mask(bottom[1])
        row_sums = matrix.sum(axis=1)[labels]  # (outer, inner)
        grad = self.prob * row_sums[:, None, :] - matrix[labels].transpose(0, 2, 1)
        grad *= valid[:, None, :]
        scale = loss_weight(top) / self.normalizer(self.mode, self.outer, self.inner, int(valid.sum()))
        bottom[0].diff[...] = (grad * scale).reshape(bottom[0].shape)
