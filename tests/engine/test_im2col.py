"""im2col / col2im (engine.im2col) against a loop-by-loop reference, and the Im2col layer."""

import itertools
import math

import numpy as np
import pytest
from layer_check import build_layer, check_gradient, forward

from engine.errors import LayerError
from engine.im2col import OffsetWindows, col2im, im2col

RNG = np.random.default_rng(11)

# (spatial, kernel, pad, stride, dilation)
GEOMETRIES = [
    ((5, 6), (3, 3), (1, 1), (2, 2), (1, 1)),
    ((7, 5), (3, 2), (1, 0), (2, 1), (1, 1)),
    ((9, 9), (3, 3), (2, 2), (1, 1), (2, 2)),
    ((4, 4), (1, 1), (0, 0), (1, 1), (1, 1)),
    ((6,), (3,), (1,), (2,), (1,)),
    ((4, 5, 3), (2, 3, 2), (1, 0, 1), (1, 2, 1), (1, 1, 2)),
]


def reference_im2col(x, kernel, pad, stride, dilation):
    """Caffe's im2col, one image and one output cell at a time: (num, C*K, *out)."""
    num, channels = x.shape[:2]
    spatial = x.shape[2:]
    out = [(s + 2 * p - (d * (k - 1) + 1)) // st + 1
           for s, k, p, st, d in zip(spatial, kernel, pad, stride, dilation)]
    cols = np.zeros((num, channels * math.prod(kernel)) + tuple(out))
    for n, c in itertools.product(range(num), range(channels)):
        for k_index, offset in enumerate(itertools.product(*(range(k) for k in kernel))):
            row = c * math.prod(kernel) + k_index
            for cell in itertools.product(*(range(o) for o in out)):
                pos = [o * st - p + off * d for o, st, p, off, d in zip(cell, stride, pad, offset, dilation)]
                if all(0 <= q < s for q, s in zip(pos, spatial)):
                    cols[(n, row) + cell] = x[(n, c) + tuple(pos)]
    return cols


@pytest.mark.parametrize("geometry", GEOMETRIES, ids=str)
def test_im2col_matches_reference_in_both_layouts(geometry):
    spatial, kernel, pad, stride, dilation = geometry
    x = RNG.standard_normal((2, 3) + spatial)
    expected = reference_im2col(x, kernel, pad, stride, dilation)
    got = im2col(x, kernel, pad, stride, dilation, batch_first=True)
    np.testing.assert_array_equal(got, expected)
    rows_first = im2col(x, kernel, pad, stride, dilation, batch_first=False)
    np.testing.assert_array_equal(rows_first, expected.swapaxes(0, 1))


@pytest.mark.parametrize("geometry", GEOMETRIES, ids=str)
@pytest.mark.parametrize("batch_first", [True, False])
def test_col2im_is_the_adjoint_of_im2col(geometry, batch_first):
    """<im2col(x), c> == <x, col2im(c)> for every x and c: overlapping windows sum."""
    spatial, kernel, pad, stride, dilation = geometry
    x = RNG.standard_normal((2, 3) + spatial)
    cols = im2col(x, kernel, pad, stride, dilation, batch_first=batch_first)
    c = RNG.standard_normal(cols.shape)
    image = col2im(c, x.shape, kernel, pad, stride, dilation, batch_first=batch_first)
    assert image.shape == x.shape
    np.testing.assert_allclose(np.vdot(cols, c), np.vdot(x, image), rtol=1e-12)


def test_im2col_fills_a_given_buffer_and_keeps_dtype():
    x = RNG.standard_normal((2, 3, 5, 5)).astype(np.float32)
    buffer = np.empty(2 * 27 * 9 + 10, np.float32)
    cols = im2col(x, (3, 3), (0, 0), (1, 1), batch_first=False, out=buffer[:2 * 27 * 9])
    assert cols.dtype == np.float32 and np.shares_memory(cols, buffer)
    np.testing.assert_array_equal(cols, reference_im2col(x, (3, 3), (0, 0), (1, 1), (1, 1)).swapaxes(0, 1))


@pytest.mark.parametrize("spatial,kernel,stride,pad,out", [
    ((7, 6), (3, 3), (2, 2), (1, 1), (4, 4)),
    ((8, 8), (3, 3), (2, 2), (0, 0), (4, 4)),      # ceil: last window hangs past the edge
    ((5, 6), (5, 6), (1, 1), (0, 0), (1, 1)),      # global
    ((7, 6), (4, 3), (4, 3), (1, 0), (2, 2)),      # SPP-like: stride = kernel
])
def test_offset_windows_split_at_merge(spatial, kernel, stride, pad, out):
    x = RNG.standard_normal((2, 3) + spatial)
    windows = OffsetWindows(spatial, kernel, stride, pad, out)
    phases = windows.split(x, np.nan)
    for offset in windows.offsets():
        got = windows.at(phases, offset)
        assert got.shape == (2, 3) + out
        for cell in itertools.product(*(range(o) for o in out)):
            pos = [o * s - p + k for o, s, p, k in zip(cell, stride, pad, offset)]
            inside = all(0 <= q < size for q, size in zip(pos, spatial))
            value = got[(slice(None), slice(None)) + cell]
            if inside:
                np.testing.assert_array_equal(value, x[(slice(None), slice(None)) + tuple(pos)])
            else:
                assert np.isnan(value).all()
    merged = np.zeros_like(x)
    windows.merge(phases, merged)
    np.testing.assert_array_equal(merged, x)
    assert windows.window_starts(0) == [o * stride[0] - pad[0] for o in range(out[0])]


# -- the Im2col layer -------------------------------------------------------------------------

IM2COL_CASES = [
    "kernel_size: 3 stride: 2 pad: 1",
    "kernel_h: 2 kernel_w: 3 stride_h: 1 stride_w: 2 pad_h: 1",
    "kernel_size: 2 dilation: 2",
    "kernel_size: 2 axis: 2",
]


@pytest.mark.parametrize("params", IM2COL_CASES)
def test_im2col_layer_forward(params):
    x = RNG.standard_normal((2, 3, 5, 6))
    layer, bottom, top = build_layer(f'type: "Im2col" convolution_param {{ {params} }}', [x])
    got = forward(layer, bottom, top)[0]
    if "axis: 2" in params:
        # Axes before `axis` are batch-like (num 2 * 3), axis 2 holds the channels, one spatial axis.
        expected = reference_im2col(x.reshape(6, 5, 6), (2,), (0,), (1,), (1,)).reshape(2, 3, 10, 5)
    else:
        expected = reference_im2col(x, layer.kernel, layer.pad, layer.stride, layer.dilation)
    assert got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("params", IM2COL_CASES)
def test_im2col_layer_gradient(params):
    x = RNG.standard_normal((2, 2, 5, 4))
    check_gradient(f'type: "Im2col" convolution_param {{ {params} }}', [x])


def test_im2col_layer_rejects_bad_kernel():
    with pytest.raises(LayerError, match="Filter dimensions must be nonzero"):
        build_layer('type: "Im2col" convolution_param { kernel_size: 0 }', [np.zeros((1, 1, 3, 3))])
    with pytest.raises(LayerError, match="kernel extent 5 is larger than the padded input"):
        build_layer('type: "Im2col" convolution_param { kernel_size: 5 }', [np.zeros((1, 1, 3, 3))])


def test_offset_windows_with_a_stride_past_the_image_are_cheap():
    """A stride of 2**31 - 1 (a mistyped prototxt) gives one window per axis, without a phase per stride step."""
    windows = OffsetWindows((5, 5), (2, 2), (2147483647, 2147483647), (0, 0), (1, 1))
    x = np.arange(25, dtype=np.float64).reshape(1, 1, 5, 5)
    phases = windows.split(x, -np.inf)
    assert len(phases) == 25  # one per padded position at most
    np.testing.assert_array_equal(windows.at(phases, (1, 1)), [[[[6.0]]]])


def test_offset_windows_with_a_huge_stride_and_a_second_window_outside():
    """Caffe's ceil gives two windows for height 28, kernel 2, stride 99999999; the second one is empty."""
    windows = OffsetWindows((28,), (2,), (99999999,), (0,), (2,))
    x = np.arange(28, dtype=np.float64).reshape(1, 1, 28)
    phases = windows.split(x, -np.inf)
    assert len(phases) == 28
    np.testing.assert_array_equal(windows.at(phases, (1,)), [[[1.0, -np.inf]]])
