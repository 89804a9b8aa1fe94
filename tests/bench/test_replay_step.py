"""bench/replay_step.py: one step's kernel and product calls, recorded once and timed again one by one."""

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "replay_step.py"


def test_lenet_calls_are_recorded_and_timed():
    done = subprocess.run([sys.executable, str(SCRIPT), "--net", "lenet", "--threads", "1", "--repeat", "1"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("lenet: ") and "calls in one forward and backward" in lines[0]
    names = {line.split()[0] for line in lines[2:] if line and not line.startswith(("sum", " ", "slower"))}
    # LeNet's Winograd conv2 hands its chunks to the pool, its ReLU and softmax are compiled kernels.
    assert {"products.in_turns", "neuron.relu_forward", "softmax.forward"} <= names, names
    assert any(line.startswith("sum ") for line in lines)


def test_calls_inside_a_recorded_call_are_part_of_it():
    sys.path.insert(0, str(SCRIPT.parent))
    import replay_step

    calls = replay_step._Calls()
    inner = calls.wrap("inner", lambda value: value + 1)
    outer = calls.wrap("outer", lambda value: inner(value) * 2)
    assert outer(1) == 4 and inner(1) == 2
    assert [name for name, *_ in calls] == ["outer", "inner"]
    calls.closed = True  # replaying: the closures' wrapped calls are not recorded again
    assert outer(1) == 4
    assert len(calls) == 2
