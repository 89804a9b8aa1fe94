"""engine/cpu/pooling.py against the NumPy pooling path: MAX (values, mask, routing) and AVE."""

import numpy as np
import pytest
from cpu_kernel_check import compare_layer, kernels, spy, tolerance

RNG = np.random.default_rng(3)

CASES = [
    ("pool: MAX kernel_size: 3 stride: 2", (2, 3, 9, 8)),
    ("pool: MAX kernel_size: 3 stride: 2 pad: 1", (2, 2, 7, 6)),
    ("pool: MAX kernel_size: 2 stride: 2", (3, 2, 6, 6)),
    ("pool: MAX kernel_h: 3 kernel_w: 2 stride_h: 1 stride_w: 3 pad_h: 1 pad_w: 0", (1, 2, 5, 7)),
    ("pool: MAX global_pooling: true", (2, 3, 5, 4)),
    ("pool: AVE kernel_size: 3 stride: 2", (2, 3, 9, 8)),
    ("pool: AVE kernel_size: 3 stride: 1 pad: 1", (2, 2, 5, 6)),
    ("pool: AVE kernel_size: 2 stride: 3", (1, 2, 8, 7)),
    ("pool: AVE global_pooling: true", (2, 3, 5, 4)),
]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("text,shape", CASES)
def test_kernels_match_numpy_path(text, shape, dtype):
    x = RNG.standard_normal(shape)
    x[0, 0, 0, :2] = 1.5  # a tie: the first maximum wins in both paths
    with spy("pooling") as calls:
        worst = compare_layer(f"type: 'Pooling' pooling_param {{ {text} }}", [x], dtype)
    assert calls, "the pooling kernels were not used"
    # MAX picks, routes and copies the same numbers; AVE sums in window order as NumPy does.
    assert worst <= (0.0 if "MAX" in text else tolerance(dtype))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_max_mask_top_and_empty_windows(dtype):
    """The optional mask top is the same; a window of values at -FLT_MAX or below gives index -1."""
    x = RNG.standard_normal((2, 2, 6, 6))
    x[1, 1, :3, :3] = -np.inf
    text = "type: 'Pooling' pooling_param { pool: MAX kernel_size: 3 stride: 3 }"
    with spy("pooling") as calls:
        assert compare_layer(text, [x], dtype, num_tops=2) == 0.0
    assert calls.get("max_forward")
    from layer_check import build_layer, forward
    with kernels(True):
        layer, bottom, top = build_layer(text, [x], num_tops=2, dtype=dtype)
        values, mask = forward(layer, bottom, top)
    assert mask[1, 1, 0, 0] == -1 and values[1, 1, 0, 0] == -np.finfo(np.float32).max
