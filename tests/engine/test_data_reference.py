"""Caffe's own databases and batches (tests/caffe-reference/data) read exactly.

Each case: run from the case folder (relative paths), build the TEST-phase
net from net.prototxt, forward three times, and compare the data and label
tops with the batches Caffe's Data layer produced, bit for bit.
"""

import importlib.util

import numpy as np
import pytest

import engine
from reference import cases, scratch_copy

CASES = cases("data")
HAVE_PLYVEL = importlib.util.find_spec("plyvel") is not None
needs_plyvel = pytest.mark.skipif(not HAVE_PLYVEL, reason="plyvel (LevelDB support) is not installed")
PARAMS = [pytest.param(c, id=c.name, marks=needs_plyvel if "leveldb" in c.name else ()) for c in CASES]


@pytest.mark.parametrize("folder", PARAMS)
def test_caffe_batches(folder, monkeypatch, mode, tmp_path):
    monkeypatch.chdir(scratch_copy(folder, tmp_path))
    batches = np.load("batches.npz")
    net = engine.Net("net.prototxt", engine.TEST)
    try:
        for i in range(3):
            net.forward()
            data, label = net.blobs["data"].host_data, net.blobs["label"].host_data
            assert data.shape == batches[f"data/{i}"].shape
            assert np.array_equal(data, batches[f"data/{i}"]), f"data of batch {i} differs"
            assert np.array_equal(label, batches[f"label/{i}"]), f"labels of batch {i} differ"
    finally:
        net.layers[0].stop()


def test_reference_cases_are_found():
    assert {c.name for c in CASES} >= {"mnist_idx", "raw_resized_meanfile"}
