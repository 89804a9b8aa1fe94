"""engine/_environment.py: the process settings made at import, and the user's own left alone."""

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROBE = ("import engine, engine._environment as e, os; "
         "print(e.KEEPS_FREED_MEMORY, os.environ.get('OPENBLAS_THREAD_TIMEOUT'))")


def _probe(**env):
    base = {k: v for k, v in os.environ.items()
            if k not in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "ENGINE_KEEP_FREED_MEMORY",
                         "OPENBLAS_THREAD_TIMEOUT")}
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, cwd=ROOT,
                          env=dict(base, **env), check=True)
    return done.stdout.split()


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_freed_memory_is_kept_for_the_next_iteration_unless_the_user_says_otherwise():
    assert _probe() == ["True", "4"]
    assert _probe(MALLOC_TRIM_THRESHOLD_="131072")[0] == "False"
    assert _probe(MALLOC_MMAP_THRESHOLD_="131072")[0] == "False"
    assert _probe(ENGINE_KEEP_FREED_MEMORY="0")[0] == "False"


def test_a_blas_timeout_the_user_set_stays():
    assert _probe(OPENBLAS_THREAD_TIMEOUT="9")[1] == "9"
