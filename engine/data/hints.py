"""What to tell a user whose database or mean file is missing: the commands that build it.

Caffe stops with "No such file or directory" and leaves the user to find
examples/imagenet/create_imagenet.sh. The zoo's nets read their data from
data/<dataset>/..., so for the datasets they use we can name the exact
commands (tools/convert_imageset, tools/convert_mnist_data,
tools/compute_image_mean) with the paths the net expects; for any other path
a generic recipe is given. The data layers append this hint to their
DataError.
"""

import os
from pathlib import PurePath

# dataset folder -> (what the images are, resize flags, how the training DB is named)
_DATASETS = {
    "ilsvrc12": ("the ILSVRC-2012 images", "--resize_height=256 --resize_width=256 ",
                 "data/ilsvrc12/ilsvrc12_train_lmdb"),
    "cifar10": ("the CIFAR-10 images (extracted as PNG files)", "", "data/cifar10/cifar10_train_lmdb"),
}


def _dataset(path):
    parts = PurePath(path).parts
    for name in _DATASETS:
        if name in parts:
            return name
    return None


def _split(path):
    """'train', or the evaluation split ('val' or 'test') the database's name mentions."""
    name = PurePath(path).name.lower()
    for split in ("val", "test"):
        if split in name:
            return split
    return "train"


def _relative_note(path):
    if PurePath(path).is_absolute():
        return ""
    return "; relative paths are read from the current directory (run from the repository root)"


def _mean_hint(path):
    dataset = _dataset(path)
    train_db = _DATASETS[dataset][2] if dataset else "TRAIN_DB"
    hint = f"compute it with `tools/compute_image_mean {train_db} {path}`"
    if dataset and not os.path.exists(train_db):
        # The mean comes from the training database, which has to be built first.
        return f"{hint} once {train_db} exists: {_database_hint(train_db, with_mean=False)}"
    return hint + _relative_note(path)


def _mnist_hint(path):
    prefix = "train" if _split(path) == "train" else "t10k"
    return (f"build it from the MNIST IDX files with `tools/convert_mnist_data {prefix}-images-idx3-ubyte "
            f"{prefix}-labels-idx1-ubyte {path}`")


def _database_hint(path, with_mean=True):
    if "mnist" in PurePath(path).as_posix().lower():
        return _mnist_hint(path) + _relative_note(path)
    dataset = _dataset(path)
    split = _split(path)
    images, resize, train_db = _DATASETS.get(dataset, ("your images", "", None))
    if dataset:
        root, listfile = f"/path/to/{dataset}/{split}/", f"{PurePath(path).parent.as_posix()}/{split}.txt"
    else:
        root, listfile = "IMAGE_ROOT/", "LIST.txt"
    shuffle = "--shuffle " if split == "train" else ""
    hint = (f"build it from {images} with `tools/convert_imageset {resize}{shuffle}{root} {listfile} {path}` "
            f"({PurePath(listfile).name}: one 'relative/path label' line per image)")
    if split == "train" and with_mean:
        mean = {"ilsvrc12": "data/ilsvrc12/imagenet_mean.binaryproto",
                "cifar10": "data/cifar10/mean.binaryproto"}.get(dataset, "MEAN.binaryproto")
        hint += f", then its mean with `tools/compute_image_mean {train_db or path} {mean}`"
    return hint + _relative_note(path)


def missing_data_hint(path):
    """One sentence naming the commands that create the missing database or mean file `path`."""
    path = str(path)
    if path.endswith(".binaryproto"):
        return _mean_hint(path)
    return _database_hint(path)
