"""Reading Caffe's files: text that is not UTF-8, and binary files that are truncated or garbled,
are refused with one line naming the file (and where in it), never a traceback."""

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
