"""Test-wide setup: helper modules importable, shared reference paths, GPU marker."""

import os
import sys
from pathlib import Path

# Tests check correctness on small arrays: one BLAS thread avoids spinning threads
# on a busy 2-core machine. Set before NumPy is first imported.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
# The CPU kernels' first build (engine/cpu/warmup.py) is waited for, in this process and in the
# tools the tests start, rather than left running in the background after them.
os.environ.setdefault("ENGINE_CPU_COMPILE", "wait")

import pytest

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
sys.path.insert(0, str(TESTS))
sys.path.insert(0, str(ROOT))

from layer_check import gpu_present  # noqa: E402


def pytest_collection_modifyitems(config, items):
    skip_gpu = pytest.mark.skip(reason="needs CuPy and an NVIDIA GPU")
    if not gpu_present():
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip_gpu)


@pytest.fixture(autouse=True)
def _cpu_mode_and_seed():
    """Every test starts in CPU mode with a fixed seed."""
    import engine

    engine.set_mode_cpu()
    engine.set_random_seed(1701)
    yield
    engine.set_mode_cpu()


@pytest.fixture(params=["cpu", pytest.param("gpu", marks=pytest.mark.gpu)])
def mode(request):
    """Run a test once on the CPU and, where CuPy and a GPU are present, once on the GPU."""
    import engine

    if request.param == "gpu":
        engine.set_mode_gpu()
    return request.param

