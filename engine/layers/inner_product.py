"""InnerProduct: a fully connected layer over the axes from `axis` on.

The products write straight into the top and bottom diff. The weight
gradient is added into the diff (Caffe accumulates into param diffs) a block
of rows at a time on the CPU: each block's product lands in a small scratch
array that is still in cache when it is added, so no weight-sized temporary
is allocated and the addition does not stream a second weight-sized array.
"""

import numpy as np

from ..backend import get_array_module
from ..cpu import products
from ..fillers import fill
from .base import Layer, register_layer

# Elements of the weight-gradient product computed per block on the CPU (about 1 MB of float32).
GRADIENT_BLOCK = 1 << 18


def accumulate_product(diff, a, b):
    """diff += a @ b, in blocks of rows of `diff` on the CPU; `diff` is C-contiguous (rows, cols).

    On the CPU each thread of engine/cpu/products.py's pool takes a range of rows, with its own block.
    """
    xp = get_array_module(diff)
    rows, cols = diff.shape
    step = rows if xp is not np else max(1, min(rows, GRADIENT_BLOCK // max(cols, 1)))
    if step >= rows:
        diff += products.for_module(xp)(a, b)
        return

    def accumulate(part):
        scratch = np.empty((step, cols), dtype=diff.dtype)
        for start in range(part.start, part.stop, step):
            end = min(start + step, part.stop)
            block = scratch[:end - start]
            np.matmul(a[start:end], b, out=block)
            diff[start:end] += block

    products.in_parts(rows, accumulate, minimum=rows * cols * a.shape[1])


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
        products.for_module(get_array_module(x))(x, self._weight(), out=y)
        if self.bias_term:
            y += self.blobs[1].data

    def backward(self, top, propagate_down, bottom):
        dy = top[0].diff.reshape(self.m, self.num_output)
        x = bottom[0].data.reshape(self.m, self.k)
        if self.param_propagate_down[0]:
            if self.transpose:
                accumulate_product(self.blobs[0].diff, x.T, dy)
            else:
                accumulate_product(self.blobs[0].diff, dy.T, x)
        if self.bias_term and self.param_propagate_down[1]:
            self.blobs[1].diff[...] += dy.sum(axis=0)
        if propagate_down[0]:
            products.for_module(get_array_module(dy))(dy, self._weight().T,
                                                      out=bottom[0].diff.reshape(self.m, self.k))
