"""Run an SSD deploy net on images of any size: detections as JSON and labelled boxes drawn on copies.

Usage:
    detect --model DEPLOY.prototxt --weights W.caffemodel [--labelmap LABELMAP.prototxt]
           [--threshold T] [--output DIR] [--mean_value B,G,R] [--scale S] [--gpu N] IMAGE...

Each image is read in color (BGR, as Caffe reads it), resized to the net's
input size (bilinear, as OpenCV), made (pixel - mean) * scale and run
through the net; the net's last output is SSD's DetectionOutput
(1 x 1 x N x 7 rows [image, label, score, xmin, ymin, xmax, ymax], boxes
normalized to the input). Detections at or above --threshold are scaled to
the original image's pixels. The mean and scale default to the deploy
net's Input layer transform_param when it has one, else to SSD's recipe
(mean 104,117,123, scale 1). --labelmap gives the labels' display names.
The JSON of every image's detections goes to stdout and to
DIR/detections.json, and DIR/NAME.png is each image with its boxes drawn
(DIR: --output, by default the folder "detections" in the current one;
NAME_2.png and so on where images share a name; each entry's "drawn" says which).
"""

import json
import logging
from pathlib import Path

import numpy as np

from . import run
from .. import backend, caffe_pb2, formats, gflags
from ..data.annoset import label_to_display_name, read_label_map
from ..data.image import COLOR, read_image, resize_linear
from ..errors import CaffeError, DataError
from ..net import Net
from ..solvers.commands import _gpu_list, set_mode

log = logging.getLogger("detect")
FLAGS = [
    gflags.Flag("model", "", "The deploy net (an Input layer, DetectionOutput last)", str),
    gflags.Flag("weights", "", "Trained weights (.caffemodel or .h5)", str),
    gflags.Flag("labelmap", "", "LabelMap prototxt naming the labels", str),
    gflags.Flag("threshold", "0.5", "Lowest score kept", str),
    gflags.Flag("output", "detections", "Folder for detections.json and the annotated PNG copies", str),
    gflags.Flag("mean_value", "", "Per-channel mean (B,G,R) subtracted from the pixels", str),
    gflags.Flag("scale", "", "Factor applied after the mean", str),
    gflags.Flag("gpu", "", "GPU device ID to run on", str),
]
USAGE = __doc__.strip()
_COLOURS = [(230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240),
            (240, 50, 230), (210, 245, 60), (250, 190, 190), (0, 128, 128)]


def _floats(text, flag):
    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise gflags.FlagError(f"--{flag} must be numbers separated by ',', got '{text}'") from None


def input_transform(param, flags):
    """(mean values, scale): the flags, else the Input layer's transform_param, else SSD's recipe."""
    inputs = [layer for layer in param.layer if layer.type == "Input"]
    transform = inputs[0].transform_param if inputs and inputs[0].HasField("transform_param") else None
    mean = [104.0, 117.0, 123.0]
    scale = 1.0
    if transform is not None:
        mean = list(transform.mean_value) or mean
        scale = transform.scale
    if flags["mean_value"]:
        mean = _floats(flags["mean_value"], "mean_value")
    if flags["scale"]:
        scale = _floats(flags["scale"], "scale")[0]
    return np.asarray(mean, np.float32), np.float32(scale)


def prepare(image, height, width, mean, scale):
    """(1, C, height, width) float32: resized, mean subtracted, scaled."""
    resized = resize_linear(image, width, height)
    values = resized.transpose(2, 0, 1).astype(np.float32)
    if len(mean) not in (1, values.shape[0]):
        raise DataError(f"--mean_value has {len(mean)} values for {values.shape[0]} channels")
    values = (values - np.resize(mean, values.shape[0])[:, None, None]) * scale
    return values[None]


def detections(rows, height, width, threshold, names):
    """DetectionOutput rows to [{label, name, score, box}] in the image's pixels (SSD's ssd_detect.py rounding)."""
    out = []
    for _, label, score, xmin, ymin, xmax, ymax in rows.reshape(-1, 7):
        if label < 0 or score < threshold:
            continue
        box = [int(round(float(np.clip(v, 0, 1)) * size)) for v, size in
               ((xmin, width), (ymin, height), (xmax, width), (ymax, height))]
        label = int(label)
        out.append({"label": label, "name": names.get(label, str(label)), "score": round(float(score), 6),
                    "box": box})
    out.sort(key=lambda d: -d["score"])
    return out


def draw(path, image, found, out_path):
    """The image (BGR) with each detection's box and "name score" label, as PNG."""
    from PIL import Image, ImageDraw

    picture = Image.fromarray(np.ascontiguousarray(image[..., ::-1]))
    pen = ImageDraw.Draw(picture)
    for item in found:
        colour = _COLOURS[item["label"] % len(_COLOURS)]
        x0, y0, x1, y1 = item["box"]
        pen.rectangle([x0, y0, max(x0, x1 - 1), max(y0, y1 - 1)], outline=colour, width=2)
        text = f"{item['name']} {item['score']:.2f}"
        left, top, right, bottom = pen.textbbox((x0, y0), text)
        top_edge = max(0, y0 - (bottom - top) - 2)
        pen.rectangle([x0, top_edge, x0 + right - left + 2, top_edge + bottom - top + 2], fill=colour)
        pen.text((x0 + 1, top_edge + 1 - (top - y0)), text, fill=(255, 255, 255))
    picture.save(out_path, "PNG")


def _main(argv):
    flags, images = gflags.parse_or_help(argv, FLAGS, "detect", USAGE)
    if not flags["model"] or not flags["weights"]:
        raise gflags.FlagError("--model and --weights are required (see --help)")
    if not images:
        raise gflags.FlagError("no IMAGE given (see --help)")
    threshold = _floats(flags["threshold"], "threshold")[0]
    set_mode(_gpu_list(flags["gpu"]) if flags["gpu"] else [])
    param = formats.read_net(flags["model"])
    mean, scale = input_transform(param, flags)
    net = Net(param, caffe_pb2.TEST, weights=flags["weights"], source=flags["model"])
    if not net.inputs:
        raise CaffeError(f"{flags['model']}: the deploy net has no Input layer")
    data = net.blobs[net.inputs[0]]
    if len(data.shape) != 4:
        raise CaffeError(f"{flags['model']}: input '{net.inputs[0]}' is {data.shape}, expected N x C x H x W")
    height, width = data.shape[2], data.shape[3]
    data.reshape((1,) + tuple(data.shape[1:]))
    net.reshape()
    names = label_to_display_name(read_label_map(flags["labelmap"])) if flags["labelmap"] else {}
    if not flags["output"]:
        raise gflags.FlagError("--output must name a folder")
    output = Path(flags["output"])
    try:
        output.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CaffeError(f"--output {output}: cannot make the folder: {exc.strerror}") from None
    results = []
    drawn_names = set()
    for path in images:
        image = read_image(path, COLOR)
        data.data[...] = backend.to_device(prepare(image, height, width, mean, scale), data.xp)
        out = net.forward()
        rows = backend.to_host(out[net.outputs[-1]])
        if rows.shape[-1] != 7:
            raise CaffeError(f"{flags['model']}: the last output '{net.outputs[-1]}' is {rows.shape}, "
                             "expected DetectionOutput's rows of 7")
        found = detections(rows, image.shape[0], image.shape[1], threshold, names)
        drawn = output / _drawn_name(Path(path).stem, drawn_names)
        results.append({"image": str(path), "height": image.shape[0], "width": image.shape[1],
                        "drawn": str(drawn), "detections": found})
        log.info("%s: %d detection(s)", path, len(found))
        draw(path, image, found, drawn)
    text = json.dumps(results, indent=1)
    (output / "detections.json").write_text(text + "\n")
    print(text)
    log.info("Wrote %s/detections.json and %d drawn image(s)", output, len(images))
    return 0


def _drawn_name(stem, taken):
    """NAME.png, or NAME_2.png, NAME_3.png ... when images from different folders share a name."""
    name, count = f"{stem}.png", 1
    while name in taken:
        count += 1
        name = f"{stem}_{count}.png"
    taken.add(name)
    return name


def main(argv=None):
    return run(_main, argv, prefix="detect", logs=True)
