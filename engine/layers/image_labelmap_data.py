"""ImageLabelmapData: image and edge-map pairs for HED (s9xie/hed's data layer).

As the fork's ImageLabelmapDataLayer, configured by image_data_param:
the list file holds "image label_map" pairs (whitespace-separated tokens,
two at a time), both under root_folder. Images are read in color (BGR) or,
with is_color: false, grayscale; label maps grayscale, and each pair must
have one size. With new_height and new_width both set, both are resized
bilinearly. The label top is the map divided by 255 with OpenCV's
rounding, so 1 where the map is 128 or more and 0 elsewhere (the fork's
"consensus sampling" of multi-annotator maps). Then, per pair, as the
fork's LocTransform / LabelmapTransform:
  mirror  transform_param.mirror: one coin flip for image and map;
  crop    transform_param.crop_size: one random window for both, in TRAIN
          and TEST alike (the fork draws it in any phase);
  mean    mean_file (read at the window) or mean_value, then scale: image
          only; the map keeps its 0 / 1 values.
Tops: data (batch, C, H, W) and label (batch, 1, H, W). The list is read in
order, wrapping around, reshuffled at every wrap when `shuffle` is set; each
batch takes its first pair's size.
"""

import logging

import numpy as np

from ..data.image import COLOR, GRAY, read_image, resize_linear
from ..data.listfile import read_pair_list
from ..data.transform import DataTransformer
from ..errors import DataError
from .base import register_layer
from .data import ListedReader, PrefetchingDataLayer

log = logging.getLogger("engine")


@register_layer
class ImageLabelmapDataLayer(ListedReader, PrefetchingDataLayer):
    type = "ImageLabelmapData"
    min_top_blobs = 2
    max_top_blobs = 2

    def setup(self, bottom, top):
        p = self.param.image_data_param
        self.check(bool(p.source), "image_data_param.source is required")
        self.check((p.new_height == 0) == (p.new_width == 0),
                   "Current implementation requires new_height and new_width to be set at the same time.")
        self.check(p.batch_size > 0, "Positive batch size required")
        tp = self.param.transform_param
        self.check(not tp.HasField("pca_lighting"), "transform_param.pca_lighting is not read by HED's data layer")
        self.batch_size = int(p.batch_size)
        self.new_size = (int(p.new_height), int(p.new_width))
        self.mode = COLOR if p.is_color else GRAY
        self.root = p.root_folder
        self.source = p.source
        self.where = f"layer '{self.name}' (ImageLabelmapData)"
        # Parses and checks mean and scale; the crop and flip are drawn here, shared with the map.
        self.transformer = DataTransformer(tp, self.phase, where=self.where)
        self.crop = int(tp.crop_size)
        self.mirror = bool(tp.mirror)
        try:
            lines = read_pair_list(p.source)
        except DataError as exc:
            raise DataError(f"{self.where}: {exc}") from None
        self.start_list(lines, p.shuffle, p.rand_skip, self.where, "images")
        image, _ = self._read_pair(*self.lines[self.position])
        shape = self.transformer.output_shape(image.shape)
        top[0].reshape((self.batch_size,) + shape)
        top[1].reshape((self.batch_size, 1) + shape[1:])
        log.info("output data size: %s", ",".join(map(str, top[0].shape)))
        self.start_prefetch(self.param.data_param.prefetch)

    def _read(self, name, mode):
        try:
            image = read_image(self.root + name, mode)
        except DataError as exc:
            raise DataError(f"{self.where}: Could not load {name}: {exc}") from None
        if self.new_size[0]:
            image = resize_linear(image, self.new_size[1], self.new_size[0])
        return image.transpose(2, 0, 1)

    def _read_pair(self, image_name, map_name):
        """(C, H, W) image and (1, H, W) label map, uint8, of one size."""
        image, label = self._read(image_name, self.mode), self._read(map_name, GRAY)
        if image.shape[1:] != label.shape[1:]:
            raise DataError(f"{self.where}: {self.source}: label map {map_name} is {label.shape[1]} x "
                            f"{label.shape[2]}, image {image_name} {image.shape[1]} x {image.shape[2]}: "
                            f"GT image size should be equal to true image size")
        return image, label

    def _transform_pair(self, image, label, source):
        """The fork's LocTransform on the image and LabelmapTransform on the map, one window and flip."""
        t = self.transformer
        t._check(image.shape, source)
        height, width = image.shape[1:]
        values = image.astype(np.float32)
        mean = None if t.mean_file is None else np.asarray(t.mean_file, dtype=np.float32)
        targets = (np.asarray(label, dtype=np.float32) / 255).round()  # OpenCV's Mat / 255 on uint8
        flip = self.mirror and bool(self.rng.integers(2))
        if self.crop:
            h_off = int(self.rng.integers(height - self.crop + 1))
            w_off = int(self.rng.integers(width - self.crop + 1))
            window = (slice(None), slice(h_off, h_off + self.crop), slice(w_off, w_off + self.crop))
            values, targets = values[window], targets[window]
            mean = None if mean is None else mean[window]
        if mean is not None:
            values = values - mean
        elif t.mean_values is not None:
            values = values - np.broadcast_to(t.mean_values, (image.shape[0],))[:, None, None]
        if t.scale != 1:
            values = values * t.scale
        if flip:
            values, targets = values[..., ::-1], targets[..., ::-1]
        return np.ascontiguousarray(values, dtype=np.float32), np.ascontiguousarray(targets)

    def load_batch(self):
        images, labels, sources = [], [], []
        for _ in range(self.batch_size):
            image_name, map_name = self.lines[self.position]
            source = f"{self.source}: {image_name}"
            values, targets = self._transform_pair(*self._read_pair(image_name, map_name), source)
            images.append(values)
            labels.append(targets)
            sources.append(source)
            self.advance()
        shapes = {image.shape for image in images}
        if len(shapes) > 1:
            raise DataError(f"{self.where}: {sources[0]}: images of different sizes in one batch "
                            f"({sorted(shapes)}); set new_height and new_width, crop_size or batch_size 1")
        return np.stack(images), np.stack(labels)


__all__ = ["ImageLabelmapDataLayer"]
