"""pycaffe's caffe.io: images in, blobs out, and proto <-> array converters.

Images follow pycaffe's convention: float32 arrays in [0, 1], height x width
x channels, RGB (or one gray channel). pycaffe reads them with scikit-image;
here Pillow reads them and the same conversions are done by hand, so the
arrays are the same (gray from RGB with scikit-image's luminance weights).
"""

import numpy as np
from PIL import Image

from engine import caffe_pb2
from engine.data import datum as _datum
from engine.errors import CaffeError, DataError

# scikit-image's rgb2gray weights (ITU-R 709 luma), which pycaffe's load_image uses.
_GRAY_WEIGHTS = np.array([0.2125, 0.7154, 0.0721])
_INT_SCALE = {"I;16": 65535.0, "I;16B": 65535.0, "I;16L": 65535.0, "I;16N": 65535.0, "I": 2147483647.0}


class TransformerError(CaffeError, ValueError):
    """A Transformer setting that does not fit the input it is for."""


# -- images ------------------------------------------------------------------------------
def _pixels(img):
    """The image's pixels as float64 in [0, 1], (H, W) for gray or (H, W, C) for color."""
    mode = img.mode
    if mode in _INT_SCALE:
        return np.asarray(img, dtype=np.float64) / _INT_SCALE[mode]
    if mode == "F":
        return np.asarray(img, dtype=np.float64)
    if mode == "1":
        return np.asarray(img, dtype=np.float64)
    if mode == "LA":
        img = img.convert("L")
    elif mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    elif mode not in ("L", "RGB", "RGBA"):
        img = img.convert("RGB")
    return np.asarray(img, dtype=np.float64) / 255.0


def load_image(filename, color=True):
    """Load an image as float32 in [0, 1]: (H, W, 3) when `color`, else (H, W, 1).

    A gray file read in color repeats its channel three times; an alpha
    channel is dropped; a color file read as gray is converted with
    scikit-image's weights, as pycaffe's `as_grey` reading does.
    """
    with Image.open(filename) as img:
        img.load()
        pixels = _pixels(img)
    if pixels.ndim == 3:
        pixels = pixels[:, :, :3]
        if not color:
            pixels = pixels @ _GRAY_WEIGHTS
    if pixels.ndim == 2:
        pixels = pixels[:, :, np.newaxis]
        if color:
            pixels = np.tile(pixels, (1, 1, 3))
    return pixels.astype(np.float32)


def _resize_unit_range(im, new_dims, order):
    """scikit-image's resize(mode='constant') without anti-aliasing: pixel-area
    aligned sampling, with zeros beyond the border blended in at the edges."""
    from scipy import ndimage  # imported on use: it would double the time `import caffe` takes

    factors = (new_dims[0] / im.shape[0], new_dims[1] / im.shape[1], 1.0)
    return ndimage.zoom(im, factors, order=order, mode="grid-constant", cval=0.0, grid_mode=True)


def resize_image(im, new_dims, interp_order=1):
    """Resize an (H, W, K) image to new_dims = (height, width); order 1 is bilinear.

    As pycaffe: 1- and 3-channel images are scaled into [0, 1] for the resize
    and back after it (a constant image stays that constant); other channel
    counts are zoomed directly.
    """
    new_dims = tuple(int(d) for d in new_dims)
    im = np.asarray(im)
    if im.shape[-1] in (1, 3):
        low, high = float(im.min()), float(im.max())
        if high <= low:
            return np.full(new_dims + (im.shape[-1],), low, dtype=np.float32)
        unit = (im.astype(np.float64) - low) / (high - low)
        resized = _resize_unit_range(unit, new_dims, interp_order) * (high - low) + low
    else:
        from scipy import ndimage

        factors = tuple(np.array(new_dims, dtype=float) / np.array(im.shape[:2])) + (1.0,)
        resized = ndimage.zoom(im, factors, order=interp_order)
    return resized.astype(np.float32)


def oversample(images, crop_dims):
    """Ten crops per image: the four corners and the center, then their mirrors.

    images: (N, H, W, K) or a list of (H, W, K); returns (10 N, h, w, K) in that
    order for each image, as pycaffe's oversample.
    """
    images = np.asarray(images)
    crop_h, crop_w = (int(d) for d in crop_dims)
    height, width = images.shape[1:3]
    center_y, center_x = int(height / 2.0 - crop_h / 2.0), int(width / 2.0 - crop_w / 2.0)
    corners = [(0, 0), (0, width - crop_w), (height - crop_h, 0), (height - crop_h, width - crop_w),
               (center_y, center_x)]
    crops = np.stack([images[:, y:y + crop_h, x:x + crop_w, :] for y, x in corners], axis=1)
    crops = np.concatenate([crops, crops[:, :, :, ::-1, :]], axis=1)
    return crops.reshape((-1, crop_h, crop_w, images.shape[-1])).astype(np.float32)


# -- Transformer ----------------------------------------------------------------------------
class Transformer:
    """Turns images (H x W x K, float) into a net input blob's layout and back.

    `inputs` maps input names to their blob shapes, e.g. {'data': net.blobs['data'].data.shape}.
    preprocess applies, in pycaffe's order: resize, transpose, channel swap,
    raw scale, mean subtraction, input scale.
    """

    def __init__(self, inputs):
        self.inputs = {name: tuple(int(d) for d in shape) for name, shape in inputs.items()}
        self.transpose = {}
        self.channel_swap = {}
        self.raw_scale = {}
        self.mean = {}
        self.input_scale = {}

    def _check_input(self, in_):
        if in_ not in self.inputs:
            raise TransformerError(f"{in_} is not one of the net inputs: {self.inputs}")

    def preprocess(self, in_, data):
        """Format `data` (H' x W' x K) for input `in_`: a float32 K x H x W array."""
        self._check_input(in_)
        caffe_in = np.array(data, dtype=np.float32)  # a copy: the caller's image is never changed
        in_dims = self.inputs[in_][2:]
        if tuple(caffe_in.shape[:2]) != tuple(in_dims):
            caffe_in = resize_image(caffe_in, in_dims)
        transpose = self.transpose.get(in_)
        if transpose is not None:
            caffe_in = caffe_in.transpose(transpose)
        channel_swap = self.channel_swap.get(in_)
        if channel_swap is not None:
            caffe_in = caffe_in[list(channel_swap), :, :]
        raw_scale = self.raw_scale.get(in_)
        if raw_scale is not None:
            caffe_in = caffe_in * raw_scale
        mean = self.mean.get(in_)
        if mean is not None:
            caffe_in = caffe_in - mean
        input_scale = self.input_scale.get(in_)
        if input_scale is not None:
            caffe_in = caffe_in * input_scale
        return caffe_in.astype(np.float32, copy=False)

    def preprocess_batch(self, in_, batch):
        """preprocess for a stack of same-size images (N x H' x W' x K) at once: N x K x H x W.

        Not in pycaffe; Classifier and Detector use it to avoid a loop over images.
        """
        self._check_input(in_)
        batch = np.asarray(batch, dtype=np.float32)
        in_dims = tuple(self.inputs[in_][2:])
        if tuple(batch.shape[1:3]) != in_dims:
            batch = np.stack([resize_image(image, in_dims) for image in batch])
        transpose = self.transpose.get(in_)
        if transpose is not None:
            batch = batch.transpose((0,) + tuple(int(a) + 1 for a in transpose))
        channel_swap = self.channel_swap.get(in_)
        if channel_swap is not None:
            batch = batch[:, list(channel_swap)]
        batch = batch * self.raw_scale.get(in_, 1)
        mean = self.mean.get(in_)
        if mean is not None:
            batch = batch - mean
        batch = batch * self.input_scale.get(in_, 1)
        return batch.astype(np.float32, copy=False)

    def deprocess(self, in_, data):
        """Undo preprocess (except the resize): a blob's image back to H x W x K."""
        self._check_input(in_)
        decaf_in = np.array(data, copy=True).squeeze()
        input_scale = self.input_scale.get(in_)
        if input_scale is not None:
            decaf_in = decaf_in / input_scale
        mean = self.mean.get(in_)
        if mean is not None:
            decaf_in = decaf_in + mean
        raw_scale = self.raw_scale.get(in_)
        if raw_scale is not None:
            decaf_in = decaf_in / raw_scale
        channel_swap = self.channel_swap.get(in_)
        if channel_swap is not None:
            decaf_in = decaf_in[np.argsort(channel_swap), :, :]
        transpose = self.transpose.get(in_)
        if transpose is not None:
            decaf_in = decaf_in.transpose(np.argsort(transpose))
        return decaf_in

    def set_transpose(self, in_, order):
        """Axis order from the image's H x W x K to the blob's, e.g. (2, 0, 1)."""
        self._check_input(in_)
        if len(order) != len(self.inputs[in_]) - 1:
            raise TransformerError("Transpose order needs to have the same number of dimensions as the "
                                   f"input: got {len(order)} axes for input '{in_}' {self.inputs[in_]}")
        self.transpose[in_] = order

    def set_channel_swap(self, in_, order):
        """Channel order after transposing, e.g. (2, 1, 0) for RGB -> BGR."""
        self._check_input(in_)
        if len(order) != self.inputs[in_][1]:
            raise TransformerError("Channel swap needs to have the same number of dimensions as the input "
                                   f"channels: got {len(order)} for {self.inputs[in_][1]} channels")
        self.channel_swap[in_] = order

    def set_raw_scale(self, in_, scale):
        """Multiply by this after transposing (255 for images loaded in [0, 1])."""
        self._check_input(in_)
        self.raw_scale[in_] = scale

    def set_mean(self, in_, mean):
        """Subtract a per-channel mean (K,) or an elementwise mean (K x H x W) after raw scaling."""
        self._check_input(in_)
        mean = np.asarray(mean)
        shape = mean.shape
        if mean.ndim == 1:
            if shape[0] != self.inputs[in_][1]:
                raise TransformerError(f"Mean channels incompatible with input: mean has {shape[0]} "
                                       f"values, input '{in_}' has {self.inputs[in_][1]} channels")
            mean = mean[:, np.newaxis, np.newaxis]
        else:
            if len(shape) == 2:
                shape = (1,) + shape
            if len(shape) != 3:
                raise TransformerError(f"Mean shape invalid: {mean.shape} (need K, K x H x W or H x W)")
            if tuple(shape) != tuple(self.inputs[in_][1:]):
                raise TransformerError(f"Mean shape incompatible with input shape: {tuple(shape)} vs "
                                       f"{tuple(self.inputs[in_][1:])}")
        self.mean[in_] = mean

    def set_input_scale(self, in_, scale):
        """Multiply by this last, after the mean is subtracted."""
        self._check_input(in_)
        self.input_scale[in_] = scale


# -- protos -----------------------------------------------------------------------------------
def blobproto_to_array(blob, return_diff=False):
    """A BlobProto's data (or diff) as a float64 array in its declared shape.

    Legacy num/channels/height/width win when any is set; otherwise `shape`
    is used, and a blob that declares no shape only converts when it holds
    exactly one value (a ValueError otherwise, as pycaffe).
    """
    if return_diff:
        values = blob.diff if len(blob.diff) or not len(blob.double_diff) else blob.double_diff
    else:
        values = blob.data if len(blob.data) or not len(blob.double_data) else blob.double_data
    array = np.array(values, dtype=np.float64)
    if any(blob.HasField(f) for f in ("num", "channels", "height", "width")):
        return array.reshape(blob.num, blob.channels, blob.height, blob.width)
    return array.reshape(tuple(blob.shape.dim))


def array_to_blobproto(arr, diff=None):
    """A BlobProto with `shape`, the values of `arr` (and optionally a diff)."""
    arr = np.asarray(arr)
    blob = caffe_pb2.BlobProto()
    blob.shape.dim.extend(int(d) for d in arr.shape)
    blob.data.extend(arr.astype(float).ravel().tolist())
    if diff is not None:
        blob.diff.extend(np.asarray(diff).astype(float).ravel().tolist())
    return blob


def arraylist_to_blobprotovector_str(arraylist):
    """Serialized BlobProtoVector holding each array."""
    vec = caffe_pb2.BlobProtoVector()
    vec.blobs.extend([array_to_blobproto(arr) for arr in arraylist])
    return vec.SerializeToString()


def blobprotovector_str_to_arraylist(str_):
    """The arrays of a serialized BlobProtoVector."""
    vec = caffe_pb2.BlobProtoVector()
    vec.ParseFromString(str_)
    return [blobproto_to_array(blob) for blob in vec.blobs]


def array_to_datum(arr, label=None):
    """A Datum from a C x H x W array: uint8 goes to `data`, anything else to
    `float_data`; the label is only written when given."""
    try:
        return _datum.array_to_datum(arr, label)
    except DataError as exc:
        raise ValueError(f"Incorrect array shape: {exc}") from None


def datum_to_array(datum):
    """A Datum's pixels as C x H x W: uint8 from `data`, float64 from `float_data`.

    An encoded Datum (PNG/JPEG bytes) is decoded as Caffe decodes it (BGR),
    which pycaffe leaves to the caller.
    """
    if datum.encoded:
        from engine.data.datum import datum_to_array as decode

        return decode(datum)
    shape = (datum.channels, datum.height, datum.width)
    if len(datum.data):
        return np.frombuffer(datum.data, dtype=np.uint8).reshape(shape)
    return np.array(datum.float_data, dtype=float).reshape(shape)
