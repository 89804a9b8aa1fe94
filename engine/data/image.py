"""Image decoding and resizing that give the pixels Caffe's OpenCV calls give.

Caffe reads images with cv::imread / cv::imdecode and resizes them with
cv::resize (bilinear). We decode with Pillow and reproduce OpenCV's
conventions: channels in BGR(A) order, height x width x channels, uint8;
grayscale from a JPEG is libjpeg's luma channel, from a PNG libpng's
truncating weighted sum; EXIF orientation applied except in "unchanged"
mode. `resize_linear` is OpenCV's fixed-point INTER_LINEAR for 8-bit images,
rounding included, so databases written by our tools hold the bytes Caffe's
tools would have written.
"""

import io
import warnings

import numpy as np

from ..errors import DataError

COLOR, GRAY, UNCHANGED = "color", "gray", "unchanged"

# libpng's png_set_rgb_to_gray(0.299, 0.587) in 1/32768 units; blue takes the rest.
_PNG_GRAY = (9797, 19234, 32768 - 9797 - 19234)
_COEF_BITS = 11  # OpenCV's INTER_RESIZE_COEF_BITS
_COEF_SCALE = 1 << _COEF_BITS


def _open(data, where):
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            image = Image.open(io.BytesIO(data))
            image.load()
        return image
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise DataError(f"{where}: could not decode image ({exc})") from None


def _open_gray_jpeg(data, where):
    """A JPEG decoded straight to libjpeg's grayscale output (the Y channel)."""
    from PIL import Image

    try:
        image = Image.open(io.BytesIO(data))
        image.draft("L", image.size)
        image.load()
    except OSError as exc:
        raise DataError(f"{where}: could not decode image ({exc})") from None
    return image


def _eight_bit(image, where):
    """Pillow's 16- and 32-bit modes to 8 bits the way OpenCV does: keep the high byte."""
    array = np.asarray(image)
    if array.dtype == np.uint8:
        return array
    if array.dtype.kind in "iu" and image.mode.startswith("I"):
        return (array.astype(np.int64) >> 8).clip(0, 255).astype(np.uint8)
    raise DataError(f"{where}: unsupported image mode {image.mode}")


def _rgb_to_png_gray(rgb):
    r, g, b = (rgb[..., i].astype(np.uint32) for i in range(3))
    gray = (_PNG_GRAY[0] * r + _PNG_GRAY[1] * g + _PNG_GRAY[2] * b) >> 15
    return gray.astype(np.uint8)


def decode_image(data, mode=COLOR, where="<image>"):
    """Image bytes to an (H, W, C) uint8 array in OpenCV's BGR(A) order.

    mode: COLOR (3 channels, cv::IMREAD_COLOR), GRAY (1 channel,
    IMREAD_GRAYSCALE) or UNCHANGED (the file's own channels, imdecode(-1)).
    """
    from PIL import ImageOps

    if mode == GRAY and data[:2] == b"\xff\xd8":
        image = _open_gray_jpeg(data, where)
    else:
        image = _open(data, where)
    if mode != UNCHANGED:
        image = ImageOps.exif_transpose(image)
    if mode == UNCHANGED:
        return _unchanged(image, where)
    if mode == GRAY:
        if image.mode in ("L", "1"):
            return np.asarray(image.convert("L"))[..., None]
        if image.mode.startswith("I"):
            return _eight_bit(image, where)[..., None]
        return _rgb_to_png_gray(np.asarray(image.convert("RGB")))[..., None]
    if image.mode.startswith("I"):
        gray = _eight_bit(image, where)
        return np.repeat(gray[..., None], 3, axis=2)
    rgb = np.asarray(image.convert("RGB"))
    return np.ascontiguousarray(rgb[..., ::-1])


def _unchanged(image, where):
    has_alpha = image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
    if image.mode in ("L", "1"):
        return np.asarray(image.convert("L"))[..., None]
    if image.mode.startswith("I"):
        raise DataError(f"{where}: Image data type must be unsigned byte (16-bit image)")
    if has_alpha:
        rgba = np.asarray(image.convert("RGBA"))
        return np.ascontiguousarray(rgba[..., [2, 1, 0, 3]])
    rgb = np.asarray(image.convert("RGB"))
    return np.ascontiguousarray(rgb[..., ::-1])


def read_image(path, mode=COLOR):
    """cv::imread: the file at `path` decoded as `decode_image` does."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        raise DataError(f"Could not open or find file {path} ({exc.strerror or exc})") from None
    return decode_image(data, mode, where=str(path))


def encode_image(hwc, fmt):
    """(H, W, C) BGR uint8 to PNG or JPEG bytes (cv::imencode's role in convert_imageset)."""
    from PIL import Image

    fmt = fmt.lower().lstrip(".")
    pil_format = {"png": "PNG", "jpg": "JPEG", "jpeg": "JPEG", "bmp": "BMP"}.get(fmt)
    if pil_format is None:
        raise DataError(f"unsupported encode type '{fmt}' (use png, jpg or bmp)")
    channels = hwc.shape[2]
    if channels == 1:
        image = Image.fromarray(hwc[..., 0], "L")
    elif channels == 3:
        image = Image.fromarray(np.ascontiguousarray(hwc[..., ::-1]), "RGB")
    else:
        image = Image.fromarray(np.ascontiguousarray(hwc[..., [2, 1, 0, 3]]), "RGBA")
    buffer = io.BytesIO()
    options = {"quality": 95} if pil_format == "JPEG" else {}
    image.save(buffer, pil_format, **options)
    return buffer.getvalue()


# -- OpenCV's bilinear resize (8-bit, fixed point) ------------------------------------


def _axis_table(src, dst, clamp_weight):
    """Source index and fixed-point weights per output position along one axis."""
    scale = src / dst
    pos = ((np.arange(dst, dtype=np.float64) + 0.5) * scale - 0.5).astype(np.float32)
    index = np.floor(pos).astype(np.int64)
    frac = (pos - index.astype(np.float32)).astype(np.float32)
    if clamp_weight:
        # Horizontally OpenCV pins both ends to the edge pixel with weight 0.
        low, high = index < 0, index >= src - 1
        frac[low | high] = 0
        index[low] = 0
        index[high] = src - 1
    w0 = np.rint((np.float32(1) - frac) * np.float32(_COEF_SCALE)).astype(np.int64)
    w1 = np.rint(frac * np.float32(_COEF_SCALE)).astype(np.int64)
    first = np.clip(index, 0, src - 1)
    second = np.clip(index + 1, 0, src - 1)
    return first, second, w0, w1


def _area_half(image):
    """Exact 2x downscale: OpenCV turns INTER_LINEAR into its fast area mean."""
    h, w = image.shape[0] // 2, image.shape[1] // 2
    block = image[: 2 * h, : 2 * w].astype(np.int32)
    total = block[0::2, 0::2] + block[0::2, 1::2] + block[1::2, 0::2] + block[1::2, 1::2]
    return ((total + 2) >> 2).astype(np.uint8)


def resize_linear(image, width, height):
    """cv::resize(image, (width, height)) with INTER_LINEAR on an (H, W, C) uint8 array."""
    src_h, src_w, channels = image.shape
    if (src_h, src_w) == (height, width):
        return image.copy()
    if src_w == 2 * width and src_h == 2 * height:
        return _area_half(image)
    x0, x1, a0, a1 = _axis_table(src_w, width, clamp_weight=True)
    y0, y1, b0, b1 = _axis_table(src_h, height, clamp_weight=False)
    pixels = image.astype(np.int64)
    # Horizontal pass: exact integers scaled by 2048.
    rows = pixels[:, x0, :] * a0[None, :, None] + pixels[:, x1, :] * a1[None, :, None]
    rows = rows.reshape(src_h, width * channels)
    top, bottom = rows[y0], rows[y1]
    bt, bb = b0[:, None], b1[:, None]
    # Vertical pass as OpenCV's SIMD code does it over the whole row (checked against
    # Caffe's databases): 16-bit high products of the values shifted down by 4, then
    # (sum + 2) >> 2. This differs from exact rounding by one here and there.
    mixed = (((top >> 4) * bt) >> 16) + (((bottom >> 4) * bb) >> 16)
    out = ((mixed + 2) >> 2).clip(0, 255).astype(np.uint8)
    return out.reshape(height, width, channels)


def resize_nearest(image, width, height):
    """cv::resize(image, (width, height)) with INTER_NEAREST on an (H, W, C) array.

    OpenCV takes source column min(floor(x * (1 / (width / src_w))), src_w - 1),
    the scale's reciprocal computed in double as it does, and likewise for rows.
    """
    src_h, src_w = image.shape[:2]

    def table(src, dst):
        inverse = 1.0 / (dst / src)
        return np.minimum(np.floor(np.arange(dst) * inverse).astype(np.int64), src - 1)

    return image[table(src_h, height)][:, table(src_w, width)]
