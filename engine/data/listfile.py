"""Image lists ("path label" per line), as convert_imageset and ImageData read them.

Caffe splits each line at its last space, so paths may contain spaces.
Blank lines are skipped. Caffe turns a line without a label into label 0
silently; we refuse it, naming the file and line.
"""

from ..errors import DataError


def read_image_list(path):
    """[(relative path, int label), ...] in file order."""
    try:
        with open(path, encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except OSError as exc:
        raise DataError(f"Failed to open image list {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not a text file ({exc})") from None
    entries = []
    for number, line in enumerate(lines, 1):
        line = line.rstrip("\r")
        if not line.strip():
            continue
        name, space, label = line.rpartition(" ")
        if not space or not name:
            raise DataError(f"{path}:{number}: '{line}' has no label (expected 'path label')")
        try:
            entries.append((name, int(label)))
        except ValueError:
            raise DataError(f"{path}:{number}: label '{label}' is not an integer") from None
    return entries
