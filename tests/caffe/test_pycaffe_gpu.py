"""pycaffe in GPU mode: `.data` and `.diff` are NumPy arrays that Python reads and writes,
as Caffe's CPU copy is, while the net computes on the GPU."""

import numpy as np
import pytest

import caffe
from engine.blob import Blob

pytestmark = pytest.mark.gpu

NET = """
name: "regress" force_backward: true
layer { name: "data" type: "Input" top: "data" top: "target"
        input_param { shape { dim: 4 dim: 3 } shape { dim: 4 dim: 2 } } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
        inner_product_param { num_output: 2 weight_filler { type: "gaussian" std: 1 } } }
layer { name: "double" type: "Python" bottom: "ip" top: "twice"
        python_param { module: "test_pycaffe_gpu" layer: "Twice" } }
layer { name: "loss" type: "EuclideanLoss" bottom: "twice" bottom: "target" top: "loss" }
"""


class Twice(caffe.Layer):
    """A Python layer written for NumPy, as every pycaffe layer is."""

    def setup(self, bottom, top):
        pass

    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].data.shape)

    def forward(self, bottom, top):
        assert isinstance(bottom[0].data, np.ndarray)
        top[0].data[...] = 2 * bottom[0].data

    def backward(self, top, propagate_down, bottom):
        bottom[0].diff[...] = 2 * top[0].diff


def build(tmp_path, gpu):
    path = tmp_path / "net.prototxt"
    path.write_text(NET)
    caffe.set_mode_gpu() if gpu else caffe.set_mode_cpu()
    caffe.set_random_seed(5)
    return caffe.Net(str(path), caffe.TRAIN)


def test_host_arrays_in_gpu_mode(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(__import__("pathlib").Path(__file__).parent))
    x = np.random.default_rng(1).standard_normal((4, 3)).astype(np.float32)
    t = np.random.default_rng(2).standard_normal((4, 2)).astype(np.float32)
    results = []
    for gpu in (False, True):
        net = build(tmp_path, gpu)
        data = net.blobs["data"].data
        assert isinstance(data, np.ndarray)
        data[...] = x  # written through the host copy, as pycaffe scripts do
        net.blobs["target"].data[...] = t
        net.params["ip"][0].data[...] = 0.5  # weight surgery from Python
        out = net.forward()
        assert isinstance(out["loss"], np.ndarray)
        net.backward()
        results.append((float(out["loss"]), net.blobs["data"].diff.copy(), net.params["ip"][0].diff.copy(),
                        net.blobs["twice"].data.copy()))
    (cpu_loss, cpu_dx, cpu_dw, cpu_twice), (gpu_loss, gpu_dx, gpu_dw, gpu_twice) = results
    assert gpu_loss == pytest.approx(cpu_loss, rel=1e-5)
    np.testing.assert_allclose(gpu_twice, cpu_twice, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(gpu_dx, cpu_dx, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(gpu_dw, cpu_dw, rtol=1e-5, atol=1e-6)


def test_engine_blob_keeps_host_and_device_in_step():
    import cupy

    caffe.set_mode_gpu()
    blob = Blob((2, 3))
    assert isinstance(blob.data, cupy.ndarray)
    blob.data[...] = cupy.arange(6, dtype=cupy.float32).reshape(2, 3)
    host = blob.host_data
    np.testing.assert_array_equal(host, np.arange(6).reshape(2, 3))
    host[0, 0] = 42  # a host write reaches the device on the engine's next access
    assert float(blob.data[0, 0]) == 42
    blob.data[1, 2] = -1  # and a device write reaches the host copy when it is asked for again
    assert blob.host_data[1, 2] == -1
    blob.reshape(4, 5)  # growing drops the mirror with the storage
    assert blob.host_data.shape == (4, 5)
