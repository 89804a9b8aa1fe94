"""The fused GPU update of momentum SGD gives the CPU pipeline's numbers bit for bit."""

import numpy as np
import pytest

import engine
from engine.solvers import get_solver

pytestmark = pytest.mark.gpu

NET = """
name: "tiny"
layer { name: "data" type: "Input" top: "data" top: "label"
        input_param { shape { dim: 4 dim: 6 } shape { dim: 4 } } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
        param { lr_mult: 1 decay_mult: 1 } param { lr_mult: 2 decay_mult: 0 }
        inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
"""


@pytest.mark.parametrize("extra", ['regularization_type: "L2"', 'regularization_type: "L1"', "iter_size: 2",
                                   "weight_decay: 0"])
def test_gpu_update_equals_cpu_update(tmp_path, extra):
    (tmp_path / "net.prototxt").write_text(NET)
    text = (f'net: "{tmp_path}/net.prototxt" base_lr: 0.1 momentum: 0.9 weight_decay: 0.01 lr_policy: "fixed" '
            f'max_iter: 10 display: 0 {extra}')
    if "weight_decay: 0" in extra:
        text = text.replace("weight_decay: 0.01 ", "")
    (tmp_path / "solver.prototxt").write_text(text)
    results = []
    for mode in ("cpu", "gpu"):
        engine.set_mode_gpu() if mode == "gpu" else engine.set_mode_cpu()
        solver = get_solver(str(tmp_path / "solver.prototxt"))
        params = solver.net.learnable_params
        state = np.random.default_rng(5)
        for _ in range(3):  # three updates, so history and weights both matter
            for blob in params:
                blob.data = state.standard_normal(blob.shape).astype(np.float32)
                blob.diff = state.standard_normal(blob.shape).astype(np.float32)
            solver.apply_update()
        results.append([(engine.backend.to_host(b.data).copy(), engine.backend.to_host(h).copy())
                        for b, h in zip(params, solver.history)])
    for (cpu_w, cpu_h), (gpu_w, gpu_h) in zip(*results):
        np.testing.assert_array_equal(gpu_w, cpu_w)
        np.testing.assert_array_equal(gpu_h, cpu_h)
