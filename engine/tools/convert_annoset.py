"""Convert images and their annotations to a database of AnnotatedDatum records, as SSD's convert_annoset.

Usage:
    convert_annoset [FLAGS] ROOTFOLDER/ LISTFILE DB_NAME

LISTFILE holds one image per line: "image annotation" for
--anno_type=detection (both relative to ROOTFOLDER; Pascal VOC XML with
--label_type=xml, names mapped to labels by --label_map_file), or
"image label" for --anno_type=classification. Images are read in color (BGR)
or, with --gray, grayscale; resized to --resize_width x --resize_height, or
so that the shorter side is at least --min_dim and the longer at most
--max_dim (aspect kept); stored raw, or with --encoded/--encode_type as an
image file (the file's own bytes when nothing changed and the extension
matches). Boxes are normalized by the image size the annotation states, so
they stay valid after resizing. Keys are "%08d_<image path>". An image that
cannot be read is skipped with a warning; an annotation file that does not
exist gives an image without boxes, as in SSD.
"""

import logging
from pathlib import Path

import numpy as np

from . import run
from .. import caffe_pb2, gflags
from ..data import toolkit
from ..data.annoset import name_to_label, read_label_map, read_voc_xml
from ..data.db import backend_name, open_writer
from ..data.image import COLOR, GRAY, encode_image, read_image, resize_linear
from ..errors import DataError

log = logging.getLogger("convert_annoset")

FLAGS = [
    gflags.Flag("gray", False, "When this option is on, treat images as grayscale ones", bool),
    gflags.Flag("shuffle", False, "Randomly shuffle the order of images and their labels", bool),
    gflags.Flag("backend", "lmdb", "The backend {lmdb, leveldb} for storing the result", str),
    gflags.Flag("anno_type", "classification", "The type of annotation {classification, detection}.", str),
    gflags.Flag("label_type", "xml", "The type of annotation file format.", str),
    gflags.Flag("label_map_file", "", "A file with LabelMap protobuf message.", str),
    gflags.Flag("check_label", False, "When this option is on, check that there is no duplicated "
                "name/label.", bool),
    gflags.Flag("min_dim", 0, "Minimum dimension images are resized to (keep same aspect ratio)", int),
    gflags.Flag("max_dim", 0, "Maximum dimension images are resized to (keep same aspect ratio)", int),
    gflags.Flag("resize_width", 0, "Width images are resized to", int),
    gflags.Flag("resize_height", 0, "Height images are resized to", int),
    gflags.Flag("check_size", False, "When this option is on, check that all the datum have the same size",
                bool),
    gflags.Flag("encoded", False, "When this option is on, the encoded image will be save in datum", bool),
    gflags.Flag("encode_type", "", "Optional: What type should we encode the image as ('png','jpg',...).",
                str),
]
USAGE = __doc__.strip()


def read_list(path):
    """[(image, label or annotation file), ...]: two whitespace-separated fields a line."""
    try:
        with open(path, encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except OSError as exc:
        raise DataError(f"Failed to open list file {path}: {exc.strerror or exc}") from None
    entries = []
    for number, line in enumerate(lines, 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2:
            raise DataError(f"{path}:{number}: expected 'image label' or 'image annotation', got '{line}'")
        entries.append((fields[0], fields[1]))
    return entries


def _scaled_size(height, width, min_dim, max_dim):
    """ReadImageToCVMat's min_dim/max_dim rule: (height, width) after the aspect-keeping scale."""
    small, large = min(height, width), max(height, width)
    scale = np.float32(1)
    if min_dim > 0 and small < min_dim:
        scale = np.float32(min_dim) / np.float32(small)
    if max_dim > 0 and int(scale * np.float32(large)) > max_dim:
        scale = np.float32(max_dim) / np.float32(large)
    if scale == 1:
        return height, width
    return int(np.rint(height * float(scale))), int(np.rint(width * float(scale)))


def _matches(name, encoding):
    ext = name.rpartition(".")[2].lower() if "." in name else name.lower()
    return ext == encoding.lower() or (encoding.lower() == "jpg" and ext == "jpeg")


def read_image_datum(path, name, label, flags, encoding, datum):
    """SSD's ReadImageToDatum into `datum`: the image's (height, width) as read, None when it cannot be."""
    is_color = not flags["gray"]
    try:
        image = read_image(path, COLOR if is_color else GRAY)
    except DataError as exc:
        log.warning("Could not open or find file %s (%s)", path, exc)
        return None
    original = image.shape[:2]
    height, width = flags["resize_height"], flags["resize_width"]
    min_dim, max_dim = flags["min_dim"], flags["max_dim"]
    if min_dim > 0 or max_dim > 0:
        new_h, new_w = _scaled_size(image.shape[0], image.shape[1], min_dim, max_dim)
        if (new_h, new_w) != image.shape[:2]:
            image = resize_linear(image, new_w, new_h)
    elif height > 0 and width > 0:
        image = resize_linear(image, width, height)
    datum.channels, datum.height, datum.width = image.shape[2], image.shape[0], image.shape[1]
    if encoding:
        unchanged = not (height or width or min_dim or max_dim)
        if (image.shape[2] == 3) == is_color and unchanged and _matches(name, encoding):
            datum.data = Path(path).read_bytes()
        else:
            datum.data = encode_image(image, encoding)
        datum.label = label
        datum.encoded = True
        return original
    datum.encoded = False
    datum.data = np.ascontiguousarray(image.transpose(2, 0, 1)).tobytes()
    datum.label = label
    return original


def make_record(root, image_name, second, flags, encoding, labels):
    """One AnnotatedDatum (None when the image cannot be read)."""
    anno_datum = caffe_pb2.AnnotatedDatum()
    path = root + image_name
    if labels is None:
        try:
            label = int(second)
        except ValueError:
            raise DataError(f"{image_name}: label '{second}' is not an integer "
                            f"(use --anno_type=detection for annotation files)") from None
        read = read_image_datum(path, image_name, label, flags, encoding, anno_datum.datum)
        return anno_datum if read else None
    original = read_image_datum(path, image_name, -1, flags, encoding, anno_datum.datum)
    if original is None:
        return None
    anno_datum.type = caffe_pb2.AnnotatedDatum.BBOX
    label_file = Path(root + second)
    if label_file.exists():
        read_voc_xml(str(label_file), original[0], original[1], labels, anno_datum)
    return anno_datum


def _main(argv):
    flags, args = gflags.parse_or_help(argv, FLAGS, "convert_annoset", USAGE)
    if len(args) != 3:
        raise gflags.FlagError("expected ROOTFOLDER/ LISTFILE DB_NAME (see --help)")
    root, list_file, db_path = args
    backend = backend_name(flags["backend"])
    if flags["anno_type"] not in ("classification", "detection"):
        raise gflags.FlagError(f"unknown --anno_type '{flags['anno_type']}' (classification or detection)")
    if flags["label_type"] != "xml":
        raise gflags.FlagError(f"--label_type '{flags['label_type']}' is not supported (use xml)")
    labels = None
    if flags["anno_type"] == "detection":
        if not flags["label_map_file"]:
            raise gflags.FlagError("--anno_type=detection needs --label_map_file")
        labels = name_to_label(read_label_map(flags["label_map_file"]), flags["check_label"],
                               flags["label_map_file"])
    lines = read_list(list_file)
    if flags["shuffle"]:
        log.info("Shuffling data")
        order = np.random.default_rng().permutation(len(lines))
        lines = [lines[i] for i in order]
    log.info("A total of %d images.", len(lines))
    if flags["encode_type"] and not flags["encoded"]:
        log.info("encode_type specified, assuming encoded=true.")
    encoded = flags["encoded"] or bool(flags["encode_type"])
    writer = toolkit.RecordWriter(open_writer(db_path, backend), log)
    data_size = None
    try:
        for line_id, (name, second) in toolkit.progress(enumerate(lines), len(lines), Path(db_path).name):
            encoding = flags["encode_type"]
            if encoded and not encoding:
                if "." not in name:
                    log.warning("Failed to guess the encoding of '%s'", name)
                encoding = name.rpartition(".")[2].lower()
            record = make_record(root, name, second, flags, encoding if encoded else "", labels)
            if record is None:
                log.warning("Failed to read %s", name)
                continue
            if flags["check_size"] and not record.datum.encoded:
                size = len(record.datum.data)
                if data_size is None:
                    data_size = size
                elif size != data_size:
                    raise DataError(f"{name}: Incorrect data field size {size} (expected {data_size})")
            writer.put(f"{line_id:08d}_{name}", record.SerializeToString())
    finally:
        writer.close()
    log.info("Processed %d files.", writer.count)
    return 0


def main(argv=None):
    return run(_main, argv, prefix="convert_annoset", logs=True)
