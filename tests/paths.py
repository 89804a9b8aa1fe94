"""Where the tests' outside material lives.

REFERENCE: BVLC Caffe's outputs, shipped in the repository (tests/caffe-reference),
so every test run checks parity with Caffe.

CONFIGS: the third-party prototxt corpus, which is not ours to ship. It is read
from `shared/caffe-configs` inside the checkout (a copy taken along to another
machine) or beside it; tests that need it skip with `needs_corpus` where it is absent.
"""

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "tests" / "caffe-reference"


def _shared(name):
    candidates = [ROOT / "shared" / name, ROOT.parent / "shared" / name]
    return next((p for p in candidates if p.is_dir()), candidates[-1])


CONFIGS = _shared("caffe-configs")
HAVE_CORPUS = CONFIGS.is_dir()
needs_corpus = pytest.mark.skipif(
    not HAVE_CORPUS, reason="the prototxt corpus (../shared/caffe-configs) is not beside the checkout")
