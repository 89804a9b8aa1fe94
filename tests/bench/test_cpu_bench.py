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
    assert re.search(r"^(PASS|MISS)  lenet step, 1 thread\(s\): \d+\.\d\dx torch \(at most 1\.0x\)$", out, re.M)
    assert re.search(r"^(PASS|MISS)  lenet peak memory, 1 thread\(s\)", out, re.M)
    assert re.search(r"^\d of 2 targets met$", out, re.M)
    assert results.exists()


def test_target_checks_cover_every_thread_count_memory_and_the_speedup():
    sys.path.insert(0, str(SCRIPT.parent))
    import cpu_train_step

    def row(name, ours_step, torch_step, ours_mb=100.0, torch_mb=100.0):
        return name, {"step": ours_step, "peak_mb": ours_mb}, {"step": torch_step, "peak_mb": torch_mb}

    tables = {2: [row("lenet", 9.0, 10.0), row("caffenet", 600.0, 500.0, 160.0)],
              1: [row("lenet", 10.0, 10.0), row("caffenet", 1000.0, 1100.0)]}
    lines = cpu_train_step.target_checks(tables)
    assert "PASS  lenet step, 2 thread(s): 0.90x torch (at most 1.0x)" in lines
    assert "MISS  caffenet step, 2 thread(s): 1.20x torch (at most 1.0x)" in lines
    assert "PASS  lenet step, 1 thread(s): 1.00x torch (at most 1.0x)" in lines
    assert "MISS  caffenet peak memory, 2 thread(s): 1.60x torch (at most 1.5x)" in lines
    assert "PASS  caffenet ours, 2 threads against 1: 1.67x faster (at least 1.6x)" in lines
    assert len(lines) == 4 + 4 + 1  # no ResNet-18 measured: no speedup line for it


def test_unknown_net_is_refused():
    done = subprocess.run([sys.executable, str(SCRIPT), "--nets", "alexnet9"], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2
    assert "unknown net(s): alexnet9" in done.stderr
