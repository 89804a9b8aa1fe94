"""The Python layer: loading the user's module, pycaffe's attributes, delegation, errors."""

import sys
import textwrap
import uuid

import numpy as np
import pytest

from engine import caffe_pb2
from engine.errors import NetError
from engine.formats import parse_text
from engine.net import Net

USER_MODULE = '''
import numpy as np
from engine.layers.base import Layer


class ScaleByParam(Layer):
    """y = x * w * k, k from param_str, w a learned blob of shape (channels,)."""

    def setup(self, bottom, top):
        if len(bottom) != 1:
            raise Exception("Need one bottom")
        self.k = float(self.param_str)
        self.seen_phase = self.phase
        self.blobs.add_blob(bottom[0].shape[1])
        self.blobs[0].data[...] = np.arange(1, bottom[0].shape[1] + 1)

    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].shape)

    def forward(self, bottom, top):
        top[0].data[...] = bottom[0].data * self.blobs[0].data * self.k

    def backward(self, top, propagate_down, bottom):
        self.seen_propagate_down = propagate_down
        self.blobs[0].diff[...] += (top[0].diff * bottom[0].data).sum(axis=0) * self.k
        if propagate_down[0]:
            bottom[0].diff[...] = top[0].diff * self.blobs[0].data * self.k


class SquareLoss(Layer):
    def setup(self, bottom, top):
        pass

    def reshape(self, bottom, top):
        top[0].reshape(1)

    def forward(self, bottom, top):
        top[0].data[0] = (bottom[0].data ** 2).sum() / 2

    def backward(self, top, propagate_down, bottom):
        bottom[0].diff[...] = bottom[0].data * top[0].diff[0]


class NotALayer:
    pass


class Broken(Layer):
    def setup(self, bottom, top):
        raise Exception("Need two tops")
'''


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """A freshly named user module in tmp_path, importable through sys.path."""
    name = f"user_layers_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(USER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    sys.modules.pop(name, None)


def net_text(module, layer="ScaleByParam", param_str="2.5", extra=""):
    return textwrap.dedent(f"""
    force_backward: true
    layer {{ name: "x" type: "Input" top: "x" input_param {{ shape {{ dim: 2 dim: 3 }} }} }}
    layer {{ name: "py" type: "Python" bottom: "x" top: "y"
             python_param {{ module: "{module}" layer: "{layer}" param_str: "{param_str}" }} }}
    {extra}
    """)


def build(text, phase="TRAIN"):
    return Net(parse_text(text, caffe_pb2.NetParameter()), phase)


@pytest.mark.parametrize("phase, value", [("TRAIN", 0), ("TEST", 1)])
def test_python_layer_forward_backward_and_attributes(user_module, phase, value):
    loss = f'layer {{ name: "loss" type: "Python" bottom: "y" top: "loss" loss_weight: 1 ' \
           f'python_param {{ module: "{user_module}" layer: "SquareLoss" }} }}'
    net = build(net_text(user_module, extra=loss), phase)
    impl = net.layer_dict["py"].impl
    assert impl.param_str == "2.5" and impl.k == 2.5
    assert impl.seen_phase == value and type(impl.seen_phase) is int
    assert net.layer_dict["py"].type == "Python"
    x = np.array([[1.0, -2.0, 0.5], [3.0, 1.0, -1.0]], dtype=np.float32)
    net.blobs["x"].data[...] = x
    out = net.forward()
    w = np.array([1.0, 2.0, 3.0])
    y = x * w * 2.5
    np.testing.assert_allclose(net.blobs["y"].data, y, rtol=1e-6)
    np.testing.assert_allclose(out["loss"], (y ** 2).sum() / 2, rtol=1e-5)
    # The learned blob is the net's parameter, shared with the user's object.
    assert net.params["py"][0] is impl.blobs[0]
    net.backward()
    np.testing.assert_allclose(net.blobs["x"].diff, y * w * 2.5, rtol=1e-5)
    np.testing.assert_allclose(net.params["py"][0].diff, (y * x).sum(axis=0) * 2.5, rtol=1e-5)
    assert impl.seen_propagate_down == [True]


def test_python_layer_found_through_current_directory_and_pythonpath(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", ".")])
    for folder, how in ((tmp_path / "cwd", "cwd"), (tmp_path / "pp", "pythonpath")):
        folder.mkdir()
        name = f"user_{how}_{uuid.uuid4().hex[:8]}"
        (folder / f"{name}.py").write_text(USER_MODULE)
        if how == "cwd":
            monkeypatch.chdir(folder)
        else:
            monkeypatch.setenv("PYTHONPATH", str(folder))
        try:
            net = build(net_text(name), "TEST")
            assert net.layer_dict["py"].impl.k == 2.5
        finally:
            sys.modules.pop(name, None)


@pytest.mark.parametrize("module, layer, message", [
    ("no_such_module_here_xyz", "ScaleByParam", "cannot import python_param.module 'no_such_module_here_xyz'"),
    (None, "Missing", "has no layer class 'Missing'"),
    (None, "NotALayer", "must be a class derived from caffe.Layer"),
])
def test_python_layer_errors_name_the_layer(user_module, module, layer, message):
    with pytest.raises(NetError, match=message) as info:
        build(net_text(module or user_module, layer=layer))
    assert "layer 'py' (Python)" in str(info.value)


def test_user_setup_exception_propagates_with_a_note(user_module):
    # pycaffe hands the user's own exception back to the script; the note names the layer.
    with pytest.raises(Exception, match="Need two tops") as info:
        build(net_text(user_module, layer="Broken"))
    assert not isinstance(info.value, NetError)
    assert any("Python layer 'py'" in note for note in info.value.__notes__)


def test_python_layer_requires_module_and_layer():
    text = """
    layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 1 } } }
    layer { name: "py" type: "Python" bottom: "x" top: "y" python_param { layer: "A" } }
    """
    with pytest.raises(NetError, match="python_param.module is required"):
        build(text)
