"""pycaffe's `caffe` module, served by this project's engine.

Existing pycaffe scripts run unchanged: `import caffe`, `caffe.Net(...)`,
`caffe.SGDSolver(...)`, `caffe.io.Transformer`, `caffe.NetSpec`, Python layers
deriving from `caffe.Layer`, `from caffe.proto import caffe_pb2`. Everything
here is a thin name mapping onto `engine`; see caffe/pycaffe.py for the Net
extras and the README's porting notes for the known differences.
"""

import logging
import sys
import time

import engine
from engine import TEST, TRAIN, backend
from engine.layers.base import Layer

from . import proto
from .pycaffe import Net, adopt
from .net_spec import NetSpec, layers, params, to_proto
from . import io
from . import draw
from . import coord_map
from .classifier import Classifier
from .detector import Detector

__version__ = "1.0.0"  # the pycaffe API level this package mirrors (BVLC Caffe 1.0)

_SOLVER_NAMES = ("Solver", "SGDSolver", "NesterovSolver", "AdaGradSolver", "RMSPropSolver", "AdaDeltaSolver",
                 "AdamSolver")
_wrapped_solvers = {}
_multiprocess = {"enabled": False}


def set_mode_cpu():
    backend.set_mode_cpu()


def set_mode_gpu():
    backend.set_mode_gpu()


def set_device(device_id):
    backend.set_device(device_id)


def set_random_seed(seed):
    backend.set_random_seed(seed)


def layer_type_list():
    """The registered layer types, sorted (Caffe's LayerRegistry::LayerTypeList)."""
    return engine.layer_type_list()


def has_nccl():
    """True when caffe.NCCL can work: CuPy's NCCL binding imports, a GPU answers, and the
    engine provides its NCCL driver (engine.parallel.NCCL)."""
    try:
        from cupy.cuda import nccl
    except Exception:  # CuPy or its NCCL binding missing or broken: no NCCL
        return False
    if not getattr(nccl, "available", True) or not backend.gpu_available():
        return False
    return _engine_nccl() is not None


def _engine_nccl():
    try:
        from engine.parallel import NCCL
    except ImportError:
        return None
    return NCCL


# -- data-parallel bookkeeping (pycaffe's solver_count / solver_rank) ------------------
def solver_count():
    return backend.solver_count()


def solver_rank():
    return backend.solver_rank()


def set_solver_count(count):
    backend.set_solver_rank(min(backend.solver_rank(), int(count) - 1), int(count))


def set_solver_rank(rank):
    backend.set_solver_rank(int(rank), backend.solver_count())


def set_multiprocess(value):
    _multiprocess["enabled"] = bool(value)


# -- logging (pycaffe's init_log / log) ------------------------------------------------
def init_log(level=0, std_err=False):
    """Print the engine's log as Caffe's glog lines on stderr; level 0 INFO, 1 WARNING, 2 ERROR."""
    from engine import log as engine_log

    levels = {0: logging.INFO, 1: logging.WARNING, 2: logging.ERROR}
    engine_log.setup(levels.get(int(level), logging.CRITICAL), stream=sys.stderr)


def log(message):
    logging.getLogger("engine").info(message)


class Timer:
    """pycaffe's Timer: start(), stop(), and `ms`, the milliseconds between them."""

    def __init__(self):
        self._started = None
        self._elapsed = 0.0

    def start(self):
        self._started = time.perf_counter()

    def stop(self):
        if self._started is not None:
            self._elapsed = time.perf_counter() - self._started
            self._started = None

    @property
    def ms(self):
        if self._started is not None:
            self.stop()
        return self._elapsed * 1000.0


# -- solvers: the engine's, whose nets get pycaffe's Net interface ----------------------
class _PycaffeSolver:
    """Mixed in before an engine solver class: once the engine has built the
    nets, they become caffe.Net objects (same objects, see pycaffe.adopt)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        _adopt_nets(self)


def _adopt_nets(solver):
    adopt(solver.net)
    for net in solver.test_nets:
        adopt(net)
    return solver


def _wrap_solver_class(base):
    if base not in _wrapped_solvers:
        _wrapped_solvers[base] = type(base.__name__, (_PycaffeSolver, base),
                                      {"__module__": __name__, "__doc__": base.__doc__})
    return _wrapped_solvers[base]


def get_solver(solver_file):
    """A solver of the type the file names (`type: "Adam"`, ...), as pycaffe's get_solver."""
    solver = engine.get_solver(solver_file)
    if not isinstance(solver, _PycaffeSolver):
        solver.__class__ = _wrap_solver_class(type(solver))
    return _adopt_nets(solver)


def __getattr__(name):
    # Solver classes load on first use, as `engine` loads them.
    if name in _SOLVER_NAMES:
        return _wrap_solver_class(getattr(engine, name))
    if name == "NCCL":
        nccl = _engine_nccl()
        if nccl is None:
            raise AttributeError("caffe.NCCL needs an NCCL driver in engine.parallel (multi-GPU training with "
                                 "CuPy), which this installation does not provide; has_nccl() is False")
        return nccl
    raise AttributeError(f"module 'caffe' has no attribute {name!r}")


__all__ = ["Classifier", "Detector", "Layer", "Net", "NetSpec", "TEST", "TRAIN", "Timer", "coord_map", "draw",
           "get_solver", "has_nccl", "init_log", "io", "layer_type_list", "layers", "log", "params", "proto",
           "set_device", "set_mode_cpu", "set_mode_gpu", "set_multiprocess", "set_random_seed",
           "set_solver_count", "set_solver_rank", "solver_count", "solver_rank", "to_proto",
           *_SOLVER_NAMES]
