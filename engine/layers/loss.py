"""Loss layers: a base with Caffe's loss-weight and normalization rules, and the losses."""

import numpy as np

from ..backend import get_array_module
from .base import Layer, register_layer
from .softmax import softmax

FLT_MIN = float(np.finfo(np.float32).tiny)


class LossLayer(Layer):
    """Two bottoms (prediction, target), a scalar top weighted 1 by default."""

    exact_num_bottom_blobs = 2
    exact_num_top_blobs = 1
    auto_top_blobs = True

    def default_loss_weight(self, top_index):
        return 1.0 if top_index == 0 else 0.0

    def allow_force_backward(self, bottom_index):
        return bottom_index != 1

    def reshape(self, bottom, top):
        self.check(bottom[0].shape[:1] == bottom[1].shape[:1],
                   f"The data and label should have the same first dimension "
                   f"({bottom[0].shape} vs {bottom[1].shape})")
        top[0].reshape(())

    def normalizer(self, mode, outer, inner, valid_count):
        """Caffe's LossLayer::GetNormalizer, never below 1."""
        p = self._caffe_pb2.LossParameter
        if mode == p.FULL:
            value = outer * inner
        elif mode == p.VALID:
            value = outer * inner if valid_count < 0 else valid_count
        elif mode == p.BATCH_SIZE:
            value = outer
        else:
            value = 1
        return max(1.0, float(value))

    def normalization_mode(self):
        p = self.param.loss_param
        if p.HasField("normalization"):
            return p.normalization
        if p.HasField("normalize"):
            return p.VALID if p.normalize else p.BATCH_SIZE
        return p.normalization

    def labels_and_mask(self, blob):
        """Class labels shaped (outer, inner), ignored ones mapped to 0, and the mask of valid ones.

        For losses over a class axis; they set `outer`, `inner`, `classes` and `ignore_label`.
        """
        xp = get_array_module(blob.data)
        labels = blob.data.reshape(self.outer, self.inner).astype(np.int64)
        valid = xp.ones(labels.shape, dtype=bool) if self.ignore_label is None else labels != self.ignore_label
        safe = xp.where(valid, labels, 0)
        if int(((safe < 0) | (safe >= self.classes)).sum()):
            raise self.error(f"label values must lie in [0, {self.classes - 1}]")
        return safe, valid

    def refuse_label_gradient(self, propagate_down):
        if len(propagate_down) > 1 and propagate_down[1]:
            raise self.error("cannot backpropagate to label inputs")


@register_layer
class SoftmaxWithLossLayer(LossLayer):
    type = "SoftmaxWithLoss"
    exact_num_top_blobs = None
    min_top_blobs = 1
    max_top_blobs = 2

    def setup(self, bottom, top):
        p = self.param.loss_param
        self.ignore_label = p.ignore_label if p.HasField("ignore_label") else None
        self.mode = self.normalization_mode()
        # SegNet's class weighting: each position's loss and gradient times its class's weight.
        self.class_weights = np.asarray(p.class_weighting, dtype=np.float64) if p.weight_by_label_freqs else None

    def reshape(self, bottom, top):
        super().reshape(bottom, top)
        self.axis = bottom[0].canonical_axis(self.param.softmax_param.axis)
        self.outer = bottom[0].count_range(0, self.axis)
        self.inner = bottom[0].count_range(self.axis + 1)
        self.classes = bottom[0].shape[self.axis]
        self.check(self.outer * self.inner == bottom[1].count,
                   f"Number of labels must match number of predictions; e.g., if softmax axis == 1 and "
                   f"prediction shape is (N, C, H, W), label count (number of labels) must be N*H*W, with "
                   f"integer values in {{0, 1, ..., C-1}}. Prediction shape {bottom[0].shape}, "
                   f"label count {bottom[1].count}")
        if self.class_weights is not None:
            self.check(len(self.class_weights) == self.classes,
                       f"Number of class weight values does not match the number of classes: "
                       f"loss_param has {len(self.class_weights)} class_weighting values, "
                       f"the predictions {self.classes} classes")
        if len(top) > 1:
            top[1].reshape(bottom[0].shape)

    def _position_weights(self, labels, valid, xp):
        """Each position's weight: 1 if valid (0 if ignored), times its class weight under SegNet's weighting."""
        if self.class_weights is None:
            return valid
        weights = xp.asarray(self.class_weights, dtype=self.prob.dtype)[labels]
        return weights * valid

    def forward(self, bottom, top):
        xp = get_array_module(bottom[0].data)
        self.prob = softmax(bottom[0].data, self.axis)
        prob = self.prob.reshape(self.outer, self.classes, self.inner)
        labels, valid = self._labels = self.labels_and_mask(bottom[1])
        picked = xp.take_along_axis(prob, labels[:, None, :], axis=1)[:, 0, :]
        losses = -xp.log(xp.maximum(picked, FLT_MIN)) * self._position_weights(labels, valid, xp)
        self.valid_count = int(valid.sum())  # unweighted, as SegNet's count
        self.norm = self.normalizer(self.mode, self.outer, self.inner, self.valid_count)
        top[0].data[...] = losses.sum() / self.norm
        if len(top) > 1:
            top[1].data[...] = self.prob

    def backward(self, top, propagate_down, bottom):
        self.refuse_label_gradient(propagate_down)
        if not propagate_down[0]:
            return
        xp = get_array_module(bottom[0].data)
        labels, valid = self._labels  # the forward's: a net never changes a bottom in between
        grad = self.prob.reshape(self.outer, self.classes, self.inner).copy()
        onehot = xp.arange(self.classes)[None, :, None] == labels[:, None, :]
        grad -= onehot
        grad *= self._position_weights(labels, valid, xp)[:, None, :]
        scale = float(top[0].diff.reshape(-1)[0]) / self.norm
        bottom[0].diff[...] = (grad * scale).reshape(bottom[0].shape)
