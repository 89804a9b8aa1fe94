"""engine/cpu/sgd.py: the fused momentum update gives the NumPy pipeline's numbers bit for bit."""

import numpy as np
import pytest
from cpu_kernel_check import kernels, spy

from engine.solvers.sgd import SGDSolver

RNG = np.random.default_rng(9)


class _Net:
    def __init__(self, blobs, lr, decay):
        self.learnable_params, self.params_lr, self.params_weight_decay = blobs, lr, decay
        self.debug_info = False


class _Blob:
    def __init__(self, data, diff):
        self.data, self.diff = data, diff


class _Param:
    def __init__(self, regularization, iter_size):
        self.weight_decay, self.regularization_type = 0.0005, regularization
        self.iter_size, self.momentum = iter_size, 0.9


def _update(dtype, regularization, iter_size, subtract, enabled):
    rng = np.random.default_rng(1)
    size = 70001  # several chunks and a partial one
    blob = _Blob(rng.standard_normal(size).astype(dtype), rng.standard_normal(size).astype(dtype))
    history = rng.standard_normal(size).astype(dtype)
    solver = SGDSolver.__new__(SGDSolver)
    solver.net = _Net([blob], [1.5], [2.0])
    solver.param = _Param(regularization, iter_size)
    solver.history = [history]
    with kernels(enabled):
        solver.update_param(0, 0.01, subtract=subtract)
    return blob.data, blob.diff, history


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("regularization", ["L2", "L1"])
@pytest.mark.parametrize("iter_size", [1, 3])
@pytest.mark.parametrize("subtract", [True, False])
def test_fused_update_is_bit_identical(dtype, regularization, iter_size, subtract):
    want = _update(dtype, regularization, iter_size, subtract, False)
    with spy("sgd") as calls:
        got = _update(dtype, regularization, iter_size, subtract, True)
    assert calls == {"update": 1}
    for a, b in zip(want, got):
        assert a.dtype == b.dtype and np.array_equal(a, b)
