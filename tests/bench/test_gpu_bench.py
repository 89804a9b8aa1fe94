"""The GPU benchmark script keeps working: its command line, a CPU dry run, and a short GPU run.

bench/gpu_train_step.py runs on a GPU machine that CI may not have; the
`--device cpu` dry run drives the same parent, children, check, table and
JSON on NumPy and torch's CPU, so that everything but the CUDA calls is
tested everywhere. The `gpu` test is the issue's smoke run on a real GPU.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "gpu_train_step.py"


def _run(*arguments, timeout=600):
    return subprocess.run([sys.executable, str(SCRIPT), *arguments], capture_output=True, text=True,
                          timeout=timeout)


def _table_row(out, name):
    header = next(line for line in out.splitlines() if line.startswith("| net"))
    row = next(line for line in out.splitlines() if line.startswith(f"| {name} "))
    cells = lambda line: [cell.strip() for cell in line.strip().strip("|").split("|")]  # noqa: E731
    return dict(zip(cells(header), cells(row)))


def test_help_describes_every_flag():
    done = _run("--help", timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    for flag in ("--nets", "--iterations", "--warmup", "--json", "--skip-check", "--cudnn-benchmark",
                 "--batch-scale", "--device"):
        assert flag in done.stdout
    assert "caffenet 256 at 227x227" in done.stdout
    assert "--worker" not in done.stdout


def test_unknown_net_is_refused_without_a_traceback():
    done = _run("--nets", "caffenet,alexnet9", timeout=120)
    assert done.returncode == 2
    assert "unknown net(s): alexnet9" in done.stderr
    assert "known: caffenet, vgg16, resnet50, mobilenet_v1" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout


def test_cpu_dry_run_goes_through_check_timing_table_and_json(tmp_path):
    """MobileNet at batch 1: grouped convolutions, BatchNorm + Scale, and layer names holding "/"."""
    pytest.importorskip("torch", reason="PyTorch is not installed; the benchmark compares against it")
    results = tmp_path / "results.json"
    done = _run("--device", "cpu", "--nets", "mobilenet_v1", "--batch-scale", "0.004", "--iterations", "2",
                "--warmup", "1", "--json", str(results))
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert "DRY RUN" in done.stdout
    assert "mobilenet_v1: check, ours against torch" in done.stdout and ": ok" in done.stdout
    row = _table_row(done.stdout, "mobilenet_v1")
    assert row["batch"] == "1"
    assert float(row["ours img/s"]) > 0 and float(row["torch img/s"]) > 0
    assert row["verdict"] in ("PASS", "MISS")
    record = json.loads(results.read_text())["nets"]["mobilenet_v1"]
    assert record["check"]["ok"]
    assert len(record["ours"]["step_ms"]) == 2 and len(record["torch"]["step_ms"]) == 2


@pytest.mark.gpu
def test_gpu_smoke_run_times_both_frameworks(tmp_path):
    torch = pytest.importorskip("torch", reason="PyTorch is not installed; the benchmark compares against it")
    if not torch.cuda.is_available():
        pytest.skip(f"torch {torch.__version__} has no CUDA device")
    results = tmp_path / "results.json"
    done = _run("--nets", "caffenet", "--batch-scale", "0.0625", "--iterations", "2", "--warmup", "1",
                "--json", str(results), timeout=1800)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    row = _table_row(done.stdout, "caffenet")
    assert row["batch"] == "16"
    assert float(row["ours img/s"]) > 0 and float(row["torch img/s"]) > 0
    assert float(row["ours peak MiB"]) > 0 and float(row["torch peak MiB"]) > 0
    data = json.loads(results.read_text())
    record = data["nets"]["caffenet"]
    assert record["ours"]["images_per_s"] > 0 and record["torch"]["images_per_s"] > 0
    assert record["verdict"] in ("PASS", "MISS")
    assert data["environment"].get("gpu")
