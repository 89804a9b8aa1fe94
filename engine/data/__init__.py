"""Reading what Caffe users feed their nets: databases of Datum records,
image files, and the transformation Caffe applies on the way to the top blob.

Modules:
    db         LMDB and LevelDB behind one cursor that wraps around, and writers
    datum      Datum records to (C, H, W) arrays and back
    image      image decoding and resizing that reproduce Caffe's OpenCV calls
    transform  Caffe's DataTransformer (mean, crop, mirror, scale)
    prefetch   the background thread that keeps batches ready
    idx        MNIST's IDX files
    listfile   "path label" image lists
    hints      the commands that build a missing database or mean file
    toolkit          shared plumbing of the dataset tools (flags: engine.gflags)
"""

from .db import open_db, open_writer
from .datum import array_to_datum, datum_to_array, parse_datum
from .transform import DataTransformer

__all__ = ["DataTransformer", "array_to_datum", "datum_to_array", "open_db", "open_writer", "parse_datum"]
