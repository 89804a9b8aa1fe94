"""pycaffe's Detector: R-CNN style scoring of image windows with a TEST-phase Net.

Each window (ymin, xmin, ymax, xmax) is cut from its image, optionally with
surrounding context (`context_pad` pixels at the net's input scale, with the
mean filling whatever falls outside the image), warped to the input size and
scored; the results come back per window with its filename.
"""

import numpy as np

from engine.net import TEST

from . import io as caffe_io
from .classifier import input_transformer
from .pycaffe import Net


class Detector(Net):
    """Detector(model_file, pretrained_file, mean=None, input_scale=None,
    raw_scale=None, channel_swap=None, context_pad=None), as pycaffe's."""

    def __init__(self, model_file, pretrained_file, mean=None, input_scale=None, raw_scale=None,
                 channel_swap=None, context_pad=None):
        super().__init__(model_file, pretrained_file, TEST)
        self.transformer = input_transformer(self, mean, input_scale, raw_scale, channel_swap)
        self.configure_crop(context_pad)

    def detect_windows(self, images_windows):
        """Score windows: images_windows is [(image filename, [window, ...]), ...].

        Returns [{'window': w, 'prediction': scores, 'filename': f}, ...] in input order.
        """
        images_windows = [(name, list(windows)) for name, windows in images_windows]
        crops = []
        for filename, windows in images_windows:
            image = caffe_io.load_image(filename).astype(np.float32)
            crops.extend(self.crop(image, window) for window in windows)
        in_ = self.inputs[0]
        # Windows differ in size: warp each to the input size, then transform them together.
        in_dims = tuple(self.blobs[in_].data.shape[2:])
        crops = [c if tuple(c.shape[:2]) == in_dims else caffe_io.resize_image(c, in_dims) for c in crops]
        caffe_in = self.transformer.preprocess_batch(in_, np.stack(crops))
        predictions = self.forward_all(**{in_: caffe_in})[self.outputs[0]]
        if predictions.ndim == 4 and predictions.shape[2:] == (1, 1):
            predictions = predictions[:, :, 0, 0]
        detections = []
        index = 0
        for filename, windows in images_windows:
            for window in windows:
                detections.append({"window": window, "prediction": predictions[index], "filename": filename})
                index += 1
        return detections

    def detect_selective_search(self, image_fnames):
        """Windows proposed by Selective Search (the external
        `selective_search_ijcv_with_python` module, as pycaffe), then scored."""
        try:
            import selective_search_ijcv_with_python as selective_search
        except ImportError as exc:
            raise ImportError("detect_selective_search needs the selective_search_ijcv_with_python module "
                              "on PYTHONPATH (https://github.com/sergeyk/selective_search_ijcv_with_python)"
                              ) from exc
        image_fnames = [str(name) for name in image_fnames]
        windows_list = selective_search.get_windows(image_fnames, cmd="selective_search_rcnn")
        return self.detect_windows(zip(image_fnames, windows_list))

    def crop(self, im, window):
        """The window of `im` (H x W x K) warped to the input size, with context padding when configured."""
        window = np.asarray(window)
        if not self.context_pad:
            return im[int(window[0]):int(window[2]), int(window[1]):int(window[3])]
        crop_size = self.blobs[self.inputs[0]].width
        # Grow the box so that context_pad pixels of context surround it at the net's scale.
        scale = crop_size / (1.0 * crop_size - self.context_pad * 2)
        half_h = (window[2] - window[0] + 1) / 2.0
        half_w = (window[3] - window[1] + 1) / 2.0
        center = np.array([window[0] + half_h, window[1] + half_w])
        box = np.round(np.tile(center, 2) + scale * np.array([-half_h, -half_w, half_h, half_w]))
        scale_h = crop_size / (box[2] - box[0] + 1)
        scale_w = crop_size / (box[3] - box[1] + 1)
        # Whatever part of the grown box lies outside the image stays mean-filled.
        pad_y = int(round(max(0, -box[0]) * scale_h))
        pad_x = int(round(max(0, -box[1]) * scale_w))
        im_h, im_w = im.shape[:2]
        box = np.clip(box, 0.0, [im_h, im_w, im_h, im_w])
        clip_h, clip_w = box[2] - box[0] + 1, box[3] - box[1] + 1
        if clip_h <= 0 or clip_w <= 0:
            raise ValueError(f"window {window.tolist()} lies outside the {im_h}x{im_w} image")
        crop_h = int(round(clip_h * scale_h))
        crop_w = int(round(clip_w * scale_w))
        crop_h = min(crop_h, crop_size - pad_y)
        crop_w = min(crop_w, crop_size - pad_x)
        context = im[int(box[0]):int(box[2]), int(box[1]):int(box[3])]
        context = caffe_io.resize_image(context, (crop_h, crop_w))
        crop = np.ones(self.crop_dims, dtype=np.float32) * self.crop_mean
        crop[pad_y:pad_y + crop_h, pad_x:pad_x + crop_w] = context
        return crop

    def configure_crop(self, context_pad):
        """Set the crop size (the input's H x W x K) and, with context padding, the
        mean image in image layout that fills the padding."""
        in_ = self.inputs[0]
        inverse = np.argsort(self.transformer.transpose[in_])
        self.crop_dims = np.array(self.blobs[in_].data.shape[1:])[inverse]
        self.context_pad = context_pad
        if not self.context_pad:
            return
        channel_order = self.transformer.channel_swap.get(in_)
        raw_scale = self.transformer.raw_scale.get(in_)
        mean = self.transformer.mean.get(in_)
        if mean is None:
            self.crop_mean = np.zeros(self.crop_dims, dtype=np.float32)
            return
        crop_mean = np.broadcast_to(mean, tuple(self.blobs[in_].data.shape[1:])).transpose(inverse).copy()
        if channel_order is not None:
            crop_mean = crop_mean[:, :, np.argsort(channel_order)]
        if raw_scale is not None:
            crop_mean = crop_mean / raw_scale
        self.crop_mean = crop_mean.astype(np.float32)
