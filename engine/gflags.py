"""Command-line flags spelled as gflags accepts them, so Caffe's command lines work unchanged:
`-solver x`, `--solver x`, `--solver=x`, `-solver=x`; booleans also as `--name` / `--noname`.
Positional arguments may come before or after flags; `--` ends the flags. Every tool parses
its flags here; a FlagError is printed by the tool as one line.
"""

import sys
from dataclasses import dataclass

from .errors import CaffeError


@dataclass
class Flag:
    name: str
    default: object
    help: str
    kind: type = str


class FlagError(CaffeError):
    """A command line gflags would refuse."""


def _convert(flag, text):
    if flag.kind is bool:
        lowered = text.lower()
        if lowered in ("1", "true", "t", "yes", "y"):
            return True
        if lowered in ("0", "false", "f", "no", "n"):
            return False
        raise FlagError(f"illegal value '{text}' specified for bool flag '{flag.name}'")
    if flag.kind is int:
        try:
            return int(text)
        except ValueError:
            raise FlagError(f"illegal value '{text}' specified for int32 flag '{flag.name}'") from None
    return text


def parse(argv, flags):
    """(values by name, positional arguments) from `argv` (without the program name)."""
    table = {flag.name: flag for flag in flags}
    values = {flag.name: flag.default for flag in flags}
    given = set()
    positional = []
    index = 0
    while index < len(argv):
        arg = argv[index]
        index += 1
        if arg == "--":
            positional.extend(argv[index:])
            break
        if not arg.startswith("-") or arg == "-":
            positional.append(arg)
            continue
        name, has_value, text = arg.lstrip("-").partition("=")
        flag = table.get(name)
        if flag is None and name.startswith("no") and not has_value and name[2:] in table \
                and table[name[2:]].kind is bool:
            values[name[2:]] = False
            given.add(name[2:])
            continue
        if flag is None:
            raise FlagError(f"unknown command line flag '{name}'")
        if not has_value:
            if flag.kind is bool:
                values[name] = True
                given.add(name)
                continue
            if index >= len(argv):
                raise FlagError(f"flag '{name}' is missing its argument")
            text = argv[index]
            index += 1
        values[name] = _convert(flag, text)
        given.add(name)
    values["_given"] = given
    return values, positional


def parse_or_help(argv, flags, program, summary):
    """`parse`, but `-h`/`--help` prints the usage and exits 0 first (for the simple tools)."""
    if any(arg in ("-h", "--help", "-help", "--helpfull") for arg in argv):
        print(usage(program, summary, flags))
        sys.exit(0)
    return parse(argv, flags)


def usage(program, summary, flags):
    """Help text in gflags' spirit: the summary, then one line per flag with its default."""
    lines = [summary, "", "Flags:"]
    for flag in flags:
        default = f'"{flag.default}"' if flag.kind is str else str(flag.default)
        lines.append(f"  -{flag.name} ({flag.help}) type: {flag.kind.__name__} default: {default}")
    return "\n".join(lines)
