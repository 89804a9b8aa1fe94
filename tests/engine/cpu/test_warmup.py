"""engine/cpu/warmup.py and the background compile: the layers never wait for numba.

The build covers every kernel signature a training step asks for (else a
user's first iteration would compile in the foreground); until it is done
the NumPy path serves; a failed build falls back to NumPy with a warning.
"""

import subprocess
import sys

import numpy as np
from google.protobuf import text_format

import engine
from engine import caffe_pb2, cpu
from engine.cpu import warmup

NET = """
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 4 dim: 3 dim: 12 dim: 12 } } }
layer { name: "label" type: "Input" top: "label" input_param { shape { dim: 4 } } }
layer { name: "conv3" type: "Convolution" bottom: "data" top: "conv3"
        convolution_param { num_output: 32 kernel_size: 3 pad: 1 weight_filler { type: "xavier" } } }
layer { name: "bn" type: "BatchNorm" bottom: "conv3" top: "conv3" }
layer { name: "scale" type: "Scale" bottom: "conv3" top: "conv3" scale_param { bias_term: true } }
layer { name: "relu" type: "ReLU" bottom: "conv3" top: "conv3" }
layer { name: "dw" type: "Convolution" bottom: "conv3" top: "dw"
        convolution_param { num_output: 32 group: 32 kernel_size: 3 pad: 1 weight_filler { type: "xavier" } } }
layer { name: "conv5" type: "Convolution" bottom: "dw" top: "conv5"
        convolution_param { num_output: 6 kernel_size: 5 pad: 2 weight_filler { type: "xavier" } } }
layer { name: "pool_max" type: "Pooling" bottom: "conv5" top: "pool_max"
        pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
layer { name: "norm" type: "LRN" bottom: "pool_max" top: "norm" lrn_param { local_size: 3 } }
layer { name: "strided" type: "Convolution" bottom: "norm" top: "strided"
        convolution_param { num_output: 6 kernel_size: 1 stride: 2 weight_filler { type: "xavier" } } }
layer { name: "pool_ave" type: "Pooling" bottom: "strided" top: "pool_ave"
        pooling_param { pool: AVE kernel_size: 2 stride: 1 } }
layer { name: "fc" type: "InnerProduct" bottom: "pool_ave" top: "fc"
        inner_product_param { num_output: 5 weight_filler { type: "xavier" } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "fc" bottom: "label" top: "loss" }
"""


def _signatures():
    """{(module, kernel): set of compiled argument types} over the kernel modules loaded so far."""
    found = {}
    for name, module in cpu._MODULES.items():
        for key, value in vars(module).items():
            if hasattr(value, "signatures") and hasattr(value, "py_func"):
                found[(name, key)] = set(value.signatures)
    return found


def _train(tmp_path, steps):
    solver_param = caffe_pb2.SolverParameter()
    text_format.Parse('base_lr: 0.01 momentum: 0.9 weight_decay: 0.0005 lr_policy: "fixed" max_iter: 100 '
                      'display: 0 snapshot: 0 type: "SGD"', solver_param)
    text_format.Parse(NET, solver_param.net_param)
    solver = engine.get_solver(solver_param)
    rng = np.random.default_rng(0)
    solver.net.blobs["data"].data[...] = rng.standard_normal(solver.net.blobs["data"].shape)
    solver.net.blobs["label"].data[...] = rng.integers(0, 5, 4)
    solver.step(steps)
    return solver


def test_the_build_covers_every_kernel_a_training_step_calls(tmp_path):
    """After warm(), a training step through every kernel-using layer compiles nothing new."""
    assert cpu.ready(np.float32, wait=True) and cpu.ready(np.float64, wait=True)
    warmup.warm(np.float32)
    warmup.warm(np.float64)  # loaded from numba's cache: the build wrote them there
    before = _signatures()
    _train(tmp_path, 2)
    after = _signatures()
    new = {key: sorted(map(str, after[key] - before.get(key, set()))) for key in after
           if after[key] - before.get(key, set())}
    assert not new, f"signatures the warm-up does not compile: {new}"
    assert set(after) == set(before)


def test_first_use_compiles_in_the_background(tmp_path, monkeypatch):
    """Without the marker, usable() says False (NumPy serves) until the background build has written it."""
    marker = tmp_path / "marker.ready"
    monkeypatch.setattr(cpu, "_marker", lambda name: marker)
    monkeypatch.setattr(cpu, "_READY", {})
    monkeypatch.setattr(cpu, "_BUILDS", {})
    monkeypatch.setenv("ENGINE_CPU_COMPILE", "background")
    x = np.zeros(3, np.float32)
    assert not cpu.usable(x)  # the build takes seconds even from numba's cache
    build = cpu._BUILDS["float32"]
    assert build.poll() is None
    assert not cpu.usable(x)
    build.wait(timeout=300)
    assert marker.exists() and cpu.usable(x)
    assert cpu._BUILDS["float32"] is build  # one build per dtype


def test_a_layer_switching_to_the_kernels_between_forward_and_backward(tmp_path, monkeypatch):
    """Pooling's backward follows the path its forward took (their MAX masks differ)."""
    from layer_check import build_layer

    text = "type: 'Pooling' pooling_param { pool: MAX kernel_size: 3 stride: 2 }"
    x = np.random.default_rng(1).standard_normal((2, 3, 9, 9)).astype(np.float32)
    assert cpu.ready(np.float32, wait=True)
    outcomes = []
    for switch in (False, True):
        layer, bottom, top = build_layer(text, [x], dtype=np.float32)
        monkeypatch.setitem(cpu._READY, np.dtype(np.float32), False)
        layer.run_forward(bottom, top)
        if switch:
            monkeypatch.setitem(cpu._READY, np.dtype(np.float32), True)
        top[0].diff[...] = 1
        layer.run_backward(top, [True], bottom)
        outcomes.append(bottom[0].diff.copy())
    np.testing.assert_array_equal(outcomes[0], outcomes[1])


def test_failed_build_falls_back_to_numpy(tmp_path, monkeypatch, caplog):
    missing = tmp_path / "marker.ready"
    monkeypatch.setattr(cpu, "_marker", lambda name: missing)
    monkeypatch.setattr(cpu, "_READY", {})
    monkeypatch.setattr(cpu, "_BUILDS", {})

    def failing_build(name, marker):
        with open(marker.with_suffix(".log"), "w") as log:
            return subprocess.Popen([sys.executable, "-c", "import sys; print('no compiler'); sys.exit(3)"],
                                    stdout=log, stderr=subprocess.STDOUT)

    monkeypatch.setattr(cpu, "_start_build", failing_build)
    assert not cpu.ready(np.float32, wait=True)
    assert not cpu.usable(np.zeros(3, np.float32))
    assert "failed to compile (exit 3)" in caplog.text and "no compiler" in caplog.text


def test_concurrent_builds_compile_once(tmp_path):
    """A second build started while the first holds the lock finds the marker and returns at once."""
    marker = tmp_path / "m.ready"
    marker.with_suffix(".lock").touch()
    assert warmup.main(["float32", str(marker)]) == 0 and marker.exists()
    stamp = marker.stat().st_mtime_ns
    assert warmup.main(["float32", str(marker)]) == 0
    assert marker.stat().st_mtime_ns == stamp  # not written again: nothing was compiled
