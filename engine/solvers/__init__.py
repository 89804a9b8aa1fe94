"""Caffe's solvers: the training loop (base.py), the SGD pipeline (sgd.py), the other
update rules (adaptive.py) and the learning-rate policies (lr_policy.py).

`get_solver(path_or_param)` picks the class by the solver's `type` (after the
legacy `solver_type` upgrade), as pycaffe's caffe.get_solver does; the classes
can also be built directly, as caffe.SGDSolver(path) and friends.
"""

from ..errors import SolverError
from .adaptive import AdaDeltaSolver, AdaGradSolver, AdamSolver, NesterovSolver, RMSPropSolver
from .base import Solver
from .netsetup import read_solver_param
from .sgd import SGDSolver

SOLVERS = {cls.type: cls for cls in (SGDSolver, NesterovSolver, AdaGradSolver, RMSPropSolver, AdaDeltaSolver,
                                     AdamSolver)}


def solver_class(type_name):
    try:
        return SOLVERS[type_name]
    except KeyError:
        known = ", ".join(sorted(SOLVERS))
        raise SolverError(f"Unknown solver type: {type_name} (known types: {known})") from None


def get_solver(source):
    """A solver of the type the definition names, from a prototxt path or a SolverParameter."""
    param = read_solver_param(source)
    return solver_class(param.type)(param)


__all__ = ["AdaDeltaSolver", "AdaGradSolver", "AdamSolver", "NesterovSolver", "RMSPropSolver", "SGDSolver",
           "SOLVERS", "Solver", "get_solver", "solver_class"]
