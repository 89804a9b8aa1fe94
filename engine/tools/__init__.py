"""The command-line tools: one module per tool, each with `main(argv=None)` returning the exit status.

The same `main` serves two ways of starting a tool: the scripts in tools/ are
thin launchers for a checkout, and `pip install .` installs console commands
(setup.cfg, [options.entry_points] console_scripts) that call it from any
folder. Adding a tool is a module here with `main`, a launcher tools/NAME, and
one console_scripts line; tests/tools/test_console_commands.py checks that
every launcher has its command and every command imports and answers --help.

caffe, train, test and time live in engine/solvers/cli.py, beside the
commands they run.
"""

import logging
import sys

from ..errors import CaffeError


def run(body, argv=None, prefix="error", logs=False):
    """Call `body(argv)` (argv without the program name; sys.argv[1:] when None) and return
    its exit status. A CaffeError, the user's mistake, becomes one line `PREFIX: message`
    on stderr and status 1; Ctrl-C status 130. With `logs`, INFO log records go to stderr
    as bare messages (the dataset tools' progress lines, as Caffe's)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if logs:
        logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        status = body(argv)
    except CaffeError as exc:
        print(f"{prefix}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{prefix}: interrupted", file=sys.stderr)
        return 130
    return status or 0
