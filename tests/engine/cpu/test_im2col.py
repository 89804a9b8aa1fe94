"""engine/cpu/im2col.py against engine.im2col's NumPy bodies: both layouts, padding, stride, dilation."""

import numpy as np
import pytest
from cpu_kernel_check import kernels, spy

from engine.im2col import col2im, im2col

RNG = np.random.default_rng(7)

# (kernel, pad, stride, dilation, input shape)
CASES = [
    ((3, 3), (1, 1), (1, 1), (1, 1), (2, 3, 7, 8)),
    ((5, 5), (2, 2), (1, 1), (1, 1), (2, 2, 6, 6)),
    ((3, 2), (0, 1), (2, 3), (1, 1), (3, 2, 9, 10)),
    ((3, 3), (2, 2), (1, 1), (2, 2), (1, 2, 7, 7)),
    ((11, 11), (0, 0), (4, 4), (1, 1), (1, 3, 27, 27)),
    ((1, 1), (0, 0), (2, 2), (1, 1), (2, 4, 5, 5)),
    ((4, 4), (3, 3), (1, 1), (1, 1), (1, 1, 2, 3)),  # windows mostly in the padding
    ((7, 7), (3, 3), (2, 2), (1, 1), (2, 3, 13, 12)),  # ResNet's first layer: column phases
    ((3, 3), (2, 1), (2, 3), (2, 2), (2, 2, 11, 13)),  # phases with dilation
]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("kernel,pad,stride,dilation,shape", CASES)
def test_im2col_and_col2im_match_numpy(kernel, pad, stride, dilation, shape, batch_first, dtype):
    x = RNG.standard_normal(shape).astype(dtype)
    with kernels(False):
        want = im2col(x, kernel, pad, stride, dilation, batch_first=batch_first)
    with kernels(True), spy("im2col") as calls:
        got = im2col(x, kernel, pad, stride, dilation, batch_first=batch_first)
        buffer = np.full(want.size + 3, np.nan, dtype=dtype)
        into = im2col(x, kernel, pad, stride, dilation, batch_first=batch_first, out=buffer[:want.size])
    assert calls.get("im2col") == 2
    assert got.shape == want.shape and np.array_equal(got, want) and np.array_equal(into, want)
    cols = RNG.standard_normal(want.shape).astype(dtype)
    with kernels(False):
        image = np.array(col2im(cols, shape, kernel, pad, stride, dilation, batch_first=batch_first))
    with kernels(True), spy("im2col") as calls:
        fresh = col2im(cols, shape, kernel, pad, stride, dilation, batch_first=batch_first)
        out = np.full(shape, np.nan, dtype=dtype)
        written = col2im(cols, shape, kernel, pad, stride, dilation, batch_first=batch_first, out=out)
    assert calls == {"col2im": 2} and written is out
    # Offsets are added in the same order: the same sums bit for bit.
    assert np.array_equal(fresh, image) and np.array_equal(out, image)


def test_numpy_col2im_writes_into_out():
    cols = RNG.standard_normal((2 * 9, 1, 4, 4))
    with kernels(False):
        image = np.array(col2im(cols, (1, 2, 4, 4), (3, 3), (1, 1), (1, 1), batch_first=False))
        out = np.empty((1, 2, 4, 4))
        assert col2im(cols, (1, 2, 4, 4), (3, 3), (1, 1), (1, 1), batch_first=False, out=out) is out
    assert np.array_equal(out, image)
