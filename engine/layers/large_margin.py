"""L-Softmax's LargeMarginInnerProduct (wy1iu/LargeMargin_Softmax_Loss), and the
margin arithmetic it shares with SphereFace's MarginInnerProduct.

Bottoms: features x (rows from `axis` on) and integer labels; tops: the
scores and, optionally, the current lambda. Weights W are (num_output x K),
no bias. For row i with label y, cos = x.w_y / (|x||w_y|), and the label's
score |x||w_y| cos(theta) becomes |x||w_y| psi(theta) with psi(theta) =
(-1)^k cos(m theta) - 2k on [k pi / m, (k + 1) pi / m] for the margin
m = type + 1 (SINGLE, DOUBLE, TRIPLE, QUADRUPLE), written as the fork writes
it, a polynomial in cos with sign terms. Other scores stay x.w. With
lambda = max(base * (1 + gamma * iter)^-power, lambda_min), the label's
score is (|x||w_y| psi + lambda x.w_y) / (1 + lambda).

`iter` is the layer's own counter, as in the fork: it starts at `iteration`
and grows by one at every forward (TRAIN and TEST nets count separately, and
a resumed run starts again from `iteration`, which is what that field is for).
The fork adds 1e-9 to |x||w| before dividing; so does this.
"""

import numpy as np

from ..backend import get_array_module
from ..cpu import products
from ..fillers import fill
from .base import Layer, register_layer


def margin_terms(margin, cos):
    """psi(cos), A = d psi / d cos and B = A cos - psi, elementwise, for margin m = margin + 1.

    The fork's sign terms: s0 = sign(cos); s1 = sign(|cos| - 1/2), s2 = s0 (1 + s1) - 2
    (TRIPLE); s3 = s0 sign(2 cos^2 - 1), s4 = 2 s0 + s3 - 3 (QUADRUPLE).
    """
    xp = get_array_module(cos)
    s0 = xp.sign(cos)
    c2 = cos * cos
    if margin == 1:
        psi = 2 * s0 * c2 - 1
        return psi, 4 * s0 * cos, 2 * s0 * c2 + 1
    if margin == 2:
        s1 = xp.sign(xp.abs(cos) - 0.5)
        s2 = s0 * (1 + s1) - 2
        psi = s1 * (4 * c2 * cos - 3 * cos) + s2
        return psi, s1 * (12 * c2 - 3), 8 * s1 * c2 * cos - s2
    if margin == 3:
        s3 = s0 * xp.sign(2 * c2 - 1)
        s4 = 2 * s0 + s3 - 3
        psi = s3 * (8 * c2 * c2 - 8 * c2 + 1) + s4
        return psi, s3 * (32 * c2 * cos - 16 * cos), s3 * (24 * c2 * c2 - 8 * c2 - 1) - s4
    raise ValueError(f"unknown margin type {margin}")


class MarginInnerProductBase(Layer):
    """Shared set-up, lambda schedule and label handling; subclasses name their parameter."""

    exact_num_bottom_blobs = 2
    min_top_blobs = 1
    max_top_blobs = 2
    param_field = None

    def allow_force_backward(self, bottom_index):
        return bottom_index == 0

    def settings(self):
        return getattr(self.param, self.param_field)

    def setup(self, bottom, top):
        p = self.settings()
        self.check(p.num_output > 0, f"{self.param_field}.num_output is required")
        self.check(bottom[0].shape[:1] == bottom[1].shape[:1],
                   f"Number of labels must match number of outputs: bottom[0] {bottom[0].shape}, "
                   f"labels {bottom[1].shape}")
        self.margin = int(p.type)
        self.num_output = int(p.num_output)
        self.iteration = int(p.iteration)
        self.lambda_ = 0.0
        self.axis = bottom[0].canonical_axis(p.axis)
        self.k = bottom[0].count_range(self.axis)
        if len(self.blobs):
            return
        self.blobs.add_blob(self.num_output, self.k)
        fill(self.blobs[0].data, p.weight_filler)

    def reshape(self, bottom, top):
        axis = bottom[0].canonical_axis(self.settings().axis)
        k = bottom[0].count_range(axis)
        self.check(k == self.k, f"Input size incompatible with inner product parameters: "
                                f"bottom {bottom[0].shape} gives {k} inputs per row, weights expect {self.k}")
        self.m = bottom[0].count_range(0, axis)
        self.check(bottom[1].data.size == self.m,
                   f"needs one label per row: {self.m} rows, label blob {bottom[1].shape}")
        top[0].reshape(bottom[0].shape[:axis] + (self.num_output,))
        if len(top) > 1:
            top[1].reshape((1,))

    def step_lambda(self, top):
        """The fork's schedule, advanced once per forward."""
        p = self.settings()
        self.iteration += 1
        value = p.base * (1.0 + p.gamma * self.iteration) ** (-p.power)
        self.lambda_ = max(value, p.lambda_min)
        if len(top) > 1:
            top[1].data[...] = self.lambda_

    def labels(self, bottom):
        xp = get_array_module(bottom[1].data)
        labels = bottom[1].data.reshape(self.m).astype(np.int64)  # the fork's static_cast<int>
        if self.m and int(((labels < 0) | (labels >= self.num_output)).sum()):
            raise self.error(f"label values must lie in [0, {self.num_output - 1}]")
        return labels, xp.arange(self.m)

    def blend(self, scores, rows, labels, label_scores):
        """Label entries become (label_score + lambda * score) / (1 + lambda)."""
        lam = self.lambda_
        scores[rows, labels] = (label_scores + lam * scores[rows, labels]) / (1 + lam)

    def label_weighted(self, top_diff, rows, labels):
        """top_diff with each label entry scaled by lambda / (1 + lambda), and those entries."""
        picked = top_diff[rows, labels]
        scaled = top_diff.copy()
        scaled[rows, labels] = picked * (self.lambda_ / (1 + self.lambda_))
        return scaled, picked


@register_layer
class LargeMarginInnerProductLayer(MarginInnerProductBase):
    type = "LargeMarginInnerProduct"
    param_field = "largemargin_inner_product_param"

    def forward(self, bottom, top):
        self.step_lambda(top)
        x = bottom[0].data.reshape(self.m, self.k)
        w = self.blobs[0].data
        xp = get_array_module(x)
        labels, rows = self.labels(bottom)
        self.x_norm = xp.sqrt((x * x).sum(axis=1))
        self.w_norm = xp.sqrt((w * w).sum(axis=1))
        scores = top[0].data.reshape(self.m, self.num_output)
        products.for_module(xp)(x, w.T, out=scores)
        if self.margin == 0:
            return
        norms = self.x_norm * self.w_norm[labels] + 1e-9
        self.cos = scores[rows, labels] / norms
        psi, self.slope, self.rest = margin_terms(self.margin, self.cos)
        self.blend(scores, rows, labels, norms * psi)

    def backward(self, top, propagate_down, bottom):
        dy = top[0].diff.reshape(self.m, self.num_output)
        x = bottom[0].data.reshape(self.m, self.k)
        w = self.blobs[0].data
        xp = get_array_module(x)
        if self.margin == 0:
            if self.param_propagate_down[0]:
                self.blobs[0].diff[...] += products.for_module(xp)(dy.T, x)
            if propagate_down[0]:
                products.for_module(xp)(dy, w, out=bottom[0].diff.reshape(self.m, self.k))
            return
        labels, rows = self.labels(bottom)
        scaled, picked = self.label_weighted(dy, rows, labels)
        share = picked / (1 + self.lambda_)
        ratio = self.x_norm / (self.w_norm[labels] + 1e-9)  # |x| / |w_y|
        if self.param_propagate_down[0]:
            # d/dw_y of |x||w_y| psi = A x + (psi - A cos) |x| / |w_y| w_y = A x - B ratio w_y.
            coeff = scaled.copy()
            coeff[rows, labels] += share * self.slope
            self.blobs[0].diff[...] += products.for_module(xp)(coeff.T, x)
            pull = xp.zeros(self.num_output, dtype=w.dtype)
            if self.m:
                pull = xp.bincount(labels, weights=-share * ratio * self.rest, minlength=self.num_output)
            self.blobs[0].diff[...] += pull[:, None].astype(w.dtype) * w
        if propagate_down[0]:
            # d/dx of |x||w_y| psi = A w_y - B / ratio x.
            coeff = scaled.copy()
            coeff[rows, labels] += share * self.slope
            dx = bottom[0].diff.reshape(self.m, self.k)
            products.for_module(xp)(coeff, w, out=dx)
            dx += (-share * self.rest / ratio)[:, None] * x
