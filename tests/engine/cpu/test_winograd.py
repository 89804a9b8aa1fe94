"""engine/cpu/winograd.py: the Winograd transforms give the NumPy code's numbers bit for bit."""

import numpy as np
import pytest
from cpu_kernel_check import kernels, spy

from engine.winograd import WinogradConvolution

RNG = np.random.default_rng(10)


def _run(x, w, b, dy, pad, group):
    conv = WinogradConvolution(pad, group)
    y = np.full((x.shape[0], w.shape[0], x.shape[2] + 2 * pad[0] - 2, x.shape[3] + 2 * pad[1] - 2), np.nan,
                dtype=x.dtype)
    conv.forward(x, w, b, out=y)
    wd = np.zeros_like(w)
    dx = np.full_like(x, np.nan)
    conv.backward(x, dy, w, weight_diff=wd, out=dx)
    return y, wd, dx


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape,out,pad,group", [((2, 3, 7, 6), 4, (1, 1), 1), ((1, 4, 8, 9), 6, (0, 2), 2),
                                                   ((3, 2, 5, 5), 2, (2, 0), 1)])
@pytest.mark.parametrize("with_bias", [False, True])
def test_transforms_match_numpy(shape, out, pad, group, dtype, with_bias):
    x = RNG.standard_normal(shape).astype(dtype)
    w = RNG.standard_normal((out, shape[1] // group, 3, 3)).astype(dtype)
    b = RNG.standard_normal(out).astype(dtype) if with_bias else None
    dy = RNG.standard_normal((shape[0], out, shape[2] + 2 * pad[0] - 2, shape[3] + 2 * pad[1] - 2)).astype(dtype)
    with kernels(False):
        want = _run(x, w, b, dy, pad, group)
    with kernels(True), spy("winograd") as calls:
        got = _run(x, w, b, dy, pad, group)
    assert {"input_transform", "output_transform", "output_transform_adjoint", "to_padded_channels_last",
            "from_channels_last", "filter_transform", "filter_transform_adjoint"} <= set(calls)
    for a, c in zip(want, got):
        assert np.array_equal(a, c)
