"""What the zoo knows about one net besides its layers: input size, solver, smoke-test size."""

from dataclasses import dataclass, field

from engine import caffe_pb2

from .deploy import make_deploy


@dataclass
class ZooNet:
    name: str
    title: str  # the paper or the Caffe model it follows
    train_val: caffe_pb2.NetParameter
    input_shape: tuple  # deploy Input: (N, C, H, W) as the published deploy net
    classifier: str  # the blob the deploy net's Softmax reads
    solver: caffe_pb2.SolverParameter
    # A smaller (batch, height/width) the same layers accept, for training a few
    # iterations in CI; None keeps the published size.
    smoke_size: tuple = (2, None)
    # Learning-rate factor for that run; None applies the linear scaling rule (see smoke.run_smoke).
    smoke_lr_scale: float = None
    notes: list = field(default_factory=list)

    @property
    def deploy(self):
        return make_deploy(self.train_val, self.input_shape, self.classifier)

    @property
    def train_val_path(self):
        return f"nets/{self.name}/train_val.prototxt"

    @property
    def deploy_path(self):
        return f"nets/{self.name}/deploy.prototxt"

    @property
    def solver_path(self):
        return f"solvers/{self.name}.prototxt"


def make_solver(name, base_lr, lr_policy, max_iter, test_iter, test_interval, momentum=0.9,
                weight_decay=0.0005, display=20, snapshot=10000, iter_size=1, **extra):
    """A SolverParameter for nets/<name>/train_val.prototxt, paths relative to the repository root."""
    solver = caffe_pb2.SolverParameter(net=f"nets/{name}/train_val.prototxt")
    solver.test_iter.append(test_iter)
    solver.test_interval = test_interval
    solver.base_lr = base_lr
    solver.lr_policy = lr_policy
    for key in ("gamma", "stepsize", "power", "average_loss"):
        if key in extra:
            setattr(solver, key, extra.pop(key))
    solver.stepvalue.extend(extra.pop("stepvalue", ()))
    if "test_initialization" in extra:
        solver.test_initialization = extra.pop("test_initialization")
    if extra:
        raise TypeError(f"unknown solver settings {sorted(extra)}")
    solver.display = display
    solver.max_iter = max_iter
    solver.momentum = momentum
    solver.weight_decay = weight_decay
    if iter_size != 1:
        solver.iter_size = iter_size
    solver.snapshot = snapshot
    solver.snapshot_prefix = f"snapshots/{name}"
    solver.solver_mode = caffe_pb2.SolverParameter.GPU
    return solver
