"""A loss written as a pycaffe Python layer: its gradient, then training with a solver and by hand."""

import sys
import textwrap

import numpy as np
import pytest

import caffe
from layer_check import check_gradient

MODULE = "pycaffe_test_halfsq_loss"
LAYER_SOURCE = '''
"""Half the mean squared distance between two bottoms, as a Python layer."""

import numpy as np

import caffe


class HalfSquaredLoss(caffe.Layer):
    def setup(self, bottom, top):
        if len(bottom) != 2:
            raise Exception("needs two bottoms: prediction and target")

    def reshape(self, bottom, top):
        if bottom[0].count != bottom[1].count:
            raise Exception("prediction and target must have the same count")
        self.delta = np.zeros_like(bottom[0].data)
        top[0].reshape(1)

    def forward(self, bottom, top):
        self.delta[...] = bottom[0].data - bottom[1].data
        top[0].data[...] = np.sum(self.delta ** 2) / bottom[0].num / 2.0

    def backward(self, top, propagate_down, bottom):
        for index, sign in ((0, 1.0), (1, -1.0)):
            if propagate_down[index]:
                bottom[index].diff[...] = sign * top[0].diff[0] * self.delta / bottom[index].num
'''

NET = """
name: "linreg" force_backward: false
layer { name: "data" type: "Input" top: "data" top: "target"
        input_param { shape { dim: 8 dim: 3 } shape { dim: 8 dim: 1 } } }
layer { name: "fit" type: "InnerProduct" bottom: "data" top: "fit"
        inner_product_param { num_output: 1 weight_filler { type: "constant" value: 0 } } }
layer { name: "loss" type: "Python" bottom: "fit" bottom: "target" top: "loss" loss_weight: 1
        python_param { module: "%s" layer: "HalfSquaredLoss" } }
""" % MODULE

TRUE_W = np.array([[0.5, -1.0, 2.0]])
TRUE_B = np.array([0.25])


@pytest.fixture(scope="module", autouse=True)
def layer_module(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pylayer")
    (folder / f"{MODULE}.py").write_text(textwrap.dedent(LAYER_SOURCE))
    sys.path.insert(0, str(folder))
    yield folder
    sys.path.remove(str(folder))
    sys.modules.pop(MODULE, None)


def dataset():
    x = np.random.default_rng(0).standard_normal((8, 3)).astype(np.float32)
    return x, (x @ TRUE_W.T + TRUE_B).astype(np.float32)


@pytest.mark.parametrize("shape", [(4, 1), (3, 2, 2)])
def test_python_loss_gradient(shape):
    rng = np.random.default_rng(1)
    text = f'type: "Python" python_param {{ module: "{MODULE}" layer: "HalfSquaredLoss" }} loss_weight: 1'
    check_gradient(text, [rng.standard_normal(shape), rng.standard_normal(shape)])


def test_python_loss_value_and_net_wiring(tmp_path):
    path = tmp_path / "net.prototxt"
    path.write_text(NET)
    net = caffe.Net(str(path), caffe.TRAIN)
    x, y = dataset()
    net.params["fit"][0].data[...] = TRUE_W
    net.params["fit"][1].data[...] = TRUE_B + 1.0  # every prediction off by one
    loss = net.forward(data=x, target=y)["loss"]
    np.testing.assert_allclose(loss, [0.5], rtol=1e-5)
    assert net.blob_loss_weights["loss"] == 1.0
    assert net.layers[2].type == "Python"


def test_trained_by_a_solver(tmp_path):
    solver_path = tmp_path / "solver.prototxt"
    solver_path.write_text(f'net_param {{ {NET} }} base_lr: 0.2 momentum: 0.9 lr_policy: "fixed" '
                           f'max_iter: 150 display: 0 snapshot_after_train: false snapshot_prefix: "{tmp_path}/s"')
    solver = caffe.SGDSolver(str(solver_path))
    x, y = dataset()
    solver.net.blobs["data"].data[...] = x
    solver.net.blobs["target"].data[...] = y
    solver.step(1)
    first = float(solver.net.blobs["loss"].data[0])
    solver.step(149)
    assert solver.iter == 150
    assert float(solver.net.blobs["loss"].data[0]) < 1e-4 * first
    np.testing.assert_allclose(solver.net.params["fit"][0].data, TRUE_W, atol=1e-2)
    np.testing.assert_allclose(solver.net.params["fit"][1].data, TRUE_B, atol=1e-2)


def test_trained_by_a_manual_sgd_loop(tmp_path):
    path = tmp_path / "net.prototxt"
    path.write_text(NET)
    net = caffe.Net(str(path), caffe.TRAIN)
    x, y = dataset()
    net.blobs["data"].data[...] = x
    net.blobs["target"].data[...] = y
    losses = []
    for _ in range(1000):
        losses.append(float(net.forward()["loss"][0]))
        net.clear_param_diffs()
        net.backward()
        for blob in net.params["fit"]:
            blob.data[...] -= 0.1 * blob.diff
    assert losses[-1] < 1e-4 * losses[0]
    np.testing.assert_allclose(net.params["fit"][0].data, TRUE_W, atol=1e-2)
