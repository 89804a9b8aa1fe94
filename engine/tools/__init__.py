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

import functools
import logging
import os
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
    except BrokenPipeError:
        return _pipe_closed()
    return status or 0


def _pipe_closed():
    """The reader of our output went away (`caffe --help | head`): stop quietly with SIGPIPE's
    status, as a C++ tool would, and point stdout at /dev/null so the exit flush cannot fail."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # stdout replaced by something without a descriptor
        pass
    return 141


def quiet_on_closed_pipe(main):
    """Decorate a command's main so that output piped into a reader that stops early ends quietly."""
    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except BrokenPipeError:
            return _pipe_closed()
    return wrapper
