"""engine/cpu/winograd.py: the Winograd transforms (3x3 and 5x5) give the NumPy code's numbers bit for bit."""

import numpy as np
import pytest
from cpu_kernel_check import kernels, spy

from engine.winograd import WinogradConvolution

RNG = np.random.default_rng(10)


def _run(x, w, b, dy, pad, group):
    k = w.shape[2]
    conv = WinogradConvolution(pad, group, k)
    y = np.full((x.shape[0], w.shape[0], x.shape[2] + 2 * pad[0] - k + 1, x.shape[3] + 2 * pad[1] - k + 1), np.nan,
                dtype=x.dtype)
    conv.forward(x, w, b, out=y)
    wd = np.zeros_like(w)
    dx = np.full_like(x, np.nan)
    conv.backward(x, dy, w, weight_diff=wd, out=dx)
    return y, wd, dx


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape,out,pad,group,k", [((2, 3, 7, 6), 4, (1, 1), 1, 3), ((1, 4, 8, 9), 6, (0, 2), 2, 3),
                                                     ((3, 2, 5, 5), 2, (2, 0), 1, 3), ((2, 3, 9, 8), 4, (2, 2), 1, 5),
                                                     ((1, 4, 8, 7), 6, (0, 3), 2, 5), ((2, 2, 4, 6), 3, (4, 1), 1, 5)])
@pytest.mark.parametrize("with_bias", [False, True])
def test_transforms_match_numpy(shape, out, pad, group, k, dtype, with_bias):
    x = RNG.standard_normal(shape).astype(dtype)
    w = RNG.standard_normal((out, shape[1] // group, k, k)).astype(dtype)
    b = RNG.standard_normal(out).astype(dtype) if with_bias else None
    dy = RNG.standard_normal((shape[0], out, shape[2] + 2 * pad[0] - k + 1,
                              shape[3] + 2 * pad[1] - k + 1)).astype(dtype)
    with kernels(False):
        want = _run(x, w, b, dy, pad, group)
    with kernels(True), spy("winograd") as calls:
        got = _run(x, w, b, dy, pad, group)
    transforms = ["input_transform", "output_transform", "output_transform_adjoint"]
    if k == 3:
        transforms += ["filter_transform", "filter_transform_adjoint"]
    else:  # F(2x2, 5x5): its own kernels on column phases; the filter transforms are NumPy's, in float64
        transforms = [f"{name}_f2x5" for name in transforms]
    assert {"to_column_phases", "from_column_phases", *transforms} <= set(calls)
    for a, c in zip(want, got):
        assert np.array_equal(a, c)
