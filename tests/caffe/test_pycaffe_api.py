"""The `caffe` package's surface: names, the proto module, Net extras, solvers' nets."""

import sys
import types

import numpy as np
import pytest

import caffe
import engine
from caffe.proto import caffe_pb2

DEPLOY = """
name: "affine"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 4 dim: 3 } } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
        inner_product_param { num_output: 2 weight_filler { type: "gaussian" std: 1 }
                              bias_filler { type: "gaussian" std: 1 } } }
layer { name: "relu" type: "ReLU" bottom: "ip" top: "out" }
"""

TRAIN = """
name: "regress" force_backward: true
layer { name: "data" type: "Input" top: "data" top: "target"
        input_param { shape { dim: 4 dim: 3 } shape { dim: 4 dim: 2 } } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
        inner_product_param { num_output: 2 weight_filler { type: "gaussian" std: 1 } } }
layer { name: "loss" type: "EuclideanLoss" bottom: "ip" bottom: "target" top: "loss" }
"""


@pytest.fixture
def deploy(tmp_path):
    path = tmp_path / "deploy.prototxt"
    path.write_text(DEPLOY)
    return str(path)


def affine(net, x):
    w, b = net.params["ip"][0].data, net.params["ip"][1].data
    return np.maximum(x @ w.T + b, 0)


def test_proto_is_the_engines_module():
    import caffe.proto.caffe_pb2 as imported

    assert caffe_pb2 is engine.caffe_pb2 and imported is engine.caffe_pb2
    assert caffe.proto.caffe_pb2.BlobProto is engine.caffe_pb2.BlobProto
    assert isinstance(caffe_pb2.NetParameter(), engine.caffe_pb2.NetParameter)
    assert (caffe.TRAIN, caffe.TEST) == (caffe_pb2.TRAIN, caffe_pb2.TEST) == (0, 1)


def test_layer_type_list_is_sorted_and_complete():
    types_ = caffe.layer_type_list()
    assert types_ == sorted(types_) == engine.layer_type_list()
    for name in ("InnerProduct", "Python", "Input", "SoftmaxWithLoss"):
        assert name in types_
    assert caffe.Layer is engine.layers.base.Layer


def test_has_nccl_needs_the_binding_and_a_gpu(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)
    assert caffe.has_nccl() is False
    cuda = types.ModuleType("cupy.cuda")
    cuda.nccl = types.ModuleType("cupy.cuda.nccl")
    cupy = types.ModuleType("cupy")
    cupy.cuda = cuda
    monkeypatch.setitem(sys.modules, "cupy", cupy)
    monkeypatch.setitem(sys.modules, "cupy.cuda", cuda)
    monkeypatch.setitem(sys.modules, "cupy.cuda.nccl", cuda.nccl)
    monkeypatch.setattr(engine.backend, "gpu_available", lambda: False)
    assert caffe.has_nccl() is False
    monkeypatch.setattr(engine.backend, "gpu_available", lambda: True)
    driver = types.ModuleType("engine.parallel")
    monkeypatch.setitem(sys.modules, "engine.parallel", driver)
    assert caffe.has_nccl() is False  # no NCCL driver in the engine
    driver.NCCL = type("NCCL", (), {})
    assert caffe.has_nccl() is True and caffe.NCCL is driver.NCCL
    cuda.nccl.available = False
    assert caffe.has_nccl() is False


def test_constructors_and_weights(deploy, tmp_path):
    caffe.set_random_seed(3)
    net = caffe.Net(deploy, caffe.TEST)
    assert isinstance(net, engine.Net) and isinstance(net, caffe.Net)
    weights = str(tmp_path / "w.caffemodel")
    net.save(weights)
    for other in (caffe.Net(deploy, weights, caffe.TEST), caffe.Net(deploy, caffe.TEST, weights=weights)):
        for name in net.params:
            for mine, theirs in zip(net.params[name], other.params[name]):
                np.testing.assert_array_equal(mine.data, theirs.data)


def test_random_seed_makes_fillers_repeat(deploy):
    caffe.set_random_seed(11)
    first = caffe.Net(deploy, caffe.TEST).params["ip"][0].data.copy()
    caffe.set_random_seed(11)
    second = caffe.Net(deploy, caffe.TEST).params["ip"][0].data.copy()
    np.testing.assert_array_equal(first, second)


def test_private_accessors(deploy):
    net = caffe.Net(deploy, caffe.TEST)
    assert [net._blob_names[i] for i in net._inputs] == net.inputs == ["data"]
    assert [net._blob_names[i] for i in net._outputs] == net.outputs == ["out"]
    assert [net._blob_names[i] for i in net._top_ids(1)] == ["ip"]
    assert [net._blob_names[i] for i in net._bottom_ids(2)] == ["ip"]
    assert [layer.type for layer in net.layers] == ["Input", "InnerProduct", "ReLU"]
    assert net._blob_loss_weights == [0.0, 0.0, 0.0]
    x = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)
    net.blobs["data"].data[...] = x
    net._forward(0, len(net.layers) - 1)
    np.testing.assert_allclose(net.blobs["out"].data, affine(net, x), rtol=1e-5, atol=1e-6)


def test_layer_callbacks_run_in_order(deploy):
    net = caffe.Net(deploy, caffe.TEST)
    seen = []
    net.before_forward(lambda i: seen.append(("bf", i)))
    net.after_forward(lambda i: seen.append(("af", i)))
    net.forward()
    assert seen == [("bf", 0), ("af", 0), ("bf", 1), ("af", 1), ("bf", 2), ("af", 2)]
    seen.clear()
    net.before_backward(lambda i: seen.append(("bb", i)))
    net.after_backward(lambda i: seen.append(("ab", i)))
    net.backward()
    assert seen == [("bb", 2), ("ab", 2), ("bb", 1), ("ab", 1), ("bb", 0), ("ab", 0)]


def test_blob_properties(deploy):
    blob = caffe.Net(deploy, caffe.TEST).blobs["data"]
    assert (blob.count, blob.num, blob.channels, blob.height, blob.width) == (12, 4, 3, 1, 1)
    blob.reshape(2, 3, 5, 7)
    assert tuple(blob.shape) == (2, 3, 5, 7) and blob.data.shape == (2, 3, 5, 7)
    assert isinstance(blob.data, np.ndarray) and blob.data.dtype == np.float32


@pytest.mark.parametrize("count", [3, 4, 10])
def test_forward_all_batches_pads_and_trims(deploy, count):
    net = caffe.Net(deploy, caffe.TEST)
    x = np.random.default_rng(count).standard_normal((count, 3)).astype(np.float32)
    outs = net.forward_all(data=x, blobs=["ip"])
    assert set(outs) == {"out", "ip"}
    assert outs["out"].shape == (count, 2)
    np.testing.assert_allclose(outs["out"], affine(net, x), rtol=1e-5, atol=1e-6)
    # The results are copies: running the net again leaves them alone.
    kept = outs["out"].copy()
    net.forward(data=np.zeros((4, 3), np.float32))
    np.testing.assert_array_equal(outs["out"], kept)


def test_forward_backward_all(tmp_path):
    path = tmp_path / "deploy.prototxt"
    path.write_text(DEPLOY.replace('name: "affine"', 'name: "affine" force_backward: true'))
    caffe.set_random_seed(5)
    net = caffe.Net(str(path), caffe.TEST)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((6, 3)).astype(np.float32)
    top = rng.standard_normal((6, 2)).astype(np.float32)
    outs, diffs = net.forward_backward_all(data=x, out=top)
    w, b = net.params["ip"][0].data, net.params["ip"][1].data
    pre = x @ w.T + b
    np.testing.assert_allclose(outs["out"], np.maximum(pre, 0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(diffs["data"], (top * (pre > 0)) @ w, rtol=1e-5, atol=1e-5)
    assert diffs["data"].shape == (6, 3)


def test_solver_nets_get_pycaffe_interface(tmp_path):
    solver_text = ('net_param { ' + TRAIN + ' } base_lr: 0.1 lr_policy: "fixed" max_iter: 5 '
                   f'snapshot_after_train: false snapshot_prefix: "{tmp_path}/snap"')
    path = tmp_path / "solver.prototxt"
    path.write_text(solver_text)
    for solver in (caffe.SGDSolver(str(path)), caffe.get_solver(str(path))):
        assert isinstance(solver.net, caffe.Net)
        assert isinstance(solver, engine.SGDSolver)
        assert isinstance(solver, caffe.SGDSolver)
        assert hasattr(solver.net, "forward_all")


def test_timer_measures_milliseconds():
    timer = caffe.Timer()
    timer.start()
    sum(range(10000))
    timer.stop()
    assert 0 <= timer.ms < 10000


def test_modules_are_reachable():
    for name in ("io", "draw", "coord_map", "proto", "NetSpec", "layers", "params", "to_proto",
                 "Classifier", "Detector", "Layer"):
        assert hasattr(caffe, name), name
    with pytest.raises(AttributeError):
        caffe.NoSuchThing  # noqa: B018
