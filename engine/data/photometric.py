"""SSD's photometric distortion and noise (weiliu89/caffe im_transforms.cpp:
ApplyDistort, ApplyNoise) on (H, W, C) uint8 BGR images, in NumPy.

OpenCV's 8-bit conventions are reproduced: convertTo rounds to nearest
(halves to even) and saturates to [0, 255]; BGR <-> HSV uses hue in [0, 180)
and saturation and value in [0, 255], as cv::cvtColor does for 8-bit images
(so hue pushed past 180 by a shift wraps around on the way back, as in SSD).
"""

import io

import numpy as np

from ..errors import DataError


def convert_to(image, alpha=1.0, beta=0.0):
    """cv::Mat::convertTo(out, -1, alpha, beta) on uint8: round, then saturate."""
    values = image.astype(np.float32) * np.float32(alpha) + np.float32(beta)
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def bgr_to_hsv(image):
    """cv::cvtColor(BGR2HSV) for 8-bit images (OpenCV's fixed-point tables)."""
    bgr = image.astype(np.int32)
    b, g, r = bgr[..., 0], bgr[..., 1], bgr[..., 2]
    v = np.maximum(np.maximum(b, g), r)
    vmin = np.minimum(np.minimum(b, g), r)
    diff = v - vmin
    shift = 12
    # OpenCV's division tables: round((255 << 12) / i) and round((180 << 12) / (6 i)).
    with np.errstate(divide="ignore"):
        sdiv = np.where(v > 0, np.rint((255 << shift) / np.maximum(v, 1)), 0).astype(np.int64)
        hdiv = np.where(diff > 0, np.rint((180 << shift) / (6.0 * np.maximum(diff, 1))), 0).astype(np.int64)
    s = (diff * sdiv + (1 << (shift - 1))) >> shift
    vr, vg = v == r, v == g
    h = np.where(vr, g - b, np.where(vg, b - r + 2 * diff, r - g + 4 * diff)).astype(np.int64)
    h = (h * hdiv + (1 << (shift - 1))) >> shift
    h = np.where(h < 0, h + 180, h)
    return np.stack([h, s, v], axis=-1).astype(np.uint8)


def hsv_to_bgr(image):
    """cv::cvtColor(HSV2BGR) for 8-bit images: float maths, hue in [0, 180) scaled by 6/180."""
    hsv = image.astype(np.float32)
    h = hsv[..., 0] * np.float32(6.0 / 180)
    s = hsv[..., 1] * np.float32(1 / 255.0)
    v = hsv[..., 2] * np.float32(1 / 255.0)
    h = np.where(h < 0, h + 6, h)
    h = np.where(h >= 6, h - 6, h)
    sector = np.floor(h).astype(np.int32)
    h = h - sector
    sector = np.where((sector < 0) | (sector >= 6), 0, sector)
    p = v * (1 - s)
    q = v * (1 - s * h)
    t = v * (1 - s * (1 - h))
    # Per sector (b, g, r) as OpenCV's HSV2RGB_native table.
    table = [(p, t, v), (p, v, q), (t, v, p), (v, q, p), (v, p, t), (q, p, v)]
    out = np.zeros(image.shape, dtype=np.float32)
    for index, (bb, gg, rr) in enumerate(table):
        mask = sector == index
        out[..., 0] = np.where(mask, bb, out[..., 0])
        out[..., 1] = np.where(mask, gg, out[..., 1])
        out[..., 2] = np.where(mask, rr, out[..., 2])
    no_sat = s == 0
    for c in range(3):
        out[..., c] = np.where(no_sat, v, out[..., c])
    return np.clip(np.rint(out * 255), 0, 255).astype(np.uint8)


def adjust_brightness(image, delta):
    return convert_to(image, 1, delta) if abs(delta) > 0 else image


def adjust_contrast(image, factor):
    return convert_to(image, factor, 0) if abs(factor - 1) > 1e-3 else image


def adjust_saturation(image, factor):
    # SSD tests fabs(delta - 1) != 1e-3, which holds for every draw.
    hsv = bgr_to_hsv(image)
    hsv[..., 1] = convert_to(hsv[..., 1], factor, 0)
    return hsv_to_bgr(hsv)


def adjust_hue(image, delta):
    if not abs(delta) > 0:
        return image
    hsv = bgr_to_hsv(image)
    hsv[..., 0] = convert_to(hsv[..., 0], 1, delta)
    return hsv_to_bgr(hsv)


def _check_color(image, what, where):
    if image.shape[2] != 3:
        raise DataError(f"{where}: {what} needs a 3-channel (BGR) image, got {image.shape[2]} channel(s)")


def distort(image, param, rng, where="distort_param"):
    """ApplyDistort: brightness, contrast, saturation, hue and channel order, each with its
    probability; contrast comes second or fourth with even odds, as in SSD."""
    p = param
    if p.brightness_delta < 0:
        raise DataError(f"{where}: brightness_delta must be non-negative.")
    if p.hue_delta < 0:
        raise DataError(f"{where}: hue_delta must be non-negative.")
    for name in ("contrast", "saturation"):
        lower, upper = getattr(p, name + "_lower"), getattr(p, name + "_upper")
        if getattr(p, name + "_prob") > 0 and not 0 <= lower <= upper:
            raise DataError(f"{where}: {name} needs 0 <= {name}_lower <= {name}_upper "
                            f"(got {lower:g}, {upper:g})")

    def brightness(img):
        if rng.uniform(0, 1) < p.brightness_prob:
            return adjust_brightness(img, rng.uniform(-p.brightness_delta, p.brightness_delta))
        return img

    def contrast(img):
        if rng.uniform(0, 1) < p.contrast_prob:
            return adjust_contrast(img, rng.uniform(p.contrast_lower, p.contrast_upper))
        return img

    def saturation(img):
        if rng.uniform(0, 1) < p.saturation_prob:
            _check_color(img, "saturation distortion", where)
            return adjust_saturation(img, rng.uniform(p.saturation_lower, p.saturation_upper))
        return img

    def hue(img):
        if rng.uniform(0, 1) < p.hue_prob:
            _check_color(img, "hue distortion", where)
            return adjust_hue(img, rng.uniform(-p.hue_delta, p.hue_delta))
        return img

    def reorder(img):
        if rng.uniform(0, 1) < p.random_order_prob:
            _check_color(img, "random channel order", where)
            return np.ascontiguousarray(img[..., rng.permutation(3)])
        return img

    steps = (brightness, contrast, saturation, hue, reorder) if rng.uniform(0, 1) > 0.5 \
        else (brightness, saturation, hue, contrast, reorder)
    for step in steps:
        image = step(image)
    return image


# -- noise (ApplyNoise) --------------------------------------------------------------

_UNSUPPORTED_NOISE = ("hist_eq", "clahe", "gauss_blur", "convert_to_hsv", "convert_to_lab")


def check_noise(param, where):
    """Refuse the noise effects not written here, at set-up rather than mid-training."""
    for name in _UNSUPPORTED_NOISE:
        if getattr(param, name):
            raise DataError(f"{where}: noise_param.{name} is not supported")


def _jpeg_round_trip(image, quality):
    from PIL import Image

    from .image import decode_image, COLOR

    rgb = image[..., ::-1] if image.shape[2] == 3 else image[..., 0]
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb)).save(buffer, "JPEG", quality=int(quality))
    return decode_image(buffer.getvalue(), COLOR)


def _erode_cross(image):
    """cv::erode with getStructuringElement(MORPH_ELLIPSE, 3x3): a 3x3 cross, border replicated."""
    padded = np.pad(image, ((1, 1), (1, 1), (0, 0)), mode="edge")
    centre = padded[1:-1, 1:-1]
    return np.minimum.reduce([centre, padded[:-2, 1:-1], padded[2:, 1:-1], padded[1:-1, :-2], padded[1:-1, 2:]])


def apply_noise(image, param, rng, where="noise_param"):
    """ApplyNoise in SSD's order: decolorize, JPEG, erode, posterize, inverse, salt and pepper.

    As in SSD, noise_param.prob is not consulted: every listed effect applies.
    """
    check_noise(param, where)
    out = image
    if param.decolorize:
        _check_color(out, "decolorize", where)
        b, g, r = (out[..., i].astype(np.int32) for i in range(3))
        gray = (b * 3735 + g * 19235 + r * 9798 + (1 << 14)) >> 15  # cv::cvtColor BGR2GRAY (OpenCV 4)
        out = np.repeat(gray.astype(np.uint8)[..., None], 3, axis=2)
    if param.jpeg > 0:
        out = _jpeg_round_trip(out, param.jpeg)
    if param.erode:
        out = _erode_cross(out)
    if param.posterize:
        out = (out // 64 * 64 + 32).astype(np.uint8)  # colorReduce(div = 64)
    if param.inverse:
        out = 255 - out
    if param.saltpepper:
        sp = param.saltpepper_param
        values = [int(v) for v in sp.value]
        if len(values) not in (1, out.shape[2]):
            raise DataError(f"{where}: Specify either 1 saltpepper value or as many as channels: "
                            f"{out.shape[2]}")
        values = np.resize(np.asarray(values, dtype=np.uint8), out.shape[2])
        count = int(np.floor(np.float32(sp.fraction) * out.shape[0] * out.shape[1]))
        out = out.copy()
        cols = rng.integers(0, out.shape[1], count)
        rows = rng.integers(0, out.shape[0], count)
        out[rows, cols] = values
    return out
