"""ImageData: batches of image files named in a list file ("path label" lines).

As Caffe's ImageDataLayer: paths are root_folder + the listed path; images
are read in color (3 channels, BGR) or, with is_color: false, grayscale;
resized to new_height x new_width when both are set (OpenCV's bilinear
resize, reproduced exactly); transformed by transform_param. The list is
read in order, wrapping around, and reshuffled at every wrap when `shuffle`
is set. The first image shapes the data top; labels are (batch_size,).
"""

import numpy as np

from ..data.image import COLOR, GRAY, read_image, resize_linear
from ..data.listfile import read_image_list
from ..data.transform import DataTransformer
from ..errors import DataError
from .base import register_layer
from .data import ListedReader, PrefetchingDataLayer


@register_layer
class ImageDataLayer(ListedReader, PrefetchingDataLayer):
    type = "ImageData"

    def setup(self, bottom, top):
        p = self.param.image_data_param
        self.check(p.HasField("source") and bool(p.source), "image_data_param.source is required")
        self.check((p.new_height == 0) == (p.new_width == 0),
                   "Current implementation requires new_height and new_width to be set at the same time.")
        self.check(p.batch_size > 0, "Positive batch size required")
        self.batch_size = int(p.batch_size)
        self.new_size = (int(p.new_height), int(p.new_width))
        self.mode = COLOR if p.is_color else GRAY
        self.root = p.root_folder
        self.source = p.source
        self.transformer = DataTransformer(self.param.transform_param, self.phase,
                                           where=f"layer '{self.name}' (ImageData)")
        self.start_list(read_image_list(p.source), p.shuffle, p.rand_skip, f"layer '{self.name}' (ImageData)")
        first = self._read(self.lines[self.position][0])
        shape = self.transformer.output_shape(first.shape)
        top[0].reshape((self.batch_size,) + shape)
        if len(top) > 1:
            top[1].reshape((self.batch_size,))
        self.start_prefetch(self.param.data_param.prefetch)

    def _read(self, name):
        """The image `name` (under root_folder) as a (C, H, W) uint8 array."""
        path = self.root + name
        try:
            image = read_image(path, self.mode)
        except DataError as exc:
            raise DataError(f"layer '{self.name}' (ImageData): Could not load {name}: {exc}") from None
        if self.new_size[0]:
            image = resize_linear(image, self.new_size[1], self.new_size[0])
        return np.ascontiguousarray(image.transpose(2, 0, 1))

    def load_batch(self):
        images, sources = [], []
        labels = np.empty(self.batch_size, dtype=np.float32)
        for index in range(self.batch_size):
            name, label = self.lines[self.position]
            images.append(self._read(name))
            sources.append(f"{self.source}: {name}")
            labels[index] = label
            self.advance()
        return self.transformer.transform(images, sources=sources), labels
