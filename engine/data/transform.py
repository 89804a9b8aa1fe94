"""Caffe's DataTransformer: crop, mirror, mean subtraction and scale.

For each image (C, H, W), as Caffe does it:
    crop   crop_size x crop_size window: random offsets in TRAIN, centred
           ((H - crop) // 2) in TEST;
    mirror in TRAIN and TEST alike, a coin flip per image when `mirror` is set;
    mean   mean_file (a full-size C x H x W mean, read at the crop's
           unmirrored source positions) or mean_value (one, or one per
           channel), never both;
    scale  applied after the mean: top = (pixel - mean) * scale, in float32.
With pca_lighting (this project's extension), TRAIN images also get AlexNet's
PCA lighting shift, added before the mean (see lighting_shift).
A whole batch of same-shaped images is transformed with one gather; images
of different shapes (allowed with crop_size) are handled one shape at a time.
"""

from pathlib import Path

import numpy as np

from .. import backend
from ..errors import DataError
from ..formats import read_mean
from .hints import missing_data_hint

TRAIN = 0  # caffe_pb2.Phase.TRAIN


class DataTransformer:
    def __init__(self, param, phase, where="data transformer"):
        self.param = param
        self.phase = phase
        self.where = where
        self.crop = int(param.crop_size)
        self.scale = np.float32(param.scale)
        self.mirror = bool(param.mirror)
        self.mean_file = None
        self.mean_values = None
        if param.HasField("mean_file") and len(param.mean_value):
            raise DataError(f"{where}: Cannot specify mean_file and mean_value at the same time")
        if param.HasField("mean_file"):
            if not Path(param.mean_file).is_file():
                raise DataError(f"{where}: mean file {param.mean_file} not found; "
                                f"{missing_data_hint(param.mean_file)}")
            self.mean_file = read_mean(param.mean_file)
            if self.mean_file.ndim != 3:
                raise DataError(f"{where}: mean file {param.mean_file} holds a blob of shape "
                                f"{self.mean_file.shape}, expected 1 x channels x height x width")
        if len(param.mean_value):
            self.mean_values = np.asarray(param.mean_value, dtype=np.float32)
        self.lighting = _lighting(param.pca_lighting, where) if param.HasField("pca_lighting") else None
        self.force_color = bool(param.force_color)
        self.force_gray = bool(param.force_gray)
        # Its own generator, seeded from the engine's: the prefetch thread then draws
        # the same crops and flips for the same seed whatever the main thread does.
        self.rng = np.random.default_rng(int(backend.rng().integers(2**63)))

    def output_shape(self, shape):
        """Caffe's InferBlobShape for one (C, H, W) image: the crop replaces H and W."""
        channels, height, width = shape
        if self.crop:
            if height < self.crop or width < self.crop:
                raise DataError(f"{self.where}: crop_size {self.crop} is larger than the image "
                                f"({height} x {width})")
            return (channels, self.crop, self.crop)
        return (channels, height, width)

    def _check(self, shape, source):
        channels, height, width = shape
        if self.mean_file is not None and self.mean_file.shape != tuple(shape):
            raise DataError(f"{source}: image of {channels} x {height} x {width} does not match the "
                            f"mean file {self.param.mean_file} of "
                            f"{' x '.join(map(str, self.mean_file.shape))}")
        if self.mean_values is not None and len(self.mean_values) not in (1, channels):
            raise DataError(f"{source}: Specify either 1 mean_value or as many as channels: {channels} "
                            f"({len(self.mean_values)} given)")
        self.output_shape(shape)

    def transform(self, images, out=None, sources=None):
        """(N, C, h, w) float32 from a list of (C, H, W) arrays (or one (N, C, H, W) array).

        `sources` names each image (database key, file) for error messages.
        """
        if not isinstance(images, (list, tuple)):
            return self._transform_same(images, sources[0] if sources else self.where)
        sources = sources or [self.where] * len(images)
        shapes = [tuple(image.shape) for image in images]
        if len(set(shapes)) == 1:
            xp = backend.get_array_module(images[0])
            return self._transform_same(xp.stack(images), sources[0])
        # Shapes differ (legal when cropping): one gather per distinct shape.
        results = [None] * len(images)
        for shape in dict.fromkeys(shapes):
            members = [i for i, s in enumerate(shapes) if s == shape]
            xp = backend.get_array_module(images[members[0]])
            batch = self._transform_same(xp.stack([images[i] for i in members]), sources[members[0]])
            for row, index in enumerate(members):
                results[index] = batch[row]
        first = results[0].shape
        for index, result in enumerate(results):
            if result.shape != first:
                raise DataError(f"{sources[index]}: image of shape {shapes[index]} does not fit a batch "
                                f"of {first} (use crop_size or images of one size)")
        xp = backend.get_array_module(results[0])
        return xp.stack(results)

    def _transform_same(self, batch, source):
        xp = backend.get_array_module(batch)
        count, channels, height, width = batch.shape
        self._check((channels, height, width), source)
        rng = self.rng
        out_h, out_w = (self.crop, self.crop) if self.crop else (height, width)
        if self.crop and self.phase == TRAIN:
            h_off = rng.integers(0, height - self.crop + 1, count)
            w_off = rng.integers(0, width - self.crop + 1, count)
        else:
            h_off = np.full(count, (height - out_h) // 2)
            w_off = np.full(count, (width - out_w) // 2)
        flip = rng.integers(0, 2, count).astype(bool) if self.mirror else np.zeros(count, dtype=bool)
        mean = None if self.mean_file is None else xp.asarray(self.mean_file)
        if self.crop:
            values = _windows(batch, np.arange(count), h_off, w_off, out_h, out_w).astype(np.float32)
            if mean is not None:
                same = np.zeros(count, dtype=np.int64)  # every window from the one mean image
                mean = _windows(mean[None], same, h_off, w_off, out_h, out_w)
        else:
            values = batch.astype(np.float32)
        if self.lighting is not None and self.phase == TRAIN:
            if channels != 3:
                raise DataError(f"{source}: pca_lighting needs 3-channel (BGR) images, got {channels} channels")
            values += xp.asarray(lighting_shift(rng, count, *self.lighting))[:, :, None, None]
        if mean is not None:
            values -= mean
        elif self.mean_values is not None:
            per_channel = np.broadcast_to(self.mean_values, (channels,)) if len(self.mean_values) == 1 \
                else self.mean_values
            values -= xp.asarray(per_channel)[None, :, None, None]
        if self.scale != 1:
            values *= self.scale
        if flip.any():
            # The mean was read at the unmirrored positions, so flipping the result is
            # the same as Caffe's mirrored writes.
            flipped = xp.asarray(np.flatnonzero(flip))
            values[flipped] = values[flipped, ..., ::-1]
        return values


def _lighting(param, where):
    """(eigenvalues (3,), eigenvector matrix (3, 3), alpha std) of a PCALightingParameter."""
    if len(param.eigenvalue) != 3 or len(param.eigenvector) != 9:
        raise DataError(f"{where}: pca_lighting needs 3 eigenvalue and 9 eigenvector values "
                        f"(got {len(param.eigenvalue)} and {len(param.eigenvector)})")
    if not param.alpha_std >= 0:
        raise DataError(f"{where}: pca_lighting alpha_std must not be negative (got {param.alpha_std:g})")
    return (np.asarray(param.eigenvalue, np.float64), np.asarray(param.eigenvector, np.float64).reshape(3, 3),
            float(param.alpha_std))


def lighting_shift(rng, count, eigenvalues, eigenvectors, alpha_std):
    """AlexNet's PCA lighting: per image, alpha ~ N(0, alpha_std) for each eigenvector and the
    RGB shift 255 * V (alpha * eigenvalues) (values on the [0, 1] scale, as the published
    ImageNet figures), returned as (count, 3) float32 in Caffe's BGR channel order."""
    alpha = rng.normal(0.0, alpha_std, (count, 3))
    rgb = 255.0 * (alpha * eigenvalues) @ eigenvectors.T
    return rgb[:, ::-1].astype(np.float32)


def _windows(batch, items, h_off, w_off, out_h, out_w):
    """Window (h_off[n], w_off[n]) of image items[n], for each n: (N, C, out_h, out_w)."""
    xp = backend.get_array_module(batch)
    view = xp.lib.stride_tricks.sliding_window_view(batch, (out_h, out_w), axis=(2, 3))
    # view: (N, C, H - out_h + 1, W - out_w + 1, out_h, out_w); one advanced index per axis.
    return view[xp.asarray(items), :, xp.asarray(h_off), xp.asarray(w_off)]
