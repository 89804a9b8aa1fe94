"""OpenCV's dnn module as an independent reference for layer forwards.

`opencv_forward` writes a small net (prototxt text) and its weights (a
.caffemodel written with engine.formats) to a temporary folder, reads both
with cv2.dnn.readNetFromCaffe, turns layer fusion off and returns the named
tops for the given inputs, in float32 (OpenCV's precision).
"""

import tempfile
from pathlib import Path

import numpy as np
import pytest

from engine import caffe_pb2, formats


def opencv_forward(prototxt, inputs, outputs, weights=None):
    """Run `prototxt` in OpenCV. inputs: {name: array}; weights: {layer: [arrays]}; returns arrays."""
    cv2 = pytest.importorskip("cv2")
    with tempfile.TemporaryDirectory() as folder:
        model = Path(folder) / "net.prototxt"
        model.write_text(prototxt)
        args = [str(model)]
        if weights:
            net = caffe_pb2.NetParameter()
            for name, arrays in weights.items():
                layer = net.layer.add()
                layer.name = name
                for array in arrays:
                    layer.blobs.add().CopyFrom(formats.array_to_blobproto(np.asarray(array, np.float32)))
            path = Path(folder) / "net.caffemodel"
            formats.write_binary(path, net)
            args.append(str(path))
        net = cv2.dnn.readNetFromCaffe(*args)
    net.enableFusion(False)
    for name, array in inputs.items():
        net.setInput(np.ascontiguousarray(array, dtype=np.float32), name)
    result = net.forward(list(outputs))
    return [np.asarray(r) for r in result]
