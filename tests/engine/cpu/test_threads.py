"""engine/cpu's settings: threads from OMP_NUM_THREADS, sleeping idle threads, the off switch, the disk cache."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from engine import cpu

ROOT = Path(__file__).resolve().parents[3]

PROBE = """
import json, os, numpy as np
from engine import cpu
usable = cpu.usable(np.zeros(3, np.float32))
result = {"usable": usable, "policy": os.environ.get("OMP_WAIT_POLICY")}
if usable:
    import numba
    cpu.kernels("neuron")
    result["threads"] = numba.get_num_threads()
    result["cores"] = numba.config.NUMBA_NUM_THREADS
print(json.dumps(result))
"""


def _probe(**env):
    environment = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")}
    environment["ENGINE_CPU_COMPILE"] = "wait"
    environment.update(env)
    done = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, env=environment, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_threads_follow_omp_num_threads():
    one = _probe(OMP_NUM_THREADS="1")
    assert one["usable"] and one["threads"] == 1
    every = _probe()
    assert every["threads"] == every["cores"]
    assert _probe(OMP_NUM_THREADS="64")["threads"] == every["cores"]


def test_idle_threads_sleep_unless_told_otherwise():
    assert _probe(OMP_NUM_THREADS="1")["policy"] == "PASSIVE"
    assert _probe(OMP_NUM_THREADS="1", OMP_WAIT_POLICY="ACTIVE")["policy"] == "ACTIVE"


def test_off_switch():
    assert not _probe(ENGINE_CPU_KERNELS="0")["usable"]


def test_usable_only_for_numpy_floats():
    from engine import cpu

    cpu.ready(np.float32, wait=True)
    cpu.ready(np.float64, wait=True)
    assert cpu.usable(np.zeros(2, np.float32), np.zeros(2))
    assert not cpu.usable(np.zeros(2, np.int32))
    assert not cpu.usable(np.zeros(2, np.float16))
    assert not cpu.usable([1.0, 2.0])
    previous = cpu.set_enabled(False)
    try:
        assert not cpu.usable(np.zeros(2))
    finally:
        cpu.set_enabled(previous)


def test_set_num_threads():
    import numba

    from engine import cpu

    cpu.kernels("neuron")
    before = numba.get_num_threads()
    try:
        cpu.set_num_threads(1)
        assert numba.get_num_threads() == 1
        cpu.set_num_threads(1000)
        assert numba.get_num_threads() == numba.config.NUMBA_NUM_THREADS
    finally:
        cpu.set_num_threads(before)


def test_compiled_kernels_are_cached_on_disk():
    """A second process loads the kernels it uses from engine/cpu/__pycache__ instead of compiling."""
    import pytest

    from engine import cpu

    if os.environ.get("NUMBA_CACHE_DIR"):
        pytest.skip("NUMBA_CACHE_DIR moves the cache")

    x = np.linspace(-1, 1, 10, dtype=np.float32)
    cpu.kernels("neuron").relu_forward(x, 0.0, np.empty_like(x))
    cache = Path(cpu.__file__).parent / "__pycache__"
    index = list(cache.glob("neuron.relu_forward-*.nbi"))
    assert index, "no cache index written"



def _refuse(array):
    raise ValueError("refused")


def test_light_kernels_run_on_one_thread_below_min_parallel(monkeypatch):
    """A light kernel on a small array runs on the calling thread alone (waking an idle core costs more than
    the pass), on every kernel thread from MIN_PARALLEL elements; the thread count is restored after, also
    when the kernel raises."""
    numba = pytest.importorskip("numba")
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("one core: nothing to narrow")
    from engine.cpu import threads

    monkeypatch.setattr(threads, "MIN_PARALLEL", 100)
    kernel = threads.light(numba.njit(lambda array: numba.get_num_threads()))
    failing = threads.light(numba.njit(_refuse))
    previous = numba.get_num_threads()
    numba.set_num_threads(2)
    try:
        assert kernel(np.zeros(99)) == 1 and numba.get_num_threads() == 2
        assert kernel(np.zeros(100)) == 2
        with pytest.raises(ValueError):
            failing(np.zeros(5))
        assert numba.get_num_threads() == 2
    finally:
        numba.set_num_threads(previous)
    assert all(hasattr(cpu.kernels(module), name) and hasattr(getattr(cpu.kernels(module), name), "kernel")
               for module, name in [("neuron", "relu_forward"), ("channels", "scale"), ("sgd", "update"),
                                    ("layout", "rows_to_blob")])
