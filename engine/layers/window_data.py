"""WindowData: R-CNN style windows cut from images and warped to crop_size.

The window file lists, per image: `# index`, the path, channels, height,
width, the number of windows, then one `label overlap x1 y1 x2 y2` line per
window. Windows with overlap >= fg_threshold are foreground (label > 0),
those below bg_threshold background (label and overlap forced to 0), the
rest unused. Each batch draws batch_size * (1 - fg_fraction) background
windows, then the foreground ones, at random with replacement. A window,
grown by context_pad (and squared with crop_mode "square"), is clipped to
the image, warped with OpenCV's bilinear resize and written at its padding
offset into a zeroed crop_size x crop_size image, mirrored at random when
`mirror` is set. As in Caffe the scale used is window_data_param.scale, the
mean comes from transform_param (a mean file read at its centre, or mean
values), and crop_size from transform_param.
"""

import logging
from pathlib import Path

import numpy as np

from ..data.image import COLOR, decode_image, read_image, resize_linear
from ..data.transform import DataTransformer
from ..errors import DataError
from .base import register_layer
from .data import PrefetchingDataLayer

log = logging.getLogger("engine")


def _round(value):
    """C's round(): halves away from zero, on a float32 value."""
    value = np.float32(value)
    return int(np.sign(value) * np.floor(np.abs(value) + np.float32(0.5)))


def read_window_file(path, root, fg_threshold, bg_threshold):
    """(images [(path, (c, h, w))], foreground windows, background windows) as Caffe parses them."""
    try:
        tokens = Path(path).read_text().split()
    except OSError as exc:
        raise DataError(f"Failed to open window file {path} ({exc.strerror or exc})") from None
    if len(tokens) < 2:
        raise DataError(f"{path}: Window file is empty")
    images, fg, bg = [], [], []
    pos = 0

    def take(kind, count=1):
        nonlocal pos
        if pos + count > len(tokens):
            raise DataError(f"{path}: the window file ends inside the entry of image {len(images)}")
        try:
            values = [kind(t) for t in tokens[pos:pos + count]]
        except ValueError:
            raise DataError(f"{path}: bad number in the entry of image {len(images)}: "
                            f"{' '.join(tokens[pos:pos + count])}") from None
        pos += count
        return values

    while pos < len(tokens):
        if tokens[pos] != "#":
            raise DataError(f"{path}: expected '#' to start an image entry, found '{tokens[pos]}'")
        pos += 1
        (index,) = take(int)
        (name,) = take(str)
        image_path = root + name
        size = tuple(take(int, 3))
        images.append((image_path, size))
        (count,) = take(int)
        for _ in range(count):
            label, overlap, x1, y1, x2, y2 = take(float, 6)
            window = [index, int(label), overlap, int(x1), int(y1), int(x2), int(y2)]
            if overlap >= fg_threshold:
                if window[1] <= 0:
                    raise DataError(f"{path}: foreground window of image {index} has label {window[1]}; "
                                    "foreground labels must be positive")
                fg.append(window)
            elif overlap < bg_threshold:
                window[1], window[2] = 0, 0.0
                bg.append(window)
    return images, fg, bg


@register_layer
class WindowDataLayer(PrefetchingDataLayer):
    type = "WindowData"

    def setup(self, bottom, top):
        p = self.param.window_data_param
        tp = self.param.transform_param
        self.check(p.HasField("source") and bool(p.source), "window_data_param.source is required")
        self.check(tp.crop_size > 0, "transform_param.crop_size must be positive")
        self.check(p.batch_size > 0, "window_data_param.batch_size must be positive")
        self.check(p.crop_mode in ("warp", "square"), f"unknown crop_mode '{p.crop_mode}' (warp or square)")
        self.images, self.fg, self.bg = read_window_file(p.source, p.root_folder, p.fg_threshold, p.bg_threshold)
        if not self.fg or not self.bg:
            raise DataError(f"layer '{self.name}' (WindowData): {p.source} needs foreground and background "
                            f"windows ({len(self.fg)} foreground, {len(self.bg)} background)")
        log.info("Number of images: %d", len(self.images))
        self.crop = int(tp.crop_size)
        self.channels = self.images[-1][1][0]
        self.batch_size = int(p.batch_size)
        self.scale = np.float32(p.scale)
        # The transformer gives the mean checks and values; the warping is this layer's own.
        self.transformer = DataTransformer(tp, self.phase, where=f"layer '{self.name}' (WindowData)")
        mean_file, mean_values = self.transformer.mean_file, self.transformer.mean_values
        if mean_file is not None and (mean_file.shape[0] != self.channels or min(mean_file.shape[1:]) < self.crop):
            raise DataError(f"layer '{self.name}' (WindowData): the mean file's "
                            f"{' x '.join(map(str, mean_file.shape))} does not fit {self.channels} channels "
                            f"cropped to {self.crop}")
        if mean_values is not None and len(mean_values) not in (1, self.channels):
            raise self.error(f"Specify either 1 mean_value or as many as channels: {self.channels}")
        self.cache = {}
        if p.cache_images:
            for path, _ in self.images:
                try:
                    with open(path, "rb") as handle:
                        self.cache[path] = handle.read()
                except OSError:
                    raise DataError(f"layer '{self.name}' (WindowData): Could not open or find file "
                                    f"{path}") from None
        self.rng = self.transformer.rng
        top[0].reshape(self.batch_size, self.channels, self.crop, self.crop)
        if len(top) > 1:
            top[1].reshape((self.batch_size,))
        self.start_prefetch(self.param.data_param.prefetch)

    def reader_state(self):
        """Windows are drawn at random: the generator's state is where the reader stands."""
        return {"rng": self.rng.bit_generator.state}

    def set_reader_state(self, state):
        self.rng.bit_generator.state = state["rng"]

    def _image(self, path):
        if path in self.cache:
            return decode_image(self.cache[path], COLOR, where=path)
        return read_image(path, COLOR)

    def _warp(self, image, window, mirror):
        """The window's pixels warped into place: (crop image (h, w, C), pad_h, pad_w)."""
        p = self.param.window_data_param
        crop = self.crop
        x1, y1, x2, y2 = window[3:7]
        size = (crop, crop)
        pad_h = pad_w = 0
        if p.context_pad > 0 or p.crop_mode == "square":
            f32 = np.float32
            context = f32(crop) / f32(crop - 2 * p.context_pad)
            half_h, half_w = f32(y2 - y1 + 1) / f32(2), f32(x2 - x1 + 1) / f32(2)
            cx, cy = f32(x1) + half_w, f32(y1) + half_h
            if p.crop_mode == "square":
                half_h = half_w = max(half_h, half_w)
            x1, x2 = _round(cx - half_w * context), _round(cx + half_w * context)
            y1, y2 = _round(cy - half_h * context), _round(cy + half_h * context)
            full_h, full_w = y2 - y1 + 1, x2 - x1 + 1
            px1, py1 = max(0, -x1), max(0, -y1)
            px2, py2 = max(0, x2 - image.shape[1] + 1), max(0, y2 - image.shape[0] + 1)
            x1, x2, y1, y2 = x1 + px1, x2 - px2, y1 + py1, y2 - py2
            scale_x, scale_y = f32(crop) / f32(full_w), f32(crop) / f32(full_h)
            width, height = _round(f32(x2 - x1 + 1) * scale_x), _round(f32(y2 - y1 + 1) * scale_y)
            px1, px2 = _round(f32(px1) * scale_x), _round(f32(px2) * scale_x)
            py1 = _round(f32(py1) * scale_y)
            pad_h, pad_w = py1, (px2 if mirror else px1)
            size = (min(height, crop - pad_h), min(width, crop - pad_w))
        if not (0 <= x1 <= x2 < image.shape[1] and 0 <= y1 <= y2 < image.shape[0]) or min(size) <= 0:
            raise DataError(f"layer '{self.name}' (WindowData): window {window[3:7]} of image {window[0]} "
                            f"does not fit its image of {image.shape[0]} x {image.shape[1]}")
        warped = resize_linear(np.ascontiguousarray(image[y1:y2 + 1, x1:x2 + 1]), size[1], size[0])
        if mirror:
            warped = warped[:, ::-1]
        return warped, pad_h, pad_w

    def load_batch(self):
        p = self.param.window_data_param
        crop, channels = self.crop, self.channels
        data = np.zeros((self.batch_size, channels, crop, crop), dtype=np.float32)
        labels = np.empty(self.batch_size, dtype=np.float32)
        num_fg = int(np.float32(self.batch_size) * np.float32(p.fg_fraction))
        mean_file = self.transformer.mean_file
        mean_values = self.transformer.mean_values
        item = 0
        for pool, count in ((self.bg, self.batch_size - num_fg), (self.fg, num_fg)):
            for _ in range(count):
                window = pool[int(self.rng.integers(len(pool)))]
                mirror = bool(self.param.transform_param.mirror) and bool(self.rng.integers(2))
                path = self.images[int(window[0])][0]
                warped, pad_h, pad_w = self._warp(self._image(path), window, mirror)
                h, w = warped.shape[:2]
                pixels = warped.transpose(2, 0, 1).astype(np.float32)
                if mean_file is not None:
                    off = (mean_file.shape[2] - crop) // 2
                    pixels -= mean_file[:, off + pad_h:off + pad_h + h, off + pad_w:off + pad_w + w]
                elif mean_values is not None:
                    pixels -= np.broadcast_to(mean_values, (channels,))[:, None, None]
                data[item, :, pad_h:pad_h + h, pad_w:pad_w + w] = pixels * self.scale
                labels[item] = window[1]
                item += 1
        return data, labels

