"""Upgrade a net prototxt to the current Caffe format.

Usage: upgrade_net_proto_text IN OUT

Reads the text NetParameter IN, applies Caffe's upgrade passes (V0 and V1
layers, old data-transformation fields, the input header, old BatchNorm param
specs) and writes the result as text to OUT. A file that is already current
is copied through unchanged in content. Non-fatal problems are printed as
warnings; a file that cannot be read, parsed or upgraded is reported on one
line and the tool exits with status 1.
"""

import sys
from pathlib import Path

from google.protobuf import text_format

from .. import caffe_pb2, upgrade
from ..errors import CaffeError


def fail(message):
    print(message, file=sys.stderr)
    return 1


def parse(path, message):
    """Parse text file `path` into `message`; errors become one line."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CaffeError(f"{path}: cannot read: "
                         f"{getattr(exc, 'strerror', None) or exc}") from None
    try:
        text_format.Merge(text, message)
    except text_format.ParseError as exc:
        line, column = exc.GetLine(), exc.GetColumn()
        detail = str(exc)
        prefix = f"{line}:{column} : "
        if detail.startswith(prefix):
            detail = detail[len(prefix):]
        where = f"{path}:{line}:{column}" if line else str(path)
        raise CaffeError(f"{where}: {detail}") from None
    return message


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv in (["-h"], ["--help"]):
        print(__doc__.strip())
        return 0
    if len(argv) != 2:
        print("usage: upgrade_net_proto_text IN OUT\n"
              "Upgrade a net prototxt IN to the current format and write it "
              "to OUT.", file=sys.stderr)
        return 1
    source, target = argv
    try:
        net = parse(source, caffe_pb2.NetParameter())
        if upgrade.net_needs_upgrade(net):
            notes = []
            net = upgrade.upgrade_net(net, source, notes)
            for note in notes:
                print(note)
            print(f"Upgraded {source} to the current NetParameter format")
        else:
            print(f"File already in latest proto format: {source}")
        try:
            Path(target).write_text(text_format.MessageToString(net),
                                    encoding="utf-8")
        except OSError as exc:
            raise CaffeError(f"{target}: cannot write: "
                             f"{exc.strerror or exc}") from None
    except CaffeError as exc:
        return fail(str(exc))
    print(f"Wrote upgraded NetParameter text proto to {target}")
    return 0

