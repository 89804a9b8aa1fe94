"""IDX files (the MNIST format): big-endian magic, dimension sizes, then uint8 values.

Gzipped files are recognised by their first two bytes. Caffe's
convert_mnist_data checks the magic numbers 2051 (images) and 2049 (labels).
"""

import gzip
import struct

import numpy as np

from ..errors import DataError

IMAGES_MAGIC = 2051
LABELS_MAGIC = 2049


def _read_bytes(path):
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise DataError(f"{path}: corrupt gzip data ({exc})") from None
    return raw


def read_idx(path, magic):
    """The uint8 array in an IDX file whose magic number must be `magic`."""
    raw = _read_bytes(path)
    axes = {IMAGES_MAGIC: 3, LABELS_MAGIC: 1}[magic]
    header = 4 + 4 * axes
    found = struct.unpack(">i", raw[:4])[0] if len(raw) >= 4 else None
    if found != magic:
        kind = "image" if magic == IMAGES_MAGIC else "label"
        raise DataError(f"{path}: Incorrect {kind} file magic ({found}, expected {magic})")
    if len(raw) < header:
        raise DataError(f"{path}: too short for an IDX header")
    shape = struct.unpack(f">{axes}i", raw[4:header])
    count = int(np.prod(shape, dtype=np.int64))
    if len(raw) - header < count:
        raise DataError(f"{path}: truncated: the header promises {count} values, "
                        f"the file holds {len(raw) - header}")
    return np.frombuffer(raw, dtype=np.uint8, count=count, offset=header).reshape(shape)


def read_mnist(images_path, labels_path):
    """(images (N, rows, cols) uint8, labels (N,) uint8) with Caffe's checks."""
    images = read_idx(images_path, IMAGES_MAGIC)
    labels = read_idx(labels_path, LABELS_MAGIC)
    if images.shape[0] != labels.shape[0]:
        raise DataError(f"num_items != num_labels ({images.shape[0]} images in {images_path}, "
                        f"{labels.shape[0]} labels in {labels_path})")
    return images, labels


def write_idx(path, array):
    """Write a uint8 array as an IDX file (tests and examples make small ones)."""
    array = np.asarray(array, dtype=np.uint8)
    magic = IMAGES_MAGIC if array.ndim == 3 else LABELS_MAGIC
    header = struct.pack(">i", magic) + struct.pack(f">{array.ndim}i", *array.shape)
    data = header + array.tobytes()
    if str(path).endswith(".gz"):
        data = gzip.compress(data)
    with open(path, "wb") as handle:
        handle.write(data)
