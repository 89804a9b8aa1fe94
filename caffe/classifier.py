"""pycaffe's Classifier: a TEST-phase Net that takes images and returns class scores.

Images are resized to `image_dims`, cropped to the net's input size (ten
crops averaged when oversampling, else the center one), turned into the
input blob's layout by a caffe.io.Transformer, and run in batches.
"""

import numpy as np

from engine.net import TEST

from . import io as caffe_io
from .pycaffe import Net


def input_transformer(net, mean=None, input_scale=None, raw_scale=None, channel_swap=None):
    """The Transformer for a net's first input, as pycaffe's Classifier and Detector set it up."""
    in_ = net.inputs[0]
    transformer = caffe_io.Transformer({in_: net.blobs[in_].data.shape})
    transformer.set_transpose(in_, (2, 0, 1))
    if mean is not None:
        transformer.set_mean(in_, mean)
    if input_scale is not None:
        transformer.set_input_scale(in_, input_scale)
    if raw_scale is not None:
        transformer.set_raw_scale(in_, raw_scale)
    if channel_swap is not None:
        transformer.set_channel_swap(in_, channel_swap)
    return transformer


class Classifier(Net):
    """Classifier(model_file, pretrained_file, image_dims=None, mean=None,
    input_scale=None, raw_scale=None, channel_swap=None), as pycaffe's.

    mean: a (K,) per-channel or K x H x W mean, in the input blob's layout.
    raw_scale: multiply images (loaded in [0, 1]) by this, e.g. 255.
    channel_swap: e.g. (2, 1, 0) for the RGB -> BGR of models trained by Caffe.
    image_dims: the size images are resized to before cropping (default: the crop).
    """

    def __init__(self, model_file, pretrained_file, image_dims=None, mean=None, input_scale=None,
                 raw_scale=None, channel_swap=None):
        super().__init__(model_file, pretrained_file, TEST)
        in_ = self.inputs[0]
        self.transformer = input_transformer(self, mean, input_scale, raw_scale, channel_swap)
        self.crop_dims = np.array(self.blobs[in_].data.shape[2:])
        if image_dims is None or not len(image_dims):
            image_dims = self.crop_dims
        self.image_dims = image_dims

    def predict(self, inputs, oversample=True):
        """Class scores for a list of H x W x K images: (N, classes).

        oversample: average the ten crops (corners, center, mirrors) of each image;
        otherwise score the center crop only.
        """
        height, width = (int(d) for d in self.image_dims[:2])
        resized = np.zeros((len(inputs), height, width, inputs[0].shape[2]), dtype=np.float32)
        for index, image in enumerate(inputs):
            resized[index] = caffe_io.resize_image(image, (height, width))
        if oversample:
            crops = caffe_io.oversample(resized, self.crop_dims)
        else:
            center = np.array([height, width]) / 2.0
            top_left = (center - self.crop_dims / 2.0).astype(int)
            bottom_right = (center + self.crop_dims / 2.0).astype(int)
            crops = resized[:, top_left[0]:bottom_right[0], top_left[1]:bottom_right[1], :]
        in_ = self.inputs[0]
        caffe_in = self.transformer.preprocess_batch(in_, crops)
        predictions = self.forward_all(**{in_: caffe_in})[self.outputs[0]]
        if oversample:
            predictions = predictions.reshape((len(predictions) // 10, 10, -1)).mean(axis=1)
        return predictions
