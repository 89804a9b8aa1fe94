"""Image lists ("path label" per line), as convert_imageset and ImageData read them.

Caffe splits each line at its last space, so paths may contain spaces.
Blank lines are skipped. Caffe turns a line without a label into label 0
silently; we refuse it, naming the file and line.
"""

from ..errors import DataError


def _read_list_text(path):
    """The list file's text; a missing or non-UTF-8 file is one line naming it."""
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except OSError as exc:
        raise DataError(f"Failed to open image list {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not a text file ({exc})") from None


def read_image_list(path):
    """[(relative path, int label), ...] in file order."""
    lines = _read_list_text(path).splitlines()
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


def read_pair_list(path):
    """[(image path, label-image path), ...] from the segmentation forks' lists.

    SegNet's DenseImageData and HED's ImageLabelmapData read their lists as
    whitespace-separated tokens taken two at a time (so paths cannot hold
    spaces); a token left over at the end is an error here, naming the file.
    """
    tokens = _read_list_text(path).split()
    if len(tokens) % 2:
        raise DataError(f"{path}: '{tokens[-1]}' has no label image (expected 'image label_image' pairs)")
    return list(zip(tokens[0::2], tokens[1::2]))
