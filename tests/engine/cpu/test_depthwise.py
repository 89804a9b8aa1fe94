"""engine/cpu/depthwise.py against the grouped im2col path of Convolution (kernels off)."""

import numpy as np
import pytest
from cpu_kernel_check import compare_layer, spy

RNG = np.random.default_rng(8)

CASES = [
    ("num_output: 4 group: 4 kernel_size: 3 pad: 1", (2, 4, 7, 6)),
    ("num_output: 4 group: 4 kernel_size: 3 pad: 1 stride: 2", (2, 4, 9, 8)),
    ("num_output: 6 group: 3 kernel_size: 3 stride: 1", (2, 3, 6, 6)),  # two outputs per input channel
    ("num_output: 3 group: 3 kernel_h: 5 kernel_w: 3 pad_h: 2 pad_w: 0 stride_h: 2 stride_w: 1", (1, 3, 9, 7)),
    ("num_output: 2 group: 2 kernel_size: 3 pad: 2 dilation: 2 bias_term: false", (2, 2, 8, 8)),
    # Strides past 2 and with dilation: the column phases of every offset.
    ("num_output: 4 group: 2 kernel_size: 3 pad: 2 dilation: 2 stride: 2", (2, 2, 11, 11)),
    ("num_output: 3 group: 3 kernel_size: 5 pad: 1 stride: 3", (2, 3, 10, 13)),
    # Rows of at least FLAT_WIDTH (FLAT_WIDTH_WEIGHT): the row-by-row loops instead of the flattened plane.
    ("num_output: 2 group: 2 kernel_size: 3 pad: 1", (2, 2, 4, 40)),
    ("num_output: 4 group: 2 kernel_size: 3 pad: 1", (2, 2, 5, 70)),
    ("num_output: 2 group: 2 kernel_h: 3 kernel_w: 5 pad_h: 0 pad_w: 1", (1, 2, 6, 66)),
]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("text,shape", CASES)
def test_depthwise_matches_im2col_path(text, shape, dtype):
    x = RNG.standard_normal(shape)
    layer = (f"type: 'Convolution' convolution_param {{ {text} weight_filler {{ type: 'gaussian' std: 1 }} "
             "bias_filler { type: 'gaussian' std: 1 } }")
    with spy("depthwise") as calls:
        worst = compare_layer(layer, [x], dtype)
    assert calls == {"forward": 1, "backward_weight": 1, "backward_data": 1}
    assert worst <= (1e-13 if dtype == np.float64 else 2e-5)
