"""pycaffe's own test suite (BVLC Caffe's python/caffe/test) run against this project's `caffe`.

The suite is not vendored: point PYCAFFE_TEST_DIR at a folder holding its
files (BVLC Caffe's python/caffe/test, or copies of those files). Each file
runs in its own pytest process with `import caffe` resolving to this
repository, from a scratch copy laid out as in Caffe's tree, because
test_draw.py walks `../../../models` and `../../../examples` from its own
folder for prototxts: those come from the suite's own checkout when it is one,
else from PYCAFFE_PROTOTXT_ROOT, else from ../shared/caffe-configs/BVLC__caffe.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from paths import CONFIGS

ROOT = Path(__file__).resolve().parents[2]
SUITE_FILES = ("test_net.py", "test_net_spec.py", "test_solver.py", "test_layer_type_list.py", "test_io.py",
               "test_python_layer.py", "test_python_layer_with_param_str.py", "test_coord_map.py",
               "test_draw.py", "test_nccl.py")
SUITE_DIR = os.environ.get("PYCAFFE_TEST_DIR")

pytestmark = pytest.mark.skipif(
    not SUITE_DIR,
    reason="PYCAFFE_TEST_DIR is not set: point it at BVLC Caffe's python/caffe/test folder to run pycaffe's "
           "own tests against this package")


def _prototxt_root(suite):
    """A folder with BVLC Caffe's models/ and examples/ (the prototxts test_draw.py draws)."""
    candidates = []
    if len(suite.parents) > 2:
        candidates.append(suite.parents[2])
    if os.environ.get("PYCAFFE_PROTOTXT_ROOT"):
        candidates.append(Path(os.environ["PYCAFFE_PROTOTXT_ROOT"]))
    candidates.append(CONFIGS / "BVLC__caffe")
    for folder in candidates:
        if (folder / "models").is_dir() and (folder / "examples").is_dir():
            return folder
    return None


@pytest.fixture(scope="module")
def layout(tmp_path_factory):
    """<scratch>/python/caffe/test/<suite files>, with <scratch>/models and /examples linked."""
    suite = Path(SUITE_DIR).resolve()
    if not suite.is_dir():
        pytest.fail(f"PYCAFFE_TEST_DIR={SUITE_DIR} is not a folder")
    scratch = tmp_path_factory.mktemp("pycaffe")
    test_dir = scratch / "python" / "caffe" / "test"
    test_dir.mkdir(parents=True)
    for name in SUITE_FILES:
        if (suite / name).is_file():
            shutil.copy(suite / name, test_dir / name)
    prototxts = _prototxt_root(suite)
    if prototxts is not None:
        for sub in ("models", "examples"):
            (scratch / sub).symlink_to(prototxts / sub, target_is_directory=True)
    # An empty config of its own, so this repository's pytest settings do not apply to Caffe's files.
    (scratch / "pytest.ini").write_text("[pytest]\n")
    work = scratch / "work"
    work.mkdir()
    return scratch, test_dir, work


@pytest.mark.slow
@pytest.mark.parametrize("name", SUITE_FILES)
def test_pycaffe_suite_file(layout, name):
    scratch, test_dir, work = layout
    if not (test_dir / name).is_file():
        pytest.fail(f"{name} is missing from PYCAFFE_TEST_DIR={SUITE_DIR}")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    command = [sys.executable, "-m", "pytest", "-q", "-rfEs", "-p", "no:cacheprovider", "-p", "no:randomly",
               "-c", str(scratch / "pytest.ini"), "--rootdir", str(scratch), str(test_dir / name)]
    result = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True, timeout=600)
    output = (result.stdout + result.stderr)[-6000:]
    assert result.returncode == 0, f"pycaffe's {name} failed against this package:\n{output}"
