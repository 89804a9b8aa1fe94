"""DenseImageData: image and label-image pairs for segmentation (SegNet's data layer).

As alexgkendall/caffe-segnet's DenseImageDataLayer (with ENet's
label_divide_factor, TimoSaemann/caffe-enet): the list file holds
"image label_image" pairs (whitespace-separated tokens, two at a time); both
paths are taken under root_folder. Images are read in color (BGR) or, with
is_color: false, grayscale; label images always grayscale. With new_height
and new_width both set, images are resized bilinearly and label images with
nearest-neighbour interpolation (labels stay class indices), to new size /
label_divide_factor. Then, as the fork does it, per item:
  mirror     dense_image_data_param.mirror: a coin flip flips image and label;
  crop       crop_height x crop_width (both or neither): one random window,
             in any phase, cut from image and label alike;
  transform  transform_param's mean and scale on the image only; the label
             keeps its pixel values (class indices).
transform_param's own crop_size and mirror would draw different windows for
image and label (the fork stops on them at its first batch); here they are
refused at set-up. dense_image_data_param.mean_file is read by no fork code
and is ignored here too.

Tops: data (batch, C, H, W) and label (batch, 1, H', W'), H' x W' the label
images' size. The list is read in order, wrapping around, reshuffled at
every wrap when `shuffle` is set; each batch takes its first image's size
(so single-image batches of varying size work, as in the fork).
"""

import logging

import numpy as np

from ..data.image import COLOR, GRAY, read_image, resize_linear, resize_nearest
from ..data.listfile import read_pair_list
from ..data.transform import DataTransformer
from ..errors import DataError
from .base import register_layer
from .data import ListedReader, PrefetchingDataLayer

log = logging.getLogger("engine")


@register_layer
class DenseImageDataLayer(ListedReader, PrefetchingDataLayer):
    type = "DenseImageData"
    min_top_blobs = 2
    max_top_blobs = 2

    def setup(self, bottom, top):
        p = self.param.dense_image_data_param
        self.check(bool(p.source), "dense_image_data_param.source is required")
        self.check((p.new_height == 0) == (p.new_width == 0),
                   "Current implementation requires new_height and new_width to be set at the same time.")
        self.check((p.crop_height == 0) == (p.crop_width == 0),
                   "Current implementation requires crop_height and crop_width to be set at the same time.")
        self.check(p.batch_size > 0, "Positive batch size required")
        self.check(p.label_divide_factor > 0, "label_divide_factor must be positive")
        factor = int(p.label_divide_factor)
        if factor > 1:
            self.check(p.new_height > 0, "label_divide_factor above 1 needs new_height and new_width")
            self.check(p.crop_height == 0, "label_divide_factor above 1 cannot be combined with "
                                           "crop_height / crop_width")
        tp = self.param.transform_param
        self.check(not tp.mirror and tp.crop_size == 0,
                   "transform_param mirror and crop_size would transform image and label differently; "
                   "use dense_image_data_param's mirror, crop_height and crop_width")
        self.batch_size = int(p.batch_size)
        self.new_size = (int(p.new_height), int(p.new_width))
        self.label_size = (self.new_size[0] // factor, self.new_size[1] // factor)
        self.crop = (int(p.crop_height), int(p.crop_width))
        self.mirror = bool(p.mirror)
        self.mode = COLOR if p.is_color else GRAY
        self.root = p.root_folder
        self.source = p.source
        self.where = f"layer '{self.name}' (DenseImageData)"
        self.transformer = DataTransformer(tp, self.phase, where=self.where)
        try:
            lines = read_pair_list(p.source)
        except DataError as exc:
            raise DataError(f"{self.where}: {exc}") from None
        self.start_list(lines, p.shuffle, p.rand_skip, self.where, "examples")
        image, label = self._read_pair(*self.lines[self.position])
        top[0].reshape((self.batch_size,) + self.transformer.output_shape(self._cropped_shape(image.shape)))
        top[1].reshape((self.batch_size, 1) + self._cropped_shape(label.shape)[1:])
        log.info("output data size: %s", ",".join(map(str, top[0].shape)))
        self.start_prefetch(self.param.data_param.prefetch)

    def _cropped_shape(self, shape):
        return (shape[0],) + self.crop if self.crop[0] else tuple(shape)

    def _read(self, name, mode, resize, size):
        try:
            image = read_image(self.root + name, mode)
        except DataError as exc:
            raise DataError(f"{self.where}: Could not load {name}: {exc}") from None
        if size[0]:
            image = resize(image, size[1], size[0])
        return image

    def _read_pair(self, image_name, label_name):
        """(C, H, W) image and (1, H', W') label image, both uint8, checked against each other."""
        image = self._read(image_name, self.mode, resize_linear, self.new_size)
        label = self._read(label_name, GRAY, resize_nearest, self.label_size)
        expected = self.label_size if self.new_size[0] else image.shape[:2]
        if label.shape[:2] != tuple(expected):
            raise DataError(f"{self.where}: {self.source}: label image {label_name} is "
                            f"{label.shape[0]} x {label.shape[1]}, image {image_name} "
                            f"{image.shape[0]} x {image.shape[1]}: Input and label image heights and "
                            f"widths must match")
        if self.crop[0] and (image.shape[0] < self.crop[0] or image.shape[1] < self.crop[1]):
            raise DataError(f"{self.where}: {self.source}: image {image_name} of {image.shape[0]} x "
                            f"{image.shape[1]} is smaller than the crop {self.crop[0]} x {self.crop[1]}")
        return image.transpose(2, 0, 1), label.transpose(2, 0, 1)

    def _augment(self, image, label):
        """The fork's mirror, then its crop, drawn once for the pair."""
        if self.mirror and self.rng.integers(2):
            image, label = image[..., ::-1], label[..., ::-1]
        if self.crop[0]:
            height, width = self.crop
            h_off = int(self.rng.integers(image.shape[1] - height + 1))
            w_off = int(self.rng.integers(image.shape[2] - width + 1))
            image = image[:, h_off:h_off + height, w_off:w_off + width]
            label = label[:, h_off:h_off + height, w_off:w_off + width]
        return np.ascontiguousarray(image), np.ascontiguousarray(label)

    def load_batch(self):
        images, labels, sources = [], [], []
        for _ in range(self.batch_size):
            image_name, label_name = self.lines[self.position]
            image, label = self._augment(*self._read_pair(image_name, label_name))
            images.append(image)
            labels.append(label)
            sources.append(f"{self.source}: {image_name}")
            self.advance()
        for index, image in enumerate(images):
            if image.shape != images[0].shape:
                raise DataError(f"{self.where}: {sources[index]}: image of shape {image.shape} does not fit "
                                f"a batch of {images[0].shape} (set new_height and new_width, crop_height "
                                f"and crop_width, or batch_size 1)")
        return self.transformer.transform(images, sources=sources), np.stack(labels).astype(np.float32)


__all__ = ["DenseImageDataLayer"]
