"""Generate a small object-detection data set of coloured shapes in Pascal VOC's layout.

Usage:
    make_shapes_dataset OUT [--train N] [--test M] [--seed S] [--min_size A] [--max_size B]

Writes under OUT:
    JPEGImages/NAME.jpg          images of random size (--min_size to
                                 --max_size pixels a side) on noisy,
                                 shaded backgrounds
    Annotations/NAME.xml         VOC annotations: 1 to 3 objects an image
    ImageSets/Main/train.txt, test.txt   the image names of each split
    train.txt, test.txt          "JPEGImages/NAME.jpg Annotations/NAME.xml"
                                 lists for convert_annoset and get_image_size
    labelmap.prototxt            background 0, circle 1, square 2, triangle 3
The objects are circles, squares and triangles of random size (a fifth to
a half of the image's shorter side), colour and position, overlapping
little. The same --seed gives the same files.
"""

import io
import logging
from pathlib import Path

import numpy as np

from . import run
from .. import gflags
from ..errors import DataError

log = logging.getLogger("make_shapes_dataset")
CLASSES = ("circle", "square", "triangle")
FLAGS = [
    gflags.Flag("train", 1000, "Images in the train split", int),
    gflags.Flag("test", 200, "Images in the test split", int),
    gflags.Flag("seed", 1, "Random seed", int),
    gflags.Flag("min_size", 96, "Smallest image side in pixels", int),
    gflags.Flag("max_size", 160, "Largest image side in pixels", int),
]
USAGE = __doc__.strip()


def _background(rng, height, width):
    """A shaded background with pixel noise: (H, W, 3) float in [0, 255]."""
    base = rng.uniform(40, 215, 3)
    slope = rng.uniform(-60, 60, (2, 3))
    ys = np.linspace(-0.5, 0.5, height)[:, None, None]
    xs = np.linspace(-0.5, 0.5, width)[None, :, None]
    image = base + ys * slope[0] + xs * slope[1]
    return image + rng.normal(0, 12, (height, width, 3))


def _mask(kind, size):
    """A boolean (size, size) mask of the shape and its tight box inside it."""
    ys, xs = np.mgrid[0:size, 0:size] + 0.5
    if kind == "circle":
        r = size / 2
        return (ys - r) ** 2 + (xs - r) ** 2 <= r * r
    if kind == "square":
        return np.ones((size, size), bool)
    # An upright triangle: apex at the top centre, base along the bottom.
    return np.abs(xs - size / 2) <= ys / 2


def _colour(rng, background):
    """A colour that stands out from the background's mean."""
    for _ in range(20):
        colour = rng.uniform(0, 255, 3)
        if np.abs(colour - background).sum() > 150:
            return colour
    return 255 - background


def _overlap(a, b):
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


def make_image(rng, min_size, max_size):
    """(BGR uint8 image, [(class name, xmin, ymin, xmax, ymax) in VOC pixel coordinates])."""
    height, width = (int(v) for v in rng.integers(min_size, max_size + 1, 2))
    image = _background(rng, height, width)
    mean = image.reshape(-1, 3).mean(0)
    objects = []
    for _ in range(int(rng.integers(1, 4))):
        for _attempt in range(20):
            size = int(rng.integers(max(8, min(height, width) // 5), min(height, width) // 2 + 1))
            x0 = int(rng.integers(0, width - size + 1))
            y0 = int(rng.integers(0, height - size + 1))
            box = (x0, y0, x0 + size, y0 + size)
            if all(_overlap(box, other[1:]) < 0.1 for other in objects):
                break
        else:
            continue
        kind = CLASSES[int(rng.integers(len(CLASSES)))]
        mask = _mask(kind, size)
        region = image[y0:y0 + size, x0:x0 + size]
        region[mask] = _colour(rng, mean) + rng.normal(0, 6, (int(mask.sum()), 3))
        # VOC boxes are 1-based inclusive pixel coordinates.
        objects.append((kind, x0 + 1, y0 + 1, x0 + size, y0 + size))
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)[..., ::-1], objects


def voc_xml(name, height, width, objects):
    parts = [f"<annotation>\n  <folder>shapes</folder>\n  <filename>{name}.jpg</filename>\n",
             f"  <size>\n    <width>{width}</width>\n    <height>{height}</height>\n    <depth>3</depth>\n  </size>\n"]
    for kind, xmin, ymin, xmax, ymax in objects:
        parts.append(f"  <object>\n    <name>{kind}</name>\n    <pose>Unspecified</pose>\n"
                     f"    <truncated>0</truncated>\n    <difficult>0</difficult>\n"
                     f"    <bndbox>\n      <xmin>{xmin}</xmin>\n      <ymin>{ymin}</ymin>\n"
                     f"      <xmax>{xmax}</xmax>\n      <ymax>{ymax}</ymax>\n    </bndbox>\n  </object>\n")
    parts.append("</annotation>\n")
    return "".join(parts)


def label_map_text():
    items = [("none_of_the_above", 0, "background")] + [(c, i + 1, c) for i, c in enumerate(CLASSES)]
    return "".join(f'item {{\n  name: "{n}"\n  label: {l}\n  display_name: "{d}"\n}}\n' for n, l, d in items)


def write_dataset(out, train, test, seed, min_size=96, max_size=160):
    """Write the data set; returns {split: [image names]}."""
    from PIL import Image

    if min_size < 16 or max_size < min_size:
        raise DataError(f"need 16 <= min_size <= max_size (got {min_size}, {max_size})")
    out = Path(out)
    for folder in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (out / folder).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    splits = {"train": [], "test": []}
    index = 0
    for split, count in (("train", train), ("test", test)):
        for _ in range(count):
            name = f"{index:06d}"
            index += 1
            image, objects = make_image(rng, min_size, max_size)
            buffer = io.BytesIO()
            Image.fromarray(np.ascontiguousarray(image[..., ::-1])).save(buffer, "JPEG", quality=90)
            (out / "JPEGImages" / f"{name}.jpg").write_bytes(buffer.getvalue())
            (out / "Annotations" / f"{name}.xml").write_text(voc_xml(name, *image.shape[:2], objects))
            splits[split].append(name)
        (out / "ImageSets/Main" / f"{split}.txt").write_text("".join(n + "\n" for n in splits[split]))
        (out / f"{split}.txt").write_text(
            "".join(f"JPEGImages/{n}.jpg Annotations/{n}.xml\n" for n in splits[split]))
    (out / "labelmap.prototxt").write_text(label_map_text())
    return splits


def _main(argv):
    flags, args = gflags.parse_or_help(argv, FLAGS, "make_shapes_dataset", USAGE)
    if len(args) != 1:
        raise gflags.FlagError("expected OUT (see --help)")
    if flags["train"] < 0 or flags["test"] < 0:
        raise gflags.FlagError("--train and --test must not be negative")
    splits = write_dataset(args[0], flags["train"], flags["test"], flags["seed"],
                           flags["min_size"], flags["max_size"])
    log.info("Wrote %d train and %d test images to %s", len(splits["train"]), len(splits["test"]), args[0])
    return 0


def main(argv=None):
    return run(_main, argv, prefix="make_shapes_dataset", logs=True)
