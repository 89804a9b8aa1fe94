"""Where the shared reference material lives: `shared/` inside the checkout when
it is there (a copy taken along to another machine), else beside the checkout."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _shared(name):
    candidates = [ROOT / "shared" / name, ROOT.parent / "shared" / name]
    return next((p for p in candidates if p.is_dir()), candidates[-1])


REFERENCE = _shared("caffe-reference")
CONFIGS = _shared("caffe-configs")
