"""engine/cpu/neuron.py against the NumPy ReLU path, bit for bit, in place and not."""

import numpy as np
import pytest
from cpu_kernel_check import compare_layer, spy

RNG = np.random.default_rng(4)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("slope", [0.0, 0.1])
@pytest.mark.parametrize("in_place", [False, True])
def test_relu_matches_numpy_path(dtype, slope, in_place):
    x = RNG.standard_normal((3, 4, 50, 70))  # more than one chunk per thread
    x[0, 0, 0, :3] = 0.0
    with spy("neuron") as calls:
        worst = compare_layer(f"type: 'ReLU' relu_param {{ negative_slope: {slope} }}", [x], dtype,
                              in_place=in_place)
    assert calls == {"relu_forward": 1, "relu_backward": 1}
    assert worst == 0.0
