"""Accuracy: top-k classification accuracy, optionally per class."""

import numpy as np

from ..backend import get_array_module
from .base import Layer, register_layer


@register_layer
class AccuracyLayer(Layer):
    type = "Accuracy"
    exact_num_bottom_blobs = 2
    min_top_blobs = 1
    max_top_blobs = 2

    def setup(self, bottom, top):
        p = self.param.accuracy_param
        self.top_k = p.top_k
        self.ignore_label = p.ignore_label if p.HasField("ignore_label") else None

    def reshape(self, bottom, top):
        p = self.param.accuracy_param
        self.axis = bottom[0].canonical_axis(p.axis)
        self.outer = bottom[0].count_range(0, self.axis)
        self.inner = bottom[0].count_range(self.axis + 1)
        self.classes = bottom[0].shape[self.axis]
        self.check(self.top_k <= bottom[0].count // bottom[1].count,
                   "top_k must be less than or equal to the number of classes")
        self.check(self.outer * self.inner == bottom[1].count,
                   f"Number of labels must match number of predictions; prediction shape "
                   f"{bottom[0].shape} needs {self.outer * self.inner} labels, got {bottom[1].count}")
        top[0].reshape(())
        if len(top) > 1:
            top[1].reshape((self.classes,))

    def forward(self, bottom, top):
        xp = get_array_module(bottom[0].data)
        scores = bottom[0].data.reshape(self.outer, self.classes, self.inner)
        labels = bottom[1].data.reshape(self.outer, self.inner).astype(np.int64)
        valid = xp.ones(labels.shape, dtype=bool)
        if self.ignore_label is not None:
            valid = labels != self.ignore_label
        safe = xp.where(valid, labels, 0)
        if int(((safe < 0) | (safe >= self.classes)).sum()):
            raise self.error(f"label out of range [0, {self.classes})")
        true_score = xp.take_along_axis(scores, safe[:, None, :], axis=1)
        # Caffe counts the classes scoring at least the true class's score (the true class included).
        better = (scores >= true_score).sum(axis=1) - 1
        hit = (better < self.top_k) & valid
        count = int(valid.sum())
        top[0].data[...] = float(hit.sum()) / count if count else 0.0
        if len(top) > 1:
            totals = xp.bincount(safe[valid], minlength=self.classes)
            per_class = xp.bincount(safe[hit], minlength=self.classes)
            top[1].data[...] = xp.where(totals > 0, per_class / xp.maximum(totals, 1), 0)

    def allow_force_backward(self, bottom_index):
        return False
