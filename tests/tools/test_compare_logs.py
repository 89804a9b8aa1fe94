"""tools/compare_logs: Caffe's own training log against ours for the same run, side by side and overlaid."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from engine.tools import compare_logs

ROOT = Path(__file__).resolve().parents[2]
from paths import REFERENCE  # noqa: E402


def figures(out):
    """{figure: [A, B, B - A]} from the side-by-side table."""
    rows = {}
    for line in out.split("\n\n")[0].splitlines()[1:]:
        name, values = re.split(r"\s{2,}", line.strip(), maxsplit=1)
        rows[name] = values.split()
    return rows


@pytest.fixture(scope="module")
def our_sgd_log(tmp_path_factory):
    """Our log of Caffe's sgd_step case: its solver, net, data and initial weights, 8 iterations as Caffe ran."""
    work = tmp_path_factory.mktemp("sgd") / "case"
    shutil.copytree(REFERENCE / "solvers" / "sgd_step", work)
    with open(work / "ours.log", "w") as log:
        result = subprocess.run([sys.executable, str(ROOT / "tools" / "train"), "--solver", "solver.prototxt",
                                 "--weights", "init.caffemodel", "--iterations", "8"], cwd=work, stderr=log,
                                timeout=300)
    assert result.returncode == 0
    return work


def test_caffe_and_our_log_side_by_side(our_sgd_log, capsys):
    work = our_sgd_log
    status = compare_logs.main([str(work / "caffe.log"), str(work / "ours.log"), "--output", str(work / "cmp.png")])
    out, err = capsys.readouterr()
    assert status == 0, err
    rows = figures(out)
    assert rows["last iteration"] == ["7", "7", "0"]
    assert rows["learning rate"] == ["0.0125", "0.0125", "0"]
    assert rows["train loss"][0] == "2.03434"  # Caffe's figure, as its log prints it
    assert abs(float(rows["train loss"][1]) - 2.03434) < 1e-4
    gaps = dict(re.findall(r"^  (train loss|learning rate)\s+(\S+) at iteration \d+ \(8 compared\)$", out, re.M))
    assert float(gaps["learning rate"]) == 0 and float(gaps["train loss"]) < 1e-4
    assert out.rstrip().endswith(f"Wrote {work / 'cmp.png'}")
    assert (work / "cmp.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def synthetic_log(iterations, accuracy):
    """A glog-format log with a test pass and a training step at each iteration."""
    lines = ["I1203 10:00:00.000000 1 solver.cpp:1] Solving net"]
    for second, it in enumerate(iterations, 1):
        stamp = f"I1203 10:00:{second:02d}.000000 1 solver.cpp:2] "
        lines += [stamp + f"Iteration {it}, Testing net (#0)",
                  stamp + f"    Test net output #0: accuracy = {accuracy}",
                  stamp + f"Iteration {it} (0 iter/s, 0s/1 iters), loss = 2.5",
                  stamp + "    Train net output #0: loss = 2.5 (* 1 = 2.5 loss)",
                  stamp + f"Iteration {it}, lr = 0.01"]
    return "\n".join(lines) + "\n"


def test_test_outputs_and_no_common_iteration(tmp_path, capsys):
    (tmp_path / "a.log").write_text(synthetic_log([0, 10], 0.5))
    (tmp_path / "b.log").write_text(synthetic_log([20, 30], 0.75))
    assert compare_logs.main([str(tmp_path / "a.log"), str(tmp_path / "b.log")]) == 0
    out = capsys.readouterr().out
    rows = figures(out)
    assert rows["test accuracy"] == ["0.5", "0.75", "0.25"]
    assert rows["last iteration"] == ["10", "30", "20"]
    assert out.rstrip().endswith("the logs report no iteration in common")
    (tmp_path / "c.log").write_text(synthetic_log([0, 10], 0.625))
    assert compare_logs.main([str(tmp_path / "a.log"), str(tmp_path / "c.log")]) == 0
    out = capsys.readouterr().out
    assert "  test accuracy   0.125 at iteration 0 (2 compared)" in out


def test_unreadable_logs_are_one_line(tmp_path, capsys):
    (tmp_path / "empty.log").write_text("nothing here\n")
    assert compare_logs.main([str(tmp_path / "missing.log"), str(tmp_path / "empty.log")]) == 1
    assert capsys.readouterr().err.strip() == f"compare_logs: log file not found: {tmp_path / 'missing.log'}"
    assert compare_logs.main([str(tmp_path / "empty.log"), str(tmp_path / "empty.log")]) == 1
    assert capsys.readouterr().err.strip() == f"compare_logs: no train or test outputs found in {tmp_path / 'empty.log'}"
