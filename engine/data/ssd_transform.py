"""SSD's DataTransformer for annotated images (weiliu89/caffe data_transformer.cpp,
im_transforms.cpp, sampler.cpp and AnnotatedDataLayer::load_batch).

Each image of a batch goes through, in SSD's order:
    distort   photometric distortion (distort_param; photometric.py)
    expand    placed at random on a canvas up to max_expand_ratio times
              larger, filled with the mean (expand_param)
    sample    one of the boxes the batch_samplers accept, at random, is
              cropped out (none accepted: the whole image)
    transform resize (resize_param: WARP, FIT_SMALL_SIZE,
              FIT_LARGE_SIZE_AND_PAD), noise (noise_param), crop_size crop,
              mirror, mean, scale
and its boxes follow every step; a box is kept when the emit_constraint
holds and something of it is left inside the crop.

Images are (H, W, C) uint8 BGR arrays. SSD re-encodes an encoded image as
JPEG after each of distort, expand and sample; here the pixels stay decoded
between steps, so there are no extra JPEG losses. The mean (mean_value or
mean_file) is subtracted at the output positions, after the mirror, as SSD
does for encoded images. Interpolation: LINEAR and NEAREST are OpenCV's;
AREA, CUBIC and LANCZOS4 (random choices of SSD's training recipes) use
Pillow's box, bicubic and Lanczos filters, close to but not bit-equal with
OpenCV's.
"""

from pathlib import Path

import numpy as np

from .. import backend, caffe_pb2
from ..errors import DataError
from ..formats import read_mean
from . import photometric
from .image import resize_linear
from .ssd_boxes import (UNIT, clip, generate_batch_samples, infer_new_size,
                        transform_annotation)

TRAIN = caffe_pb2.TRAIN
_RESIZE = caffe_pb2.ResizeParameter


def resize_image(image, width, height, interp):
    """cv::resize(image, (width, height)) with one of ResizeParameter's Interp_mode values."""
    if image.shape[:2] == (height, width):
        return image.copy()
    if interp == _RESIZE.LINEAR:
        return resize_linear(image, width, height)
    if interp == _RESIZE.NEAREST:
        rows = np.minimum(np.floor(np.arange(height) * (image.shape[0] / height)).astype(int), image.shape[0] - 1)
        cols = np.minimum(np.floor(np.arange(width) * (image.shape[1] / width)).astype(int), image.shape[1] - 1)
        return np.ascontiguousarray(image[rows][:, cols])
    from PIL import Image

    filters = {_RESIZE.AREA: Image.Resampling.BOX, _RESIZE.CUBIC: Image.Resampling.BICUBIC,
               _RESIZE.LANCZOS4: Image.Resampling.LANCZOS}
    planes = [np.asarray(Image.fromarray(np.ascontiguousarray(image[..., c])).resize(
        (width, height), filters[interp])) for c in range(image.shape[2])]
    return np.stack(planes, axis=-1)


def _pad(image, top, bottom, left, right, param, values):
    widths = ((top, bottom), (left, right), (0, 0))
    if param.pad_mode == _RESIZE.MIRRORED:
        return np.pad(image, widths, mode="reflect")
    if param.pad_mode == _RESIZE.REPEAT_NEAREST:
        return np.pad(image, widths, mode="edge")
    out = np.empty((image.shape[0] + top + bottom, image.shape[1] + left + right, image.shape[2]), np.uint8)
    out[...] = values
    out[top:top + image.shape[0], left:left + image.shape[1]] = image
    return out


def apply_resize(image, param, rng, where="resize_param"):
    """ApplyResize: the image under the resize policy (its `prob` unused, as in SSD)."""
    height, width = image.shape[:2]
    new_w, new_h = int(param.width), int(param.height)
    interp = _RESIZE.LINEAR
    if len(param.interp_mode):
        interp = param.interp_mode[int(rng.integers(len(param.interp_mode)))]
    values = list(param.pad_value) or [0.0]
    if len(values) not in (1, image.shape[2]):
        raise DataError(f"{where}: Specify either 1 pad_value or as many as channels: {image.shape[2]}")
    values = np.clip(np.rint(np.resize(np.asarray(values, np.float64), image.shape[2])), 0, 255).astype(np.uint8)
    orig = np.float32(width) / np.float32(height)
    aspect = np.float32(new_w) / np.float32(new_h)
    if param.resize_mode == _RESIZE.WARP:
        return resize_image(image, new_w, new_h, interp)
    if param.resize_mode == _RESIZE.FIT_SMALL_SIZE:
        if orig < aspect:
            return resize_image(image, new_w, int(np.floor(np.float32(new_w) / orig)), interp)
        return resize_image(image, int(np.floor(orig * np.float32(new_h))), new_h, interp)
    if orig > aspect:
        inner = int(np.floor(np.float32(new_w) / orig))
        resized = resize_image(image, new_w, inner, interp)
        pad = (new_h - inner) // 2
        return _pad(resized, pad, new_h - inner - pad, 0, 0, param, values)
    inner = int(np.floor(orig * np.float32(new_h)))
    resized = resize_image(image, inner, new_h, interp)
    pad = (new_w - inner) // 2
    return _pad(resized, 0, 0, pad, new_w - inner - pad, param, values)


def crop_image(image, box):
    """CropImage: the pixels under a normalized box (clipped to the image)."""
    height, width = image.shape[:2]
    x0, y0, x1, y1 = (np.float32(v) for v in clip(box))
    xmin, ymin = x0 * np.float32(width), y0 * np.float32(height)
    w_off, h_off = int(xmin), int(ymin)
    crop_w = max(1, int(x1 * np.float32(width) - xmin))
    crop_h = max(1, int(y1 * np.float32(height) - ymin))
    return np.ascontiguousarray(image[h_off:h_off + crop_h, w_off:w_off + crop_w])


def expand_image(image, ratio, fill, rng):
    """ExpandImage: the image at a random whole-pixel offset on a `ratio` times larger canvas.

    Returns the canvas and the canvas's box in the image's normalized coordinates.
    """
    height, width, channels = image.shape
    new_h, new_w = int(np.float32(height) * np.float32(ratio)), int(np.float32(width) * np.float32(ratio))
    h_off = float(np.floor(rng.uniform(0, new_h - height)))
    w_off = float(np.floor(rng.uniform(0, new_w - width)))
    canvas = np.empty((new_h, new_w, channels), dtype=np.uint8)
    canvas[...] = fill
    top, left = int(h_off), int(w_off)
    canvas[top:top + height, left:left + width] = image
    box = (-w_off / width, -h_off / height, (new_w - w_off) / width, (new_h - h_off) / height)
    return canvas, box


class SSDTransformer:
    """The per-image pipeline of AnnotatedData: `__call__(image, rows)` -> (C, H, W) float32, rows."""

    def __init__(self, param, phase, batch_samplers=(), where="data transformer"):
        self.param, self.phase, self.where = param, phase, where
        self.batch_samplers = list(batch_samplers)
        self.crop = int(param.crop_size)
        self.mean_file = self.mean_values = None
        if param.HasField("mean_file") and len(param.mean_value):
            raise DataError(f"{where}: Cannot specify mean_file and mean_value at the same time")
        if param.HasField("mean_file"):
            if not Path(param.mean_file).is_file():
                raise DataError(f"{where}: mean file {param.mean_file} not found")
            self.mean_file = read_mean(param.mean_file).astype(np.float32)
        if len(param.mean_value):
            self.mean_values = np.asarray(param.mean_value, dtype=np.float32)
        if param.HasField("resize_param"):
            rp = param.resize_param
            if rp.height <= 0 or rp.width <= 0:
                raise DataError(f"{where}: resize_param needs positive height and width "
                                f"(got {rp.height} x {rp.width})")
        if param.HasField("expand_param") and not param.expand_param.max_expand_ratio > 1:
            raise DataError(f"{where}: expand_param.max_expand_ratio must be greater than 1 "
                            f"(got {param.expand_param.max_expand_ratio:g})")
        if param.HasField("noise_param"):
            photometric.check_noise(param.noise_param, where)
        if param.force_color and param.force_gray:
            raise DataError(f"{where}: cannot set both force_color and force_gray")
        self.rng = np.random.default_rng(int(backend.rng().integers(2**63)))

    def output_shape(self, shape):
        """(C, H, W) of the output for an image of (H, W, C): InferBlobShape."""
        height, width, channels = shape
        if self.param.HasField("resize_param"):
            width, height = infer_new_size(self.param.resize_param, width, height)
        if self.crop:
            if height < self.crop or width < self.crop:
                raise DataError(f"{self.where}: crop_size {self.crop} is larger than the image "
                                f"({height} x {width})")
            return (channels, self.crop, self.crop)
        return (channels, height, width)

    def _mean(self, channels):
        if self.mean_values is None:
            return None
        if len(self.mean_values) not in (1, channels):
            raise DataError(f"{self.where}: Specify either 1 mean_value or as many as channels: {channels}")
        return np.resize(self.mean_values, channels)

    def augment(self, image, rows):
        """Distort, expand and sample (TRAIN-time steps; each only when configured)."""
        p, rng = self.param, self.rng
        if p.HasField("distort_param"):
            image = photometric.distort(image, p.distort_param, rng, self.where)
        if p.HasField("expand_param"):
            ep = p.expand_param
            if rng.uniform(0, 1) <= ep.prob and abs(ep.max_expand_ratio - 1) >= 1e-2:
                ratio = rng.uniform(1, ep.max_expand_ratio)
                image, box = expand_image(image, ratio, self._fill(image), rng)
                rows = transform_annotation(rows, image.shape[1], image.shape[0], box, False, p, False)
        if self.batch_samplers:
            samples = generate_batch_samples([tuple(r[2:6]) for r in rows], self.batch_samplers, rng, self.where)
            if samples:
                box = samples[int(rng.integers(len(samples)))]
                image = crop_image(image, box)
                rows = transform_annotation(rows, image.shape[1], image.shape[0], clip(box), False, p, False)
        return image, rows

    def _fill(self, image):
        """The expansion canvas: the mean values (cast to uint8 as cv::Scalar does), else 0."""
        channels = image.shape[2]
        if self.mean_file is not None:
            raise DataError(f"{self.where}: expand_param with mean_file is not supported (use mean_value)")
        mean = self._mean(channels)
        if mean is None:
            return np.zeros(channels, np.uint8)
        return np.clip(np.rint(mean), 0, 255).astype(np.uint8)

    def transform(self, image, rows):
        """Resize, noise, crop, mirror, mean and scale; the rows follow (Transform + TransformAnnotation)."""
        p, rng = self.param, self.rng
        height, width = image.shape[:2]
        mirror = bool(p.mirror) and bool(rng.integers(2))
        out = image
        if p.HasField("resize_param"):
            out = apply_resize(out, p.resize_param, rng, self.where)
        if p.HasField("noise_param"):
            out = photometric.apply_noise(out, p.noise_param, rng, self.where)
        img_h, img_w = out.shape[:2]
        h_off = w_off = 0
        crop_h, crop_w = img_h, img_w
        if self.crop:
            if img_h < self.crop or img_w < self.crop:
                raise DataError(f"{self.where}: crop_size {self.crop} is larger than the image "
                                f"({img_h} x {img_w})")
            crop_h = crop_w = self.crop
            if self.phase == TRAIN:
                h_off, w_off = int(rng.integers(img_h - crop_h + 1)), int(rng.integers(img_w - crop_w + 1))
            else:
                h_off, w_off = (img_h - crop_h) // 2, (img_w - crop_w) // 2
        window = (w_off / img_w, h_off / img_h, (w_off + crop_w) / img_w, (h_off + crop_h) / img_h)
        pixels = out[h_off:h_off + crop_h, w_off:w_off + crop_w]
        if mirror:
            pixels = pixels[:, ::-1]
        values = pixels.transpose(2, 0, 1).astype(np.float32)
        channels = values.shape[0]
        if self.mean_file is not None:
            if self.mean_file.shape != (channels, img_h, img_w):
                raise DataError(f"{self.where}: image of {channels} x {img_h} x {img_w} does not match the "
                                f"mean file {p.mean_file} of {' x '.join(map(str, self.mean_file.shape))}")
            values -= self.mean_file[:, h_off:h_off + crop_h, w_off:w_off + crop_w]
        else:
            mean = self._mean(channels)
            if mean is not None:
                values -= mean[:, None, None]
        if p.scale != 1:
            values *= np.float32(p.scale)
        rows = transform_annotation(rows, width, height, window, mirror, p, True)
        return values, rows

    def __call__(self, image, rows):
        image, rows = self.augment(image, rows)
        return self.transform(image, rows)


__all__ = ["SSDTransformer", "apply_resize", "crop_image", "expand_image", "resize_image", "UNIT"]
