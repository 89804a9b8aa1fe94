"""Compute AlexNet's PCA lighting values for a database of Datum records and print them as prototxt.

Usage:
    compute_pca_lighting [--backend lmdb|leveldb] [--max_images N] [--alpha_std 0.1] INPUT_DB

The eigen-decomposition of the 3 x 3 covariance of the RGB values of every
pixel (scaled to [0, 1]; the records hold BGR, as Caffe's tools write them)
over the first --max_images records (0: all), printed as the pca_lighting
block of transform_param (this project's extension, see PCALightingParameter
in proto/caffe.proto): eigenvalues largest first, and the eigenvector matrix
row by row (rows R, G, B; column k is eigenvector k, its largest component
made positive).
"""

import logging
from pathlib import Path

import numpy as np

from . import run
from .. import gflags
from ..data import toolkit
from ..data.datum import datum_to_array, parse_datum
from ..data.db import backend_name, open_db
from ..errors import DataError

log = logging.getLogger("compute_pca_lighting")
FLAGS = [gflags.Flag("backend", "lmdb", "The backend {leveldb, lmdb} containing the images", str),
         gflags.Flag("max_images", 0, "Use at most this many records (0: all)", int),
         gflags.Flag("alpha_std", "0.1", "The alpha_std written into the snippet (AlexNet: 0.1)", str)]
USAGE = __doc__.strip()


def rgb_moments(db_path, backend, max_images=0):
    """(count of pixels, sum of RGB values, sum of their outer products, images) over the database,
    values on the [0, 1] scale, in float64."""
    database = open_db(db_path, backend)
    try:
        total = len(database)
        if max_images > 0:
            total = min(total, max_images)
        cursor = database.cursor()
        pixels, sums, products = 0, np.zeros(3), np.zeros((3, 3))
        for index in toolkit.progress(range(total), total, Path(db_path).name):
            key = cursor.key.decode(errors="replace")
            where = f"{db_path} (key {key})"
            image = datum_to_array(parse_datum(cursor.value, where), where=where)
            if image.shape[0] != 3:
                raise DataError(f"{where}: PCA lighting needs 3-channel (BGR) images, got {image.shape[0]} channels")
            rgb = image[::-1].reshape(3, -1).astype(np.float64) / 255.0
            pixels += rgb.shape[1]
            sums += rgb.sum(axis=1)
            products += rgb @ rgb.T
            if index + 1 < total:
                cursor.next()
        cursor.close()
    finally:
        database.close()
    if pixels == 0:
        raise DataError(f"{db_path}: the database holds no images")
    return pixels, sums, products, total


def eigen(pixels, sums, products):
    """(eigenvalues largest first, matrix whose column k is eigenvector k) of the covariance."""
    mean = sums / pixels
    covariance = products / pixels - np.outer(mean, mean)
    values, vectors = np.linalg.eigh(covariance)
    order = np.argsort(values)[::-1]
    values, vectors = np.clip(values[order], 0, None), vectors[:, order]
    signs = np.sign(vectors[np.argmax(np.abs(vectors), axis=0), np.arange(3)])
    return values, vectors * np.where(signs == 0, 1, signs)


def snippet(values, vectors, alpha_std):
    lines = ["transform_param {", "  pca_lighting {"]
    lines += [f"    eigenvalue: {value:.6g}" for value in values]
    for row, channel in zip(vectors, "RGB"):
        lines.append("    " + " ".join(f"eigenvector: {v:.6g}" for v in row) + f"  # {channel}")
    lines += [f"    alpha_std: {alpha_std:g}", "  }", "}"]
    return "\n".join(lines)


def _main(argv):
    flags, args = gflags.parse_or_help(argv, FLAGS, "compute_pca_lighting", USAGE)
    if len(args) != 1:
        raise gflags.FlagError("expected INPUT_DB (see --help)")
    if flags["max_images"] < 0:
        raise gflags.FlagError(f"--max_images must not be negative (got {flags['max_images']})")
    try:
        alpha_std = float(flags["alpha_std"])
    except ValueError:
        raise gflags.FlagError(f"illegal value '{flags['alpha_std']}' specified for double flag 'alpha_std'") from None
    pixels, sums, products, images = rgb_moments(args[0], backend_name(flags["backend"]), flags["max_images"])
    values, vectors = eigen(pixels, sums, products)
    print(f"# PCA lighting of {images} images ({pixels} pixels) of {args[0]}: RGB covariance on the [0, 1] scale")
    print(snippet(values, vectors, alpha_std))
    return 0


def main(argv=None):
    return run(_main, argv, prefix="compute_pca_lighting", logs=True)
