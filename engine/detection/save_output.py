"""DetectionOutput's result files (SaveOutputParameter), as SSD writes them:
after every `num_test_image` images, one file per class (VOC), one JSON list
(COCO) or one text file (ILSVRC), with boxes in original-image pixels."""

import json
import math
import os
import re

import numpy as np

from ..data.annoset import read_label_map, read_name_size_file
from ..errors import DataError
from .bbox import output_bboxes

FORMATS = ("VOC", "COCO", "ILSVRC")


def label_names(path):
    """{label: name} of a label map file (SSD's MapLabelToName, strict: a label listed twice is an error)."""
    names = {}
    for item in read_label_map(path).item:
        if item.label in names:
            raise DataError(f"{path}: There are many duplicates of label: {item.label}")
        names[item.label] = item.name
    return names


def _round2(value):
    """C's round(value * 100) / 100, then stored as a float."""
    scaled = float(np.float32(value) * np.float32(100))
    return float(np.float32(math.copysign(math.floor(abs(scaled) + 0.5), scaled) / 100))


class DetectionSaver:
    """Collects one DetectionOutput pass over the test images and writes it out."""

    def __init__(self, param, background_label_id):
        self.directory = param.output_directory
        self.prefix = param.output_name_prefix
        self.format = param.output_format
        if self.format not in FORMATS:
            raise DataError(f"output_format must be one of {', '.join(FORMATS)}, not '{self.format}'")
        self.labels = label_names(param.label_map_file)
        self.names = read_name_size_file(param.name_size_file)
        self.num_test_image = param.num_test_image if param.HasField("num_test_image") else len(self.names)
        if not 0 < self.num_test_image <= len(self.names):
            raise DataError(f"num_test_image ({self.num_test_image}) must lie in [1, {len(self.names)}], the "
                            f"lines of {param.name_size_file}")
        self.resize_param = param.resize_param if param.HasField("resize_param") else None
        self.background = background_label_id
        self.count = 0
        self.detections = []
        os.makedirs(self.directory, exist_ok=True)

    @staticmethod
    def wanted(param):
        """SSD saves only with an output directory, a label map and a name-size file."""
        return bool(param.output_directory and param.label_map_file and param.name_size_file)

    def _path(self, name):
        return os.path.join(self.directory, self.prefix + name)

    def begin(self):
        """At the start of a pass, VOC's per-class files are emptied."""
        if self.count % self.num_test_image == 0 and self.format == "VOC":
            for label, name in self.labels.items():
                if label != self.background:
                    open(self._path(name + ".txt"), "w").close()

    def add_image(self, labels, scores, boxes):
        """One image's detections (normalized boxes); writes the files after the pass's last image."""
        if self.count >= len(self.names):
            raise DataError("more images than lines in name_size_file")
        name, height, width = self.names[self.count]
        for label in labels:
            if int(label) not in self.labels:
                raise DataError(f"Cannot find label: {int(label)} in the label map.")
        if len(boxes):
            pixels, _ = output_bboxes(np.asarray(boxes, np.float32), height, width, self.resize_param)
            for label, score, (xmin, ymin, xmax, ymax) in zip(labels, scores, pixels):
                category = int(label) if self.format == "ILSVRC" else self.labels[int(label)]
                bbox = [_round2(xmin), _round2(ymin), _round2(xmax - xmin), _round2(ymax - ymin)]
                self.detections.append({"image_id": name, "category_id": category, "bbox": bbox,
                                        "score": float(np.float32(score))})
        self.count += 1
        if self.count % self.num_test_image == 0:
            getattr(self, "_write_" + self.format.lower())()
            self.count = 0
            self.detections = []

    @staticmethod
    def _corners(bbox):
        x, y = int(bbox[0]), int(bbox[1])
        return f"{x} {y} {x + int(bbox[2])} {y + int(bbox[3])}"

    def _write_voc(self):
        files = {name: open(self._path(name + ".txt"), "w") for label, name in self.labels.items()
                 if label != self.background}
        try:
            for det in self.detections:
                out = files.get(det["category_id"])
                if out is not None:
                    out.write(f"{det['image_id']} {det['score']:g} {self._corners(det['bbox'])}\n")
        finally:
            for out in files.values():
                out.close()

    def _write_ilsvrc(self):
        with open(self._path(".txt"), "w") as out:
            for det in self.detections:
                out.write(f"{det['image_id']} {det['category_id']} {det['score']:g} {self._corners(det['bbox'])}\n")

    def _write_coco(self):
        # SSD's JSON writer quotes every value, then unquotes the ones that look like numbers.
        def value(v):
            text = str(v)
            return text if re.fullmatch(r"null|true|false|-?[0-9]+(\.[0-9]+)?", text) else json.dumps(text)
        items = []
        for det in self.detections:
            bbox = ",\n".join(f"                {value(v)}" for v in det["bbox"])
            items.append(f'    {{\n        "image_id": {value(det["image_id"])},\n'
                         f'        "category_id": {value(det["category_id"])},\n'
                         f'        "bbox": [\n{bbox}\n        ],\n        "score": {value(det["score"])}\n    }}')
        with open(self._path(".json"), "w") as out:
            out.write("[\n" + ",\n".join(items) + "\n]\n")
