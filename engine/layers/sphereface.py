"""SphereFace's MarginInnerProduct (wy1iu/sphereface): the A-Softmax angular margin.

As L-Softmax's layer (large_margin.py: psi, lambda schedule, own iteration
counter), with two differences the fork makes:
  - every forward rescales each weight row to unit length in place (the
    stored parameter changes), so scores are x.w and the label's margin
    score is |x| psi(theta);
  - its backward is not the exact derivative. The weight gradient is plain
    InnerProduct's, top_diff^T x. For the label entry, the input gradient
    A w_y - B / |x| x (A, B from psi) is divided by the length of its
    coefficient pair, sqrt(A^2 + (B / |x|)^2): the fork's own normalized
    direction, reproduced here. Other entries and SINGLE are exact.
"""

from ..backend import get_array_module
from ..cpu import products
from .base import register_layer
from .large_margin import MarginInnerProductBase, margin_terms


@register_layer
class MarginInnerProductLayer(MarginInnerProductBase):
    type = "MarginInnerProduct"
    param_field = "margin_inner_product_param"

    def forward(self, bottom, top):
        self.step_lambda(top)
        w = self.blobs[0].data
        xp = get_array_module(w)
        w /= xp.sqrt((w * w).sum(axis=1, keepdims=True))
        x = bottom[0].data.reshape(self.m, self.k)
        labels, rows = self.labels(bottom)
        self.x_norm = xp.sqrt((x * x).sum(axis=1))
        scores = top[0].data.reshape(self.m, self.num_output)
        products.for_module(xp)(x, w.T, out=scores)
        if self.margin == 0:
            return
        self.cos = scores[rows, labels] / self.x_norm
        psi, self.slope, self.rest = margin_terms(self.margin, self.cos)
        self.blend(scores, rows, labels, self.x_norm * psi)

    def backward(self, top, propagate_down, bottom):
        dy = top[0].diff.reshape(self.m, self.num_output)
        x = bottom[0].data.reshape(self.m, self.k)
        w = self.blobs[0].data
        xp = get_array_module(x)
        if self.param_propagate_down[0]:
            self.blobs[0].diff[...] += products.for_module(xp)(dy.T, x)
        if not propagate_down[0]:
            return
        dx = bottom[0].diff.reshape(self.m, self.k)
        if self.margin == 0:
            products.for_module(xp)(dy, w, out=dx)
            return
        labels, rows = self.labels(bottom)
        scaled, picked = self.label_weighted(dy, rows, labels)
        share = picked / (1 + self.lambda_)
        along_w = self.slope
        along_x = -self.rest / self.x_norm
        length = xp.sqrt(along_w * along_w + along_x * along_x)
        scaled[rows, labels] += share * along_w / length
        products.for_module(xp)(scaled, w, out=dx)
        dx += (share * along_x / length)[:, None] * x
