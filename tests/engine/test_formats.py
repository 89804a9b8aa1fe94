"""Reading Caffe's files: text that is not UTF-8, and binary files that are truncated or garbled,
are refused with one line naming the file (and where in it), never a traceback."""

import numpy as np
import pytest

import engine
from engine import formats
from engine.errors import CaffeError, ProtoError
from engine.net import Net


def test_bytes_that_are_not_utf8_name_line_column_and_offset(tmp_path):
    path = tmp_path / "net.prototxt"
    path.write_bytes(b'name: "x"\nlayer { name: "a\xff" }\n')
    with pytest.raises(ProtoError) as info:
        Net(str(path), engine.TEST)
    assert str(info.value) == (f"{path}:2:17: byte 0xff at offset 26 is not UTF-8 "
                               "(a prototxt must be UTF-8 text)")


def test_binary_file_given_as_prototxt(tmp_path):
    path = tmp_path / "solver.prototxt"
    path.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(ProtoError, match=rf"^{path}:2:118: byte 0x80 at offset 128 is not UTF-8 "
                                         r"\(a binary file, not a prototxt\?\)$"):
        formats.read_solver(str(path))


MLP = """
name: "mlp"
layer { name: "data" type: "Input" top: "x" input_param { shape { dim: 2 dim: 6 } } }
layer { name: "ip" type: "InnerProduct" bottom: "x" top: "y" inner_product_param { num_output: 3 } }
"""


@pytest.fixture
def mlp(tmp_path):
    path = tmp_path / "net.prototxt"
    path.write_text(MLP)
    return Net(str(path), engine.TEST)


def test_truncated_caffemodel(tmp_path, mlp):
    model = tmp_path / "w.caffemodel"
    mlp.save(str(model))
    cut = tmp_path / "cut.caffemodel"
    cut.write_bytes(model.read_bytes()[:-7])
    with pytest.raises(CaffeError, match=rf"^{cut}: not a binary NetParameter, or truncated or garbled"):
        mlp.copy_from(str(cut))


def test_caffemodel_whose_blob_lost_values(tmp_path, mlp):
    proto = mlp.to_proto()
    del proto.layer[1].blobs[0].data[5:]
    formats.write_binary(tmp_path / "short.caffemodel", proto)
    with pytest.raises(CaffeError, match=r"short.caffemodel: param 0 of layer 'ip': blob holds 5 values but its "
                                         r"shape \(3, 6\) needs 18"):
        mlp.copy_from(str(tmp_path / "short.caffemodel"))


def test_truncated_hdf5_weights(tmp_path, mlp):
    model = tmp_path / "w.caffemodel.h5"
    mlp.save_hdf5(str(model))
    cut = tmp_path / "cut.caffemodel.h5"
    cut.write_bytes(model.read_bytes()[:len(model.read_bytes()) // 2])
    with pytest.raises(CaffeError, match=rf"^{cut}: cannot read the HDF5 weights, truncated or garbled\?"):
        mlp.copy_from(str(cut))


def test_truncated_and_garbled_mean_file(tmp_path):
    mean = formats.array_to_blobproto(np.ones((3, 4, 4), np.float32))
    raw = mean.SerializeToString()
    path = tmp_path / "mean.binaryproto"
    path.write_bytes(raw[:-3])
    with pytest.raises(ProtoError, match=rf"^{path}: not a binary BlobProto, or truncated or garbled"):
        formats.read_mean(path)
    del mean.data[10:]
    path.write_bytes(mean.SerializeToString())
    with pytest.raises(ProtoError, match=r"blob holds 10 values but its shape \(3, 4, 4\) needs 48 \(a truncated "
                                         r"or garbled mean file\?\)"):
        formats.read_mean(path)
