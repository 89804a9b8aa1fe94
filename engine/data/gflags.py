"""Command-line flags spelled as Caffe's tools (gflags) accept them.

`-flag value`, `--flag value`, `-flag=value`, `--flag=value`; boolean flags
also as `--flag`, `--noflag`, `--flag=true|false|1|0`. Positional arguments
may come before or after flags; `--` ends the flags. Used by the dataset
tools in tools/, which print a FlagError as one line and exit 1.
"""

import sys

from ..errors import CaffeError

_TRUE = {"true", "t", "yes", "y", "1"}
_FALSE = {"false", "f", "no", "n", "0"}


class FlagError(CaffeError):
    """A flag that is unknown or has a bad value."""


class Flag:
    def __init__(self, name, kind, default, help_text):
        self.name, self.kind, self.default, self.help = name, kind, default, help_text

    def convert(self, text):
        if self.kind is bool:
            lowered = text.lower()
            if lowered in _TRUE:
                return True
            if lowered in _FALSE:
                return False
            raise FlagError(f"flag --{self.name}: '{text}' is not a boolean")
        if self.kind is int:
            try:
                return int(text)
            except ValueError:
                raise FlagError(f"flag --{self.name}: '{text}' is not an integer") from None
        return text


def parse(argv, flags, usage):
    """(values by flag name, positional arguments) from argv[1:].

    `flags` is a list of Flag. `--help` prints `usage` and the flags, then exits 0.
    """
    known = {flag.name: flag for flag in flags}
    values = {flag.name: flag.default for flag in flags}
    positional = []
    args = list(argv[1:])
    index = 0
    while index < len(args):
        arg = args[index]
        index += 1
        if arg == "--":
            positional.extend(args[index:])
            break
        if not arg.startswith("-") or arg == "-":
            positional.append(arg)
            continue
        name, has_value, value = arg.lstrip("-").partition("=")
        if name in ("help", "h", "helpfull"):
            print(help_text(usage, flags))
            sys.exit(0)
        flag = known.get(name)
        if flag is None and name.startswith("no") and known.get(name[2:], Flag("", None, 0, "")).kind is bool:
            if has_value:
                raise FlagError(f"flag --{name} takes no value")
            values[name[2:]] = False
            continue
        if flag is None:
            raise FlagError(f"unknown command line flag '{name}' (see --help)")
        if has_value:
            values[name] = flag.convert(value)
        elif flag.kind is bool:
            values[name] = True
        else:
            if index >= len(args):
                raise FlagError(f"flag '{name}' is missing its argument")
            values[name] = flag.convert(args[index])
            index += 1
    return values, positional


def help_text(usage, flags):
    lines = [usage.rstrip(), "", "Flags:"]
    for flag in flags:
        default = repr(flag.default) if flag.kind is str else str(flag.default).lower() \
            if flag.kind is bool else str(flag.default)
        lines.append(f"  --{flag.name}  {flag.help} (default: {default})")
    return "\n".join(lines)
