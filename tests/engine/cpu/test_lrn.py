"""engine/cpu/lrn.py against the NumPy LRN path (ACROSS_CHANNELS): the same operations, the same numbers."""

import numpy as np
import pytest
from cpu_kernel_check import compare_layer, spy

RNG = np.random.default_rng(5)

CASES = [
    "local_size: 5 alpha: 0.0001 beta: 0.75",
    "local_size: 3 alpha: 0.5 beta: 0.75 k: 2",
    "local_size: 5 alpha: 2 beta: 0.5 k: 1.5",
    "local_size: 1 alpha: 1 beta: 1",
    "local_size: 9 alpha: 1 beta: 0.6",
]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("text", CASES)
def test_across_channels_matches_numpy_path(text, dtype):
    x = RNG.standard_normal((2, 7, 9, 33))  # 297 positions: two blocks, the last one partial
    with spy("lrn") as calls:
        worst = compare_layer(f"type: 'LRN' lrn_param {{ {text} }}", [x], dtype)
    assert calls == {"forward": 1, "backward": 1}
    # powers other than 0.5, 0.75 and 1 go through pow, which may round differently from NumPy's
    assert worst <= (0.0 if "0.6" not in text else 1e-6 if dtype == np.float32 else 1e-14)
