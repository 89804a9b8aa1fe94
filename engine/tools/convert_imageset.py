"""Convert a set of images to a database of Datum records, as Caffe's convert_imageset.

Usage:
    convert_imageset [FLAGS] ROOTFOLDER/ LISTFILE DB_NAME

LISTFILE holds "path label" lines (the label after the last space); each
image ROOTFOLDER + path is read in color (BGR) or, with --gray, grayscale,
resized with OpenCV's bilinear rule when both --resize_height and
--resize_width are set, and stored under the key "%08d_<path>" (its line
number in the possibly shuffled list). With --encoded (or --encode_type) the
record holds an encoded image: the file's own bytes when no conversion is
needed and its extension matches, else the image re-encoded. An image that
cannot be read is skipped with a warning, as Caffe does.
"""

import logging
from pathlib import Path

import numpy as np

from . import run
from .. import gflags
from ..data import toolkit
from ..data.datum import array_to_datum, encoded_datum
from ..data.db import backend_name, open_writer
from ..data.image import COLOR, GRAY, encode_image, read_image, resize_linear
from ..data.listfile import read_image_list
from ..errors import DataError

log = logging.getLogger("convert_imageset")

FLAGS = [
    gflags.Flag("gray", False, "When this option is on, treat images as grayscale ones", bool),
    gflags.Flag("shuffle", False, "Randomly shuffle the order of images and their labels", bool),
    gflags.Flag("backend", "lmdb", "The backend {lmdb, leveldb} for storing the result", str),
    gflags.Flag("resize_width", 0, "Width images are resized to", int),
    gflags.Flag("resize_height", 0, "Height images are resized to", int),
    gflags.Flag("check_size", False, "When this option is on, check that all the datum have the "
                "same size", bool),
    gflags.Flag("encoded", False, "When this option is on, the encoded image will be save in datum", bool),
    gflags.Flag("encode_type", "", "Optional: What type should we encode the image as ('png','jpg',...).", str),
]
USAGE = __doc__.strip()


def _extension(name):
    return name.rpartition(".")[2].lower() if "." in name else name.lower()


def _matches(name, encoding):
    ext, encoding = _extension(name), encoding.lower()
    return ext == encoding or (encoding == "jpg" and ext == "jpeg")


def make_datum(path, name, label, flags, encoding):
    """Caffe's ReadImageToDatum; None when the image cannot be read."""
    is_color = not flags["gray"]
    try:
        image = read_image(path, COLOR if is_color else GRAY)
    except DataError as exc:
        log.warning("Could not open or find file %s (%s)", path, exc)
        return None
    height, width = flags["resize_height"], flags["resize_width"]
    if height > 0 and width > 0:
        image = resize_linear(image, width, height)
    if encoding:
        if (image.shape[2] == 3) == is_color and not height and not width and _matches(name, encoding):
            return encoded_datum(Path(path).read_bytes(), label)
        return encoded_datum(encode_image(image, encoding), label)
    return array_to_datum(np.ascontiguousarray(image.transpose(2, 0, 1)), label, mark_raw=True)


def _main(argv):
    flags, args = gflags.parse_or_help(argv, FLAGS, "convert_imageset", USAGE)
    if len(args) != 3:
        raise gflags.FlagError("expected ROOTFOLDER/ LISTFILE DB_NAME (see --help)")
    root, list_file, db_path = args
    backend = backend_name(flags["backend"])
    if flags["encode_type"] and not flags["encoded"]:
        log.info("encode_type specified, assuming encoded=true.")
    lines = read_image_list(list_file)
    if flags["shuffle"]:
        log.info("Shuffling data")
        order = np.random.default_rng().permutation(len(lines))
        lines = [lines[i] for i in order]
    log.info("A total of %d images.", len(lines))
    encoded = flags["encoded"] or bool(flags["encode_type"])
    writer = toolkit.RecordWriter(open_writer(db_path, backend), log)
    data_size = None
    try:
        for line_id, (name, label) in toolkit.progress(enumerate(lines), len(lines), Path(db_path).name):
            encoding = flags["encode_type"]
            if encoded and not encoding:
                encoding = _extension(name)
            datum = make_datum(root + name, name, label, flags, encoding if encoded else "")
            if datum is None:
                continue
            if flags["check_size"]:
                size = len(datum.data) if not datum.encoded else None
                if data_size is None:
                    data_size = size
                elif size != data_size:
                    raise DataError(f"{name}: Incorrect data field size {size} (expected {data_size})")
            writer.put(f"{line_id:08d}_{name}", datum.SerializeToString())
    finally:
        writer.close()
    log.info("Processed %d files.", writer.count)
    return 0


def main(argv=None):
    return run(_main, argv, prefix="convert_imageset", logs=True)
