"""A convolution image by image on the pool's threads: im2col and its product while the columns are in cache.

The layer's im2col path writes the whole batch's columns to memory, then
multiplies and moves the rows to blob order, each pass a parallel section
of its own. For a first layer (three colour channels, a 5x5 to 11x11
kernel) the columns are 25 to 121 times the input and the product is short
(75 to 363 terms), so that path spends most of its time moving columns.
Here each thread of engine/cpu/products.py's pool takes whole images in
turn (`products.in_turns`): it pads the image, writes its columns into a
buffer of its own and multiplies them at once, on one thread, straight into
the image's top (whose (outputs, pixels) layout is the product's). The
weight diff does the same, the columns of each image again, with the
images in WEIGHT_DIFF_PARTS fixed groups, each group's products added in
order and the groups in order: the numbers depend on the shapes only, not
on the thread count. A pointwise layer (1 x 1, stride 1, no padding) takes
the same route with the image itself as its columns: its products go
straight between the blobs.

Measured on the 2-core guest (forward + weight diff, ms, two threads):
ResNet-18's conv1 10.0 -> 8.7, cifar10_quick's conv1 15.0 -> 12.1,
MobileNet v1's conv1 9.1 -> 6.8, CaffeNet's conv1 52.7 -> 50.8
(bench/README.md).
"""

import numpy as np

from ..geometry import is_pointwise
from . import kernels, products
from .threads import one_thread

# Images' weight-diff products are summed in this many fixed groups of consecutive images, then in order.
WEIGHT_DIFF_PARTS = 8


def _columns(image, kernel, pad, stride, dilation, padded, cols):
    """cols (K, 1, OH, OW) = the columns of `image` (1, C, H, W), through the zero-padded buffer `padded`
    (a view of the image for a pointwise geometry: then no buffers are given)."""
    if cols is None:
        return image.reshape(image.shape[1], -1)
    module = kernels("im2col")
    if any(pad):
        module.pad(image, *pad, padded)
        image = padded
    module.im2col(image, *kernel, *stride, *dilation, cols)
    return cols.reshape(cols.shape[0], -1)


def _buffers(x, kernel, pad, stride, out_spatial):
    """(padded, cols) buffers of one thread; (None, None) for a pointwise geometry."""
    if is_pointwise(kernel, pad, stride):
        return None, None
    channels, height, width = x.shape[1:]
    padded = np.empty((1, channels, height + 2 * pad[0], width + 2 * pad[1]), dtype=x.dtype)
    cols = np.empty((channels * kernel[0] * kernel[1], 1) + tuple(out_spatial), dtype=x.dtype)
    return padded, cols


def forward(x, weight, bias, kernel, pad, stride, dilation, out):
    """out (N, O, OH, OW) = x (N, C, H, W) convolved with weight (O, C * kh * kw) (+ bias (O,), or None)."""
    x = np.ascontiguousarray(x)
    num, outputs = out.shape[:2]
    column = None if bias is None else bias.reshape(outputs, 1)

    def run(indices):
        padded, cols = _buffers(x, kernel, pad, stride, out.shape[2:])
        with one_thread():
            for n in indices:
                top = out[n].reshape(outputs, -1)
                np.matmul(weight, _columns(x[n:n + 1], kernel, pad, stride, dilation, padded, cols), out=top)
                if column is not None:
                    top += column

    products.in_turns(num, run, minimum=num * weight.size * int(np.prod(out.shape[2:])))


def weight_diff(x, dy, kernel, pad, stride, dilation, diff):
    """diff (O, C * kh * kw) += the sum over images of dy[n] (O, OH * OW) times x[n]'s columns, transposed."""
    x = np.ascontiguousarray(x)
    num, outputs = dy.shape[:2]
    step = -(-num // WEIGHT_DIFF_PARTS)
    groups = [range(start, min(start + step, num)) for start in range(0, num, step)]
    # Each group's sum as columns @ dy^T (K, O): OpenBLAS runs the long pixel dimension faster as the left
    # operand's rows (see SHORT_INNER in engine/layers/conv.py); the small transpose is added at the end.
    sums = np.zeros((len(groups), diff.shape[1], outputs), dtype=diff.dtype)

    def run(indices):
        padded, cols = _buffers(x, kernel, pad, stride, dy.shape[2:])
        with one_thread():
            for index in indices:
                for n in groups[index]:
                    columns = _columns(x[n:n + 1], kernel, pad, stride, dilation, padded, cols)
                    sums[index] += np.matmul(columns, dy[n].reshape(outputs, -1).T)

    products.in_turns(len(groups), run, minimum=num * diff.size * int(np.prod(dy.shape[2:])))
    total = sums[0]
    for index in range(1, len(groups)):
        total += sums[index]
    diff += total.T
