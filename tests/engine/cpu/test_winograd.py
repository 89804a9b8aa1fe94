"""engine/cpu/winograd.py: the Winograd transforms (3x3 and 5x5) give the NumPy code's numbers bit for bit."""

import numpy as np
import pytest
from cpu_kernel_check import kernels, spy

from engine import winograd
from engine.cpu import products
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
    # Each tiling's kernels on column phases; F(2x2, 3x3)'s filter transforms are kernels too, F(2x2, 5x5)'s
    # are NumPy's, in float64.
    transforms = [f"{name}_f2x{k}" for name in ("input_transform", "output_transform", "output_transform_adjoint")]
    if k == 3:
        transforms += ["filter_transform", "filter_transform_adjoint"]
    assert {"to_column_phases", "from_column_phases", *transforms} <= set(calls)
    (y, wd, dx), (y_got, wd_got, dx_got) = want, got
    assert np.array_equal(y, y_got) and np.array_equal(dx, dx_got)
    # The kernels' path adds the weight diff's tile sums chunk by chunk: other roundings (of sums that
    # G^T dU G then takes apart with cancellation).
    np.testing.assert_allclose(wd_got, wd, rtol=0, atol=1000 * np.finfo(dtype).eps * np.abs(wd).max())


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("k", [3, 5])
def test_chunks_over_threads_give_the_whole_batch_numbers(two_threads, monkeypatch, dtype, k):
    """On the CPU the tile rows run in chunks on the pool: one tile row a chunk here, over two threads. The top
    and bottom diff are the whole-batch NumPy passes' bit for bit; the weight diff, added up chunk by chunk in
    fixed groups, is the same at one thread and at two."""
    monkeypatch.setattr(winograd, "CHUNK_BYTES", 1)
    x = RNG.standard_normal((3, 5, 9, 7)).astype(dtype)
    w = RNG.standard_normal((6, 5, k, k)).astype(dtype)
    pad = (k // 2, k // 2)
    dy = RNG.standard_normal((3, 6, 9, 7)).astype(dtype)
    assert len(winograd.TILINGS[k]._chunks(3 * 5, 4, 6, x.itemsize)) == 15
    with kernels(False):
        y, wd, dx = _run(x, w, None, dy, pad, 1)
    y2, wd2, dx2 = _run(x, w, None, dy, pad, 1)
    assert two_threads, "the chunks did not run on the pool"
    assert np.array_equal(y, y2) and np.array_equal(dx, dx2)
    np.testing.assert_allclose(wd2, wd, rtol=0, atol=1000 * np.finfo(dtype).eps * np.abs(wd).max())
    monkeypatch.setitem(products._STATE, "threads", 1)
    assert np.array_equal(_run(x, w, None, dy, pad, 1)[1], wd2)


def test_chunks_only_where_the_transformed_filters_fit_half_a_chunk():
    """Every chunk's products read all the transformed filters: larger ones (ResNet-18's res5, 16 MB) keep the
    whole-batch products, which read them once."""
    x = np.zeros((1, 2, 4, 4), dtype=np.float32)
    small, large = np.zeros((64, 64, 3, 3), np.float32), np.zeros((512, 512, 3, 3), np.float32)
    tiling = winograd.TILINGS[3]
    assert tiling.in_chunks(small, x) and not tiling.in_chunks(large, x)
    with kernels(False):
        assert not tiling.in_chunks(small, x)
