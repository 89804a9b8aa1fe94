"""Compute the mean image of a database of Datum records, as Caffe's compute_image_mean.

Usage:
    compute_image_mean [--backend lmdb|leveldb] INPUT_DB [OUTPUT_FILE]

Writes the mean (a 1 x C x H x W BlobProto, the mean_file of
transform_param) to OUTPUT_FILE when given, and prints the mean of each
channel. Encoded records are decoded with their own channels. The sum is
kept in float32 and divided by the count in float32, as Caffe does, so the
file matches Caffe's bit for bit.
"""

import logging
from pathlib import Path

import numpy as np

from . import run
from .. import caffe_pb2, formats, gflags
from ..data import toolkit
from ..data.datum import datum_to_array, parse_datum
from ..data.db import backend_name, open_db
from ..errors import DataError

log = logging.getLogger("compute_image_mean")
FLAGS = [gflags.Flag("backend", "lmdb", "The backend {leveldb, lmdb} containing the images", str)]
USAGE = __doc__.strip()


def compute_mean(db_path, backend):
    database = open_db(db_path, backend)
    try:
        total = len(database)
        cursor = database.cursor()
        total_sum = count = None
        for index in toolkit.progress(range(total), total, Path(db_path).name):
            key = cursor.key.decode(errors="replace")
            where = f"{db_path} (key {key})"
            image = datum_to_array(parse_datum(cursor.value, where), where=where)
            if total_sum is None:
                total_sum, count = np.zeros(image.shape, dtype=np.float32), 0
                log.info("Starting iteration")
            if image.shape != total_sum.shape:
                raise DataError(f"{where}: Incorrect data field size {image.size} "
                                f"(image {image.shape}, the first was {total_sum.shape})")
            total_sum += image.astype(np.float32)  # one float32 rounding per record, as Caffe
            count += 1
            if count % 10000 == 0:
                log.info("Processed %d files.", count)
            if index + 1 < total:
                cursor.next()
        cursor.close()
    finally:
        database.close()
    if count % 10000 != 0:
        log.info("Processed %d files.", count)
    return total_sum / np.float32(count)


def _main(argv):
    flags, args = gflags.parse_or_help(argv, FLAGS, "compute_image_mean", USAGE)
    if len(args) not in (1, 2):
        raise gflags.FlagError("expected INPUT_DB [OUTPUT_FILE] (see --help)")
    mean = compute_mean(args[0], backend_name(flags["backend"]))
    if len(args) == 2:
        log.info("Write to %s", args[1])
        proto = caffe_pb2.BlobProto()
        proto.num = 1
        proto.channels, proto.height, proto.width = mean.shape
        proto.data.extend(mean.ravel().tolist())
        formats.write_binary(args[1], proto)
    channels = mean.shape[0]
    log.info("Number of channels: %d", channels)
    sums = mean.reshape(channels, -1).astype(np.float32)
    for channel in range(channels):
        # Caffe adds the values in float order, one by one; so do we.
        value = np.float32(0)
        for pixel in sums[channel]:
            value = np.float32(value + pixel)
        log.info("mean_value channel [%d]: %g", channel, value / sums.shape[1])
    return 0


def main(argv=None):
    return run(_main, argv, prefix="compute_image_mean", logs=True)
