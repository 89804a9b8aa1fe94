"""InnerProduct: a fully connected layer over the axes from `axis` on."""

from ..fillers import fill
from .base import Layer, register_layer


@register_layer
class InnerProductLayer(Layer):
    type = "InnerProduct"
    exact_num_bottom_blobs = 1
    exact_num_top_blobs = 1

    def setup(self, bottom, top):
        p = self.param.inner_product_param
        self.check(p.HasField("num_output") or p.num_output, "inner_product_param.num_output is required")
        self.num_output = p.num_output
        self.bias_term = p.bias_term
        self.transpose = p.transpose
        self.axis = bottom[0].canonical_axis(p.axis)
        self.k = bottom[0].count_range(self.axis)
        if len(self.blobs):
            return
        shape = (self.k, self.num_output) if self.transpose else (self.num_output, self.k)
        self.blobs.add_blob(*shape)
        fill(self.blobs[0].data, p.weight_filler)
        if self.bias_term:
            self.blobs.add_blob(self.num_output)
            fill(self.blobs[1].data, p.bias_filler)

    def reshape(self, bottom, top):
        axis = bottom[0].canonical_axis(self.param.inner_product_param.axis)
        k = bottom[0].count_range(axis)
        self.check(k == self.k, f"Input size incompatible with inner product parameters: "
                                f"bottom {bottom[0].shape} gives {k} inputs per row, weights expect {self.k}")
        self.m = bottom[0].count_range(0, axis)
        top[0].reshape(bottom[0].shape[:axis] + (self.num_output,))

    def _weight(self):
        w = self.blobs[0].data
        return w if self.transpose else w.T  # (K, N)

    def forward(self, bottom, top):
        x = bottom[0].data.reshape(self.m, self.k)
        y = top[0].data.reshape(self.m, self.num_output)
        y[...] = x.dot(self._weight())
        if self.bias_term:
            y += self.blobs[1].data

    def backward(self, top, propagate_down, bottom):
        dy = top[0].diff.reshape(self.m, self.num_output)
        x = bottom[0].data.reshape(self.m, self.k)
        if self.param_propagate_down[0]:
            if self.transpose:
                self.blobs[0].diff[...] += x.T.dot(dy)
            else:
                self.blobs[0].diff[...] += dy.T.dot(x)
        if self.bias_term and self.param_propagate_down[1]:
            self.blobs[1].diff[...] += dy.sum(axis=0)
        if propagate_down[0]:
            bottom[0].diff.reshape(self.m, self.k)[...] = dy.dot(self._weight().T)
