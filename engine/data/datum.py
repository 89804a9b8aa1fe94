"""Datum records (Caffe's unit of a database) to arrays and back.

A Datum holds one image and its label: raw uint8 pixels in `data` (channels,
height, width order), or floats in `float_data`, or, when `encoded` is set,
the bytes of a PNG/JPEG file that Caffe decodes with OpenCV (BGR order).
Decoding follows Caffe's DataTransformer: an encoded record is decoded with
its own channels unless force_color / force_gray ask for 3 / 1.
"""

import numpy as np
from google.protobuf import message as pb_message

from .. import caffe_pb2
from ..errors import DataError
from .image import COLOR, GRAY, UNCHANGED, decode_image


def parse_datum(value, where="<datum>"):
    """A Datum from the bytes stored in a database; a bad record is a DataError."""
    datum = caffe_pb2.Datum()
    try:
        datum.ParseFromString(value)
    except pb_message.DecodeError as exc:
        raise DataError(f"{where}: not a Datum record ({exc})") from None
    return datum


def datum_to_array(datum, force_color=False, force_gray=False, where="<datum>"):
    """The pixels of a Datum as a (C, H, W) array: uint8 (raw or encoded) or float32 (float_data)."""
    if datum.encoded:
        if force_color and force_gray:
            raise DataError(f"{where}: cannot force_color and force_gray at the same time")
        mode = COLOR if force_color else GRAY if force_gray else UNCHANGED
        hwc = decode_image(datum.data, mode, where)
        return np.ascontiguousarray(hwc.transpose(2, 0, 1))
    shape = (datum.channels, datum.height, datum.width)
    count = shape[0] * shape[1] * shape[2]
    if count <= 0:
        raise DataError(f"{where}: Datum has no pixels (channels {shape[0]}, height {shape[1]}, "
                        f"width {shape[2]})")
    if len(datum.data):
        if len(datum.data) != count:
            raise DataError(f"{where}: Datum data holds {len(datum.data)} bytes but its shape "
                            f"{shape[0]}x{shape[1]}x{shape[2]} needs {count}")
        return np.frombuffer(datum.data, dtype=np.uint8).reshape(shape)
    if len(datum.float_data) != count:
        raise DataError(f"{where}: Datum float_data holds {len(datum.float_data)} values but its "
                        f"shape {shape[0]}x{shape[1]}x{shape[2]} needs {count}")
    return np.asarray(datum.float_data, dtype=np.float32).reshape(shape)


def array_to_datum(array, label=None, mark_raw=False):
    """pycaffe's array_to_datum: a raw Datum from a (C, H, W) array.

    uint8 arrays go into `data`; any other dtype into `float_data`; the label
    is written only when given.
    `mark_raw` writes `encoded: false` explicitly, as Caffe's CVMatToDatum
    (convert_imageset) does, so the records match Caffe's byte for byte.
    """
    array = np.asarray(array)
    if array.ndim != 3:
        raise DataError(f"a Datum holds a (channels, height, width) array, got shape {array.shape}")
    datum = caffe_pb2.Datum()
    datum.channels, datum.height, datum.width = (int(d) for d in array.shape)
    if array.dtype == np.uint8:
        datum.data = np.ascontiguousarray(array).tobytes()
    else:
        datum.float_data.extend(array.astype(np.float32).ravel().tolist())
    if label is not None:
        datum.label = int(label)
    if mark_raw:
        datum.encoded = False
    return datum


def encoded_datum(data, label=0):
    """A Datum holding the bytes of an image file, as Caffe's ReadFileToDatum."""
    datum = caffe_pb2.Datum()
    datum.data = bytes(data)
    datum.label = int(label)
    datum.encoded = True
    return datum


__all__ = ["COLOR", "GRAY", "UNCHANGED", "array_to_datum", "datum_to_array", "encoded_datum",
           "parse_datum"]
