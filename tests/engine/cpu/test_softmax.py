"""engine/cpu/softmax.py against the NumPy softmax, over every axis, in the Softmax layer and SoftmaxWithLoss."""

import numpy as np
import pytest
from cpu_kernel_check import compare_layer, kernels, spy, tolerance

from engine.layers.softmax import softmax

RNG = np.random.default_rng(11)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("axis", [0, 1, 2, -1])
def test_softmax_matches_numpy(axis, dtype):
    x = (5 * RNG.standard_normal((3, 7, 4, 5))).astype(dtype)
    with kernels(False):
        want = softmax(x, axis)
    with kernels(True), spy("softmax") as calls:
        got = softmax(x, axis)
    assert calls == {"forward": 1}
    assert got.dtype == want.dtype and np.allclose(got, want, rtol=4 * tolerance(dtype), atol=0)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_layers_match_numpy(dtype):
    x = RNG.standard_normal((6, 10))
    labels = RNG.integers(0, 10, size=(6,))
    with spy("softmax") as calls:
        assert compare_layer("type: 'Softmax'", [x], dtype) <= 4 * tolerance(dtype)
        assert compare_layer("type: 'SoftmaxWithLoss'", [x, labels], dtype,
                             propagate=[True, False]) <= 4 * tolerance(dtype)
    assert calls.get("forward") == 2
