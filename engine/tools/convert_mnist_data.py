"""Convert MNIST-format IDX files (images and labels) to a database of Datum records.

Usage:
    convert_mnist_data [--backend lmdb|leveldb] IMAGES LABELS DB
    convert_mnist_data [--backend lmdb|leveldb]

With three arguments it works as Caffe's convert_mnist_data: IMAGES and
LABELS are IDX files (gzipped or not), DB the database to create (it must
not exist). Each image becomes a raw Datum (1 x rows x cols, uint8) with
its label, under the key "%08d" of its index.

With no arguments it converts Fashion-MNIST from
/usr/share/datasets/fashion-mnist/ (train-* and t10k-* files) into
./data/fashion_mnist/train_lmdb and ./data/fashion_mnist/test_lmdb
(train_leveldb / test_leveldb with --backend leveldb). A database that
already exists is kept, so the command can be run again; each one is
written under a .partial name and renamed only when complete.
"""

import logging
import shutil
from pathlib import Path

from . import run
from .. import gflags
from ..data import toolkit
from ..data.datum import array_to_datum
from ..data.db import backend_name, open_writer
from ..data.idx import read_mnist

log = logging.getLogger("convert_mnist_data")

DATASET = Path("/usr/share/datasets/fashion-mnist")
FLAGS = [gflags.Flag("backend", "lmdb", "The backend for storing the result: lmdb or leveldb", str)]
USAGE = __doc__.strip()


def convert(images_path, labels_path, db_path, backend):
    images, labels = read_mnist(images_path, labels_path)
    count, rows, cols = images.shape
    log.info("A total of %d items.", count)
    log.info("Rows: %d Cols: %d", rows, cols)
    writer = toolkit.RecordWriter(open_writer(db_path, backend), log)
    try:
        for index in toolkit.progress(range(count), count, Path(db_path).name):
            datum = array_to_datum(images[index][None], int(labels[index]))
            writer.put(f"{index:08d}", datum.SerializeToString())
    finally:
        writer.close()
    log.info("Processed %d files.", count)


def _main(argv):
    flags, args = gflags.parse_or_help(argv, FLAGS, "convert_mnist_data", USAGE)
    backend = backend_name(flags["backend"])
    if len(args) == 3:
        convert(args[0], args[1], args[2], backend)
        return 0
    if args:
        raise gflags.FlagError("expected IMAGES LABELS DB, or no arguments for the Fashion-MNIST "
                               "defaults (see --help)")
    out = Path("data/fashion_mnist")
    jobs = [(DATASET / f"{part}-images-idx3-ubyte.gz", DATASET / f"{part}-labels-idx1-ubyte.gz",
             out / f"{name}_{backend}") for part, name in (("train", "train"), ("t10k", "test"))]
    out.mkdir(parents=True, exist_ok=True)
    for images, labels, db in jobs:
        if db.exists():
            log.info("%s already exists; remove it to convert again", db)
            continue
        # Written under a temporary name and renamed when complete, so that an
        # interrupted run never leaves a half-written database that looks finished.
        partial = db.with_name(db.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        convert(images, labels, partial, backend)
        partial.rename(db)
    return 0


def main(argv=None):
    return run(_main, argv, prefix="convert_mnist_data", logs=True)
