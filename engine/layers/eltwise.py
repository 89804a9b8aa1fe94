"""Eltwise: elementwise PROD, SUM (with per-bottom coefficients) or MAX of equal-shaped bottoms."""

from ..backend import get_array_module
from .base import Layer, register_layer
from .neuron import quiet


@register_layer
class EltwiseLayer(Layer):
    """As Caffe: MAX remembers which bottom won each element (ties between the
    first two go to the second, later bottoms must be strictly larger) and
    routes the gradient there; PROD's gradient is the product of the other
    bottoms (stable_prod_grad) or top / bottom."""

    type = "Eltwise"
    min_bottom_blobs = 2
    exact_num_top_blobs = 1

    def setup(self, bottom, top):
        p = self.param.eltwise_param
        ops = self._caffe_pb2.EltwiseParameter
        self.op, self.ops = p.operation, ops
        self.check(len(p.coeff) in (0, len(bottom)), "Eltwise Layer takes one coefficient per bottom blob "
                                                    f"({len(p.coeff)} given for {len(bottom)} bottoms)")
        self.check(not (self.op == ops.PROD and len(p.coeff)),
                   "Eltwise layer only takes coefficients for summation.")
        self.check(self.op in (ops.PROD, ops.SUM, ops.MAX), f"Unknown elementwise operation {self.op}")
        self.coeffs = list(p.coeff) or [1.0] * len(bottom)
        self.stable_prod_grad = p.stable_prod_grad
        self.winner = None

    def reshape(self, bottom, top):
        for index, blob in enumerate(bottom[1:], 1):
            self.check(blob.shape == bottom[0].shape,
                       f"bottom[0]: {bottom[0].shape}, bottom[{index}]: {blob.shape}: all bottoms must have "
                       "the same shape")
        top[0].reshape(bottom[0].shape)

    def forward(self, bottom, top):
        xp = get_array_module(bottom[0].data)
        if self.op == self.ops.PROD:
            result = bottom[0].data * bottom[1].data
            for blob in bottom[2:]:
                result *= blob.data
        elif self.op == self.ops.SUM:
            result = None
            for blob, c in zip(bottom, self.coeffs):
                term = blob.data if c == 1 else blob.data * c
                result = term.copy() if result is None else result + term
        else:
            a, b = bottom[0].data, bottom[1].data
            first = a > b
            result = xp.where(first, a, b)
            winner = xp.where(first, 0, 1).astype(xp.int32)
            for index, blob in enumerate(bottom[2:], 2):
                better = blob.data > result
                result = xp.where(better, blob.data, result)
                winner[better] = index
            self.winner = winner
        top[0].data[...] = result

    def backward(self, top, propagate_down, bottom):
        dy = top[0].diff
        if any(top[0] is blob for blob in bottom):
            dy = dy.copy()  # in place, writing bottom[0]'s diff would change the top's
        for i, blob in enumerate(bottom):
            if not propagate_down[i]:
                continue
            if self.op == self.ops.PROD:
                blob.diff[...] = dy * self._prod_grad(i, top, bottom)
            elif self.op == self.ops.SUM:
                c = self.coeffs[i]
                blob.diff[...] = dy if c == 1 else dy * c
            else:
                blob.diff[...] = dy * (self.winner == i)

    def _prod_grad(self, i, top, bottom):
        if not self.stable_prod_grad:
            xp = get_array_module(top[0].data)
            with quiet(xp):
                return top[0].data / bottom[i].data
        others = [blob.data for j, blob in enumerate(bottom) if j != i]
        grad = others[0].copy()
        for data in others[1:]:
            grad *= data
        return grad
