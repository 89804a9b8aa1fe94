"""bench/winograd.py and bench/what_if.py after the Winograd path moved into the engine.

The path itself is tested in tests/engine/test_winograd.py. Here: the bench
module is the engine's (conv_layout_timing.py imports it), and the what-if
patches route convolutions as they say, with the layer's numbers.
"""

import sys
from pathlib import Path

import numpy as np
import pytest

from engine import caffe_pb2
from engine import winograd as engine_winograd
from engine.layers import conv

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import what_if  # noqa: E402
import winograd  # noqa: E402
from layer_check import build_layer  # noqa: E402


def test_bench_module_is_the_engines():
    assert winograd.WinogradConvolution is engine_winograd.WinogradConvolution
    assert winograd.supported((3, 3), (1, 1), (1, 1), (1, 1))


def _results(text, x):
    layer, bottom, top = build_layer(text, [x], phase=caffe_pb2.TRAIN)
    layer.blobs[0].data[...] = np.linspace(-1, 1, layer.blobs[0].count).reshape(layer.blobs[0].shape)
    layer.forward(bottom, top)
    top[0].diff[...] = 1.0
    for blob in layer.blobs:
        blob.diff[...] = 0
    layer.backward(top, [True], bottom)
    return layer, [top[0].data.copy(), bottom[0].diff.copy()] + [b.diff.copy() for b in layer.blobs]


@pytest.mark.parametrize("params,winograd_geometry", [
    ("num_output: 4 kernel_size: 3 pad: 1 group: 2", True),
    ("num_output: 3 kernel_size: 5 pad: 2", True),
    ("num_output: 3 kernel_size: 7 pad: 3", False),
])
def test_what_if_patches_route_and_keep_the_numbers(monkeypatch, params, winograd_geometry):
    monkeypatch.setattr(conv, "WINOGRAD", conv.WINOGRAD)  # restored after the test
    text = f'type: "Convolution" convolution_param {{ {params} bias_filler {{ type: "constant" value: 0.5 }} }}'
    x = np.random.default_rng(6).standard_normal((2, 4, 6, 7))
    outcomes = {}
    for name in ("im2col", "winograd"):
        what_if.apply(name)
        layer, outcomes[name] = _results(text, x)
        assert layer._use_winograd(np) is (name == "winograd" and winograd_geometry)
    for a, b in zip(outcomes["im2col"], outcomes["winograd"]):
        np.testing.assert_allclose(b, a, rtol=1e-10, atol=1e-10)


def test_unknown_patch_is_refused():
    with pytest.raises(KeyError, match="unknown what-if"):
        what_if.apply("nonsense")
