"""A Caffe-compatible deep-learning engine on NumPy (CPU) and CuPy (GPU).

This module is the pycaffe-style API: `engine.Net(model, engine.TEST,
weights=...)`, `engine.set_mode_cpu()`, `engine.get_solver(path)`, ...
"""

import logging

from . import _environment  # noqa: F401 (first: BLAS settings read when NumPy loads)
from . import caffe_pb2
from .backend import set_device, set_mode_cpu, set_mode_gpu, set_random_seed, set_tf32
from .blob import Blob
from .errors import CaffeError
from .layers import layer_types
from .net import TEST, TRAIN, Net

logging.getLogger("engine").addHandler(logging.NullHandler())

_SOLVER_NAMES = {"get_solver", "SGDSolver", "NesterovSolver", "AdaGradSolver", "RMSPropSolver",
                 "AdaDeltaSolver", "AdamSolver", "Solver"}


def layer_type_list():
    """Registered layer type names, as pycaffe's caffe.layer_type_list()."""
    return layer_types()


def __getattr__(name):
    # Solvers load on first use so that `import engine` stays light.
    if name in _SOLVER_NAMES:
        from . import solvers

        return getattr(solvers, name)
    raise AttributeError(f"module 'engine' has no attribute {name!r}")


__all__ = ["Blob", "CaffeError", "Net", "TEST", "TRAIN", "caffe_pb2", "layer_type_list", "set_device",
           "set_mode_cpu", "set_mode_gpu", "set_random_seed", "set_tf32"] + sorted(_SOLVER_NAMES)
