"""Shared plumbing for the command-line tools: repo on sys.path, one-line errors."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def run_tool(main):
    """Run `main()`; a user mistake (CaffeError, missing file) prints one line and exits 1."""
    from engine.errors import CaffeError

    try:
        code = main()
    except CaffeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
    sys.exit(code or 0)
