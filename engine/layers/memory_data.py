"""MemoryData: batches served from arrays the user hands over with `reset`.

pycaffe's `net.set_input_arrays(data, labels)` calls `reset`, which checks
the arrays as pycaffe does (4-axis float32, channels/height/width of the
layer, as many labels as images, a multiple of batch_size). Each forward
serves the next batch_size images and labels, wrapping around; the label
top is batch_size x 1 x 1 x 1, as in Caffe.
"""

import numpy as np

from .. import backend
from .base import Layer, register_layer


@register_layer
class MemoryDataLayer(Layer):
    type = "MemoryData"
    exact_num_bottom_blobs = 0
    exact_num_top_blobs = 2

    def setup(self, bottom, top):
        p = self.param.memory_data_param
        self.batch_size = int(p.batch_size)
        self.channels, self.height, self.width = int(p.channels), int(p.height), int(p.width)
        self.check(self.batch_size * self.channels * self.height * self.width > 0,
                   "batch_size, channels, height, and width must be specified and positive in "
                   "memory_data_param")
        self.data = self.labels = None
        self.pos = 0

    def reshape(self, bottom, top):
        top[0].reshape(self.batch_size, self.channels, self.height, self.width)
        top[1].reshape(self.batch_size, 1, 1, 1)

    def _check_array(self, array, name, channels, height, width):
        if not isinstance(array, np.ndarray) or not array.flags.c_contiguous:
            raise self.error(f"{name} must be C contiguous")
        if array.ndim != 4:
            raise self.error(f"{name} must be 4-d")
        if array.dtype != np.float32:
            raise self.error(f"{name} must be float32")
        if array.shape[1] != channels:
            raise self.error(f"{name} has wrong number of channels")
        if array.shape[2] != height:
            raise self.error(f"{name} has wrong height")
        if array.shape[3] != width:
            raise self.error(f"{name} has wrong width")

    def reset(self, data, labels):
        """Serve `data` (N, C, H, W) and `labels` (N, 1, 1, 1) from the next forward on."""
        self._check_array(data, "data array", self.channels, self.height, self.width)
        self._check_array(labels, "labels array", 1, 1, 1)
        if data.shape[0] != labels.shape[0]:
            raise self.error("data and labels must have the same first dimension")
        if data.shape[0] % self.batch_size != 0:
            raise self.error("first dimensions of input arrays must be a multiple of batch size")
        # The arrays are kept, not copied, as Caffe keeps the pointers pycaffe gives it.
        self.data, self.labels = data, labels
        self.pos = 0

    def set_batch_size(self, batch_size):
        """Caffe's MemoryDataLayer::set_batch_size (only between resets)."""
        self.check(self.data is None, "Can't change batch_size until current data is consumed")
        self.batch_size = int(batch_size)

    def forward(self, bottom, top):
        self.check(self.data is not None, "MemoryDataLayer needs to be initialized by calling Reset")
        stop = self.pos + self.batch_size
        top[0].data[...] = backend.to_device(self.data[self.pos:stop], top[0].xp)
        top[1].data[...] = backend.to_device(self.labels[self.pos:stop], top[1].xp)
        self.pos = stop % self.data.shape[0]
