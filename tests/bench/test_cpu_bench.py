"""The CPU benchmark script keeps working: one short LeNet run, end to end.

Runs bench/cpu_train_step.py as a user would (its own child processes, the
consistency check of the torch model against ours, timing, the table), with
2 iterations and one thread so that it stays well under a minute (about 10 s
of CPU).
"""

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch", reason="PyTorch is not installed (pip install torch==2.13.0); the benchmark needs it")

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "cpu_train_step.py"


def test_lenet_benchmark_runs_and_prints_the_table(tmp_path):
    results = tmp_path / "results.json"
    # One BLAS thread: on a busy CI machine multi-threaded OpenBLAS spins and a short run takes minutes.
    done = subprocess.run([sys.executable, str(SCRIPT), "--nets", "lenet", "--iterations", "2", "--warmup", "1",
                           "--threads", "1", "--json", str(results)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert "closest to failing" in out and "torch float32" in out
    header = next(line for line in out.splitlines() if line.startswith("| net"))
    for column in ("ours step", "torch step", "step x", "ours MB", "torch MB", "mem x"):
        assert column in header
    row = next(line for line in out.splitlines() if line.startswith("| lenet"))
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    numbers = [float(cell) for cell in cells[1:]]
    assert all(value > 0 for value in numbers), row
    assert re.search(r"median of 2 iterations", out)
    assert results.exists()


def test_unknown_net_is_refused():
    done = subprocess.run([sys.executable, str(SCRIPT), "--nets", "alexnet9"], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2
    assert "unknown net(s): alexnet9" in done.stderr
