"""Write the name and size of every image in a list, as SSD's get_image_size.

Usage:
    get_image_size [--name_id_file FILE] ROOTFOLDER/ LISTFILE OUTFILE

LISTFILE is convert_annoset's list ("image annotation" lines). Each line
of OUTFILE is "name height width": the image file's name without folder
and extension (or, with --name_id_file, the id that file gives the name),
and its size as OpenCV reads it (EXIF orientation applied). DetectionEvaluate
and DetectionOutput take this file as name_size_file to map boxes back to
the original image sizes.
"""

import logging
from pathlib import Path

from . import run
from .. import gflags
from ..data import toolkit
from ..data.image import COLOR, read_image
from ..errors import DataError
from .convert_annoset import read_list

log = logging.getLogger("get_image_size")
FLAGS = [gflags.Flag("name_id_file", "", "A file which maps image_name to image_id.", str)]
USAGE = __doc__.strip()


def read_name_ids(path):
    ids = {}
    try:
        with open(path, encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except OSError as exc:
        raise DataError(f"Failed to open name_id_file: {path} ({exc.strerror or exc})") from None
    for number, line in enumerate(lines, 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2 or not fields[1].lstrip("-").isdigit():
            raise DataError(f"{path}:{number}: expected 'name id', got '{line}'")
        if fields[0] in ids:
            raise DataError(f"{path}:{number}: {fields[0]} is listed twice")
        ids[fields[0]] = int(fields[1])
    return ids


def _main(argv):
    flags, args = gflags.parse_or_help(argv, FLAGS, "get_image_size", USAGE)
    if len(args) != 3:
        raise gflags.FlagError("expected ROOTFOLDER/ LISTFILE OUTFILE (see --help)")
    root, list_file, out_file = args
    lines = read_list(list_file)
    log.info("A total of %d images.", len(lines))
    ids = read_name_ids(flags["name_id_file"]) if flags["name_id_file"] else None
    if ids is not None and len(ids) != len(lines):
        raise DataError(f"{flags['name_id_file']} names {len(ids)} images, the list {len(lines)}")
    out = []
    for count, (image, _) in enumerate(toolkit.progress(lines, len(lines), Path(out_file).name), 1):
        path = Path(root) / image
        height, width = read_image(str(path), COLOR).shape[:2]
        name = path.stem
        if ids is not None:
            if name not in ids:
                raise DataError(f"{flags['name_id_file']}: no id for {name}")
            name = ids[name]
        out.append(f"{name} {height} {width}\n")
        if count % 1000 == 0:
            log.info("Processed %d files.", count)
    try:
        Path(out_file).write_text("".join(out))
    except OSError as exc:
        raise DataError(f"Failed to open file: {out_file} ({exc.strerror or exc})") from None
    if len(lines) % 1000:
        log.info("Processed %d files.", len(lines))
    return 0


def main(argv=None):
    return run(_main, argv, prefix="get_image_size", logs=True)
