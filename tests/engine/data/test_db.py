"""Databases (LMDB, LevelDB), Datum decoding and image decoding/resizing."""

import importlib.util
import io
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from engine import caffe_pb2
from engine.data.datum import array_to_datum, datum_to_array, encoded_datum, parse_datum
from engine.data.db import backend_name, open_db, open_writer
from engine.data.image import COLOR, GRAY, UNCHANGED, decode_image, resize_linear
from engine.errors import CaffeError, DataError
from reference import REFERENCE, scratch_copy

HAVE_PLYVEL = importlib.util.find_spec("plyvel") is not None
needs_plyvel = pytest.mark.skipif(not HAVE_PLYVEL, reason="plyvel (LevelDB support) is not installed")
BACKENDS = ["lmdb", pytest.param("leveldb", marks=needs_plyvel)]


def write_db(path, backend, records):
    with open_writer(path, backend) as writer:
        for key, value in records:
            writer.put(key, value)


@pytest.mark.parametrize("backend", BACKENDS)
def test_cursor_walks_in_key_order_and_wraps(tmp_path, backend):
    path = tmp_path / "db"
    write_db(path, backend, [("b", b"2"), ("a", b"1"), ("c", b"3")])
    database = open_db(path, backend)
    cursor = database.cursor()
    assert [v for _, v in cursor.read(7)] == [b"1", b"2", b"3", b"1", b"2", b"3", b"1"]
    assert len(database) == 3
    cursor.close()
    database.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_writer_refuses_existing_and_reader_missing(tmp_path, backend):
    path = tmp_path / "db"
    write_db(path, backend, [("a", b"1")])
    with pytest.raises(DataError, match="already exists"):
        open_writer(path, backend)
    with pytest.raises(DataError, match="No such file or directory; build it from your images with .tools/convert_imageset"):
        open_db(tmp_path / "nothing", backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_database_is_an_error(tmp_path, backend):
    path = tmp_path / "db"
    write_db(path, backend, [])
    database = open_db(path, backend)
    with pytest.raises(DataError, match="empty"):
        database.cursor()
    database.close()


def test_lmdb_map_grows(tmp_path, monkeypatch):
    import engine.data.db as db

    monkeypatch.setattr(db, "_LMDB_START_SIZE", 1 << 16)
    write_db(tmp_path / "db", "lmdb", [(f"{i:08d}", bytes(4000)) for i in range(100)])
    assert len(open_db(tmp_path / "db", "lmdb")) == 100


@needs_plyvel
def test_read_only_leveldb_is_read_from_a_copy_and_twice(tmp_path):
    path = tmp_path / "db"
    write_db(path, "leveldb", [("k", b"v")])
    for name in os.listdir(path):
        os.chmod(path / name, 0o444)
    os.chmod(path, 0o555)
    before = sorted(os.listdir(path))
    try:
        first, second = open_db(path, "leveldb"), open_db(path, "leveldb")
        assert first.cursor().value == b"v" and second.cursor().value == b"v"
        first.close()
        assert second.cursor().key == b"k"
        second.close()
        assert sorted(os.listdir(path)) == before
    finally:
        os.chmod(path, 0o755)


def test_backend_names():
    assert backend_name(caffe_pb2.DataParameter.LMDB) == "lmdb"
    assert backend_name(caffe_pb2.DataParameter.LEVELDB) == "leveldb"
    assert backend_name("LMDB") == "lmdb"
    with pytest.raises(CaffeError, match="unknown database backend"):
        backend_name("rocksdb")


# -- Datum ------------------------------------------------------------------------


def test_raw_and_float_datum_round_trip():
    pixels = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    datum = parse_datum(array_to_datum(pixels, 7).SerializeToString())
    assert datum.label == 7 and not datum.HasField("encoded")
    assert np.array_equal(datum_to_array(datum), pixels)
    values = np.linspace(-1, 1, 24, dtype=np.float32).reshape(2, 3, 4)
    back = datum_to_array(array_to_datum(values))
    assert back.dtype == np.float32 and np.array_equal(back, values)
    assert array_to_datum(pixels, mark_raw=True).HasField("encoded")


def test_bad_datum_records():
    with pytest.raises(DataError, match="not a Datum"):
        parse_datum(b"\xff\xff\xff", "db (key 1)")
    datum = caffe_pb2.Datum(channels=1, height=2, width=2, data=b"abc")
    with pytest.raises(DataError, match="holds 3 bytes"):
        datum_to_array(datum, where="db (key 1)")
    with pytest.raises(DataError, match="no pixels"):
        datum_to_array(caffe_pb2.Datum())
    with pytest.raises(DataError, match="could not decode"):
        datum_to_array(encoded_datum(b"not an image"))


def png_bytes(array, mode):
    buffer = io.BytesIO()
    Image.fromarray(array, mode).save(buffer, "PNG")
    return buffer.getvalue()


def test_encoded_datum_channels_and_bgr_order():
    rgb = np.random.default_rng(0).integers(0, 256, (5, 6, 3), dtype=np.uint8)
    datum = encoded_datum(png_bytes(rgb, "RGB"))
    native = datum_to_array(datum)
    assert native.shape == (3, 5, 6)
    assert np.array_equal(native, rgb[..., ::-1].transpose(2, 0, 1))
    gray = datum_to_array(datum, force_gray=True)
    r, g, b = (rgb[..., i].astype(np.int64) for i in range(3))
    assert np.array_equal(gray[0], (9797 * r + 19234 * g + 3737 * b) >> 15)
    one = np.full((4, 4), 77, dtype=np.uint8)
    assert datum_to_array(encoded_datum(png_bytes(one, "L"))).shape == (1, 4, 4)
    color = datum_to_array(encoded_datum(png_bytes(one, "L")), force_color=True)
    assert color.shape == (3, 4, 4) and (color == 77).all()
    with pytest.raises(DataError, match="force_color and force_gray"):
        datum_to_array(datum, force_color=True, force_gray=True)


def test_unchanged_keeps_alpha_in_bgra_order():
    rgba = np.random.default_rng(1).integers(0, 256, (3, 2, 4), dtype=np.uint8)
    bgra = decode_image(png_bytes(rgba, "RGBA"), UNCHANGED)
    assert np.array_equal(bgra, rgba[..., [2, 1, 0, 3]])
    assert decode_image(png_bytes(rgba, "RGBA"), COLOR).shape == (3, 2, 3)
    assert decode_image(png_bytes(rgba, "RGBA"), GRAY).shape == (3, 2, 1)


# -- resize -------------------------------------------------------------------------


def test_resize_identity_and_exact_half():
    image = np.random.default_rng(2).integers(0, 256, (6, 8, 3), dtype=np.uint8)
    assert np.array_equal(resize_linear(image, 8, 6), image)
    half = resize_linear(image, 4, 3)
    block = image.reshape(3, 2, 4, 2, 3).astype(int).sum(axis=(1, 3))
    assert np.array_equal(half, (block + 2) >> 2)


def test_resize_constant_image_stays_constant():
    image = np.full((7, 5, 1), 200, dtype=np.uint8)
    assert (resize_linear(image, 11, 3) == 200).all()


def test_resize_upscale_by_two_interpolates_between_pixels():
    image = np.array([[[0], [64]]], dtype=np.uint8).repeat(2, axis=0)
    out = resize_linear(image, 4, 2)[0, :, 0]
    # OpenCV: positions -0.25, 0.25, 0.75, 1.25 -> edge, 1/4, 3/4, edge.
    assert out.tolist() == [0, 16, 48, 64]


@pytest.mark.parametrize("case,mode,size", [("raw_resized_meanfile", COLOR, (32, 32)),
                                            pytest.param("gray_leveldb", GRAY, (20, 20), marks=needs_plyvel),
                                            ("encoded_png_meanvalue", COLOR, (24, 26))])
def test_decode_and_resize_match_caffes_opencv(case, mode, size, tmp_path):
    """Caffe's convert_imageset wrote these records from the images beside them."""
    folder = scratch_copy(REFERENCE / "data" / case, tmp_path)
    backend = "leveldb" if "leveldb" in case else "lmdb"
    database = open_db(folder / "db", backend)
    cursor = database.cursor()
    for _ in range(len(database)):
        name = cursor.key.decode().split("_", 1)[1]
        theirs = datum_to_array(parse_datum(cursor.value))
        image = decode_image((folder / "images" / name).read_bytes(), mode)
        ours = resize_linear(image, size[1], size[0]).transpose(2, 0, 1)
        assert np.array_equal(ours, theirs), name
        cursor.next()
    database.close()
    shutil.rmtree(tmp_path, ignore_errors=True)
