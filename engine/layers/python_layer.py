"""Python: a layer written by the user, loaded as pycaffe's PythonLayer loads it.

`python_param { module: "m" layer: "C" param_str: "..." }` imports module `m`
(looked up on sys.path, to which the current directory and the PYTHONPATH
entries are added, as the caffe tool's embedded interpreter sees them) and
builds `m.C(layer_param)`. Before `setup` the object gets `param_str` and
`phase` (0 = TRAIN, 1 = TEST), exactly as pycaffe sets them; every call of
the layer contract is then handed to it. The user's class must subclass
`caffe.Layer`, which is `engine.layers.base.Layer`.
"""

import importlib
import os
import sys

from ..blob import BlobVec, host_blobs
from ..errors import CaffeError
from .base import Layer, register_layer


def extend_sys_path():
    """Make the current directory and PYTHONPATH importable (appended, never shadowing)."""
    entries = [os.getcwd()] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    for entry in entries:
        if entry not in sys.path:
            sys.path.append(entry)


def _forwarded(name):
    """An attribute that lives on the user's object once it exists, so the net
    and the user's code read and write the same value."""

    def get(self):
        impl = self.__dict__.get("impl")
        return getattr(impl, name) if impl is not None else self.__dict__[f"_own_{name}"]

    def put(self, value):
        impl = self.__dict__.get("impl")
        if impl is not None:
            setattr(impl, name, value)
        else:
            self.__dict__[f"_own_{name}"] = value

    return property(get, put)


@register_layer
class PythonLayer(Layer):
    type = "Python"

    blobs = _forwarded("blobs")
    param_propagate_down = _forwarded("param_propagate_down")

    def __init__(self, param, phase=None):
        super().__init__(param, phase)
        p = param.python_param
        self.check(bool(p.module), "python_param.module is required")
        self.check(bool(p.layer), "python_param.layer is required")
        self.param_str = p.param_str
        self.share_in_parallel = p.share_in_parallel
        cls = self._load_class(p.module, p.layer)
        try:
            impl = cls(param)
        except CaffeError:
            raise
        except Exception as exc:
            raise self.error(f"constructing {p.module}.{p.layer} failed: {type(exc).__name__}: {exc}") from exc
        # A user __init__ that skips Layer.__init__ still gets the attributes the net relies on.
        for attr, default in (("param", param), ("name", param.name), ("blobs", BlobVec()),
                              ("param_propagate_down", [])):
            if attr not in vars(impl):
                setattr(impl, attr, default)
        self.impl = impl

    def _load_class(self, module_name, class_name):
        extend_sys_path()
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise self.error(f"cannot import python_param.module '{module_name}': {exc} "
                             "(the module must be on PYTHONPATH or in the current directory)") from exc
        except CaffeError:
            raise
        except Exception as exc:
            raise self.error(f"importing module '{module_name}' failed: {type(exc).__name__}: {exc}") from exc
        cls = getattr(module, class_name, None)
        where = getattr(module, "__file__", None) or module_name
        if cls is None:
            raise self.error(f"module '{module_name}' ({where}) has no layer class '{class_name}'")
        if not (isinstance(cls, type) and issubclass(cls, Layer)):
            raise self.error(f"python_param.layer '{class_name}' in module '{module_name}' must be a class "
                             "derived from caffe.Layer (engine.layers.base.Layer)")
        return cls

    def setup(self, bottom, top):
        impl = self.impl
        impl.param_str = self.param_str
        impl.phase = int(self.phase)
        try:
            impl.setup(host_blobs(bottom), host_blobs(top))
        except Exception as exc:
            # pycaffe lets the user's own exception through; the note names the layer.
            exc.add_note(f"in setup of Python layer '{self.name}' ({self.param.python_param.module}."
                         f"{self.param.python_param.layer})")
            raise

    def __getattr__(self, name):
        # pycaffe's net.layers[i] is the user's object: scripts call their own methods on it.
        impl = self.__dict__.get("impl")
        if impl is None:
            raise AttributeError(name)
        return getattr(impl, name)

    # In GPU mode the user's code sees host copies (HostBlob), as Caffe's Python layers do.
    def reshape(self, bottom, top):
        self.impl.reshape(host_blobs(bottom), host_blobs(top))

    def forward(self, bottom, top):
        self.impl.forward(host_blobs(bottom), host_blobs(top))

    def backward(self, top, propagate_down, bottom):
        self.impl.backward(host_blobs(top), list(propagate_down), host_blobs(bottom))
