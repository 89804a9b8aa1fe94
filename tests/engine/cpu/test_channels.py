"""engine/cpu/channels.py against the NumPy BatchNorm and Scale paths."""

import numpy as np
import pytest
from cpu_kernel_check import compare_layer, spy, tolerance

from engine import caffe_pb2

RNG = np.random.default_rng(6)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("in_place", [False, True])
# Channel blocks (channels.BLOCK_ELEMENTS): one block of 3 planes, 300 planes of 20 in two blocks (the
# second shorter), planes of 4,480 one per block.
@pytest.mark.parametrize("shape", [(4, 3, 5, 6), (6, 5), (2, 300, 5, 4), (2, 3, 70, 64)])
def test_batch_norm_matches_numpy_path(dtype, in_place, shape):
    x = 3 + 2 * RNG.standard_normal(shape)
    with spy("channels") as calls:
        worst = compare_layer("type: 'BatchNorm'", [x], dtype, in_place=in_place)
    assert calls.get("normalize") and calls.get("batch_norm_backward")
    # Statistics summed in float64 here, pairwise in the array's precision there.
    assert worst <= 20 * tolerance(dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_batch_norm_global_stats(dtype):
    x = RNG.standard_normal((2, 3, 4, 4))
    params = [np.array([0.5, -1.0, 2.0]), np.array([1.0, 4.0, 0.25]), np.array([2.0])]
    with spy("channels") as calls:
        worst = compare_layer("type: 'BatchNorm' batch_norm_param { use_global_stats: true }", [x], dtype,
                              phase=caffe_pb2.TEST, params=params)
    assert calls.get("normalize")
    assert worst <= tolerance(dtype)


SCALE_CASES = [
    ("scale_param { bias_term: true }", (3, 4, 5, 6), False),
    ("scale_param { bias_term: true }", (3, 4, 5, 6), True),
    ("scale_param { axis: 1 num_axes: 2 }", (2, 3, 4, 5), False),
    ("scale_param { axis: 0 num_axes: 1 bias_term: true }", (4, 6), True),
    ("scale_param { bias_term: true }", (2, 300, 5, 4), True),
    ("scale_param { bias_term: true }", (2, 3, 70, 64), False),
]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("text,shape,in_place", SCALE_CASES)
def test_scale_matches_numpy_path(text, shape, in_place, dtype):
    x = RNG.standard_normal(shape)
    with spy("channels") as calls:
        probe = compare_layer(f"type: 'Scale' {text}", [x], dtype, in_place=in_place)
    # The forward's map, and the backward's sums and bottom diff in one pass.
    assert calls.get("scale") and calls.get("scale_backward")
    assert probe <= 20 * tolerance(dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("propagate", [[True], [False]])
def test_scale_backward_without_bottom_diff(dtype, propagate):
    """Without the bottom diff the sums alone run; with it, the pass that also writes the bottom diff."""
    x = RNG.standard_normal((3, 4, 5, 6))
    with spy("channels") as calls:
        probe = compare_layer("type: 'Scale' scale_param { bias_term: true }", [x], dtype, propagate=propagate)
    assert calls.get("scale_backward" if propagate[0] else "sums")
    assert probe <= 20 * tolerance(dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_scale_by_second_bottom(dtype):
    x, factor = RNG.standard_normal((2, 3, 4, 5)), RNG.standard_normal((2, 3))
    with spy("channels") as calls:
        worst = compare_layer("type: 'Scale' scale_param { axis: 0 }", [x, factor], dtype)
    assert calls.get("scale")
    assert worst <= 20 * tolerance(dtype)
