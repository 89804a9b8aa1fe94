"""Data layers: Data (LMDB/LevelDB), HDF5Data/HDF5Output, MemoryData, DummyData, ImageData."""

import importlib.util
import io
import threading
import time

import h5py
import numpy as np
import pytest
from PIL import Image

import engine
from engine import caffe_pb2
from engine.blob import Blob
from engine.data.datum import array_to_datum, encoded_datum
from engine.data.db import open_writer
from engine.data.prefetch import Prefetcher
from engine.errors import CaffeError, DataError
from layer_check import data_forward, layer_param, make_data_layer
from engine.layers import layer_class

HAVE_PLYVEL = importlib.util.find_spec("plyvel") is not None
needs_plyvel = pytest.mark.skipif(not HAVE_PLYVEL, reason="plyvel (LevelDB support) is not installed")


make_layer = make_data_layer
forward = data_forward


def write_images(path, backend, images, labels):
    with open_writer(path, backend) as writer:
        for index, (image, label) in enumerate(zip(images, labels)):
            writer.put(f"{index:08d}", array_to_datum(image, label).SerializeToString())


# -- Data ----------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["LMDB", pytest.param("LEVELDB", marks=needs_plyvel)])
def test_data_layer_serves_records_in_order_and_wraps(tmp_path, backend):
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (1, 4, 5), dtype=np.uint8) for _ in range(5)]
    write_images(tmp_path / "db", backend.lower(), images, range(5))
    layer, top = make_layer(f'type: "Data" transform_param {{ scale: 0.5 }} '
                            f'data_param {{ source: "{tmp_path / "db"}" batch_size: 3 backend: {backend} }}')
    assert top[0].shape == (3, 1, 4, 5) and top[1].shape == (3,)
    order = [0, 1, 2, 3, 4, 0, 1, 2, 3]
    for batch in range(3):
        data, label = forward(layer, top)
        wanted = order[3 * batch:3 * batch + 3]
        assert label.tolist() == wanted
        assert np.array_equal(data, np.stack([images[i] for i in wanted]).astype(np.float32) * 0.5)
    layer.stop()


def test_data_layer_without_label_top_and_encoded_records(tmp_path):
    pixels = np.random.default_rng(1).integers(0, 256, (6, 7, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buffer, "PNG")
    with open_writer(tmp_path / "db", "lmdb") as writer:
        writer.put("a", encoded_datum(buffer.getvalue(), 3).SerializeToString())
    layer, top = make_layer(f'type: "Data" data_param {{ source: "{tmp_path / "db"}" batch_size: 2 '
                            'backend: LMDB }', num_tops=1)
    (data,) = forward(layer, top)
    bgr = pixels[..., ::-1].transpose(2, 0, 1).astype(np.float32)
    assert np.array_equal(data, np.stack([bgr, bgr]))
    layer.stop()


def test_data_layer_in_a_net_trains_nothing_and_needs_no_backward(tmp_path):
    write_images(tmp_path / "db", "lmdb", [np.zeros((1, 2, 2), np.uint8)] * 2, [1, 2])
    net_param = caffe_pb2.NetParameter()
    engine.formats.parse_text(f'layer {{ name: "d" type: "Data" top: "data" top: "label" '
                              f'data_param {{ source: "{tmp_path / "db"}" batch_size: 2 backend: LMDB }} }}',
                              net_param)
    net = engine.Net(net_param, engine.TRAIN)
    out = net.forward()
    assert out["label"].tolist() == [1, 2]
    assert net.layer_need_backward == [False]
    net.layers[0].stop()


def test_data_layer_errors(tmp_path):
    with pytest.raises(DataError, match="No such file"):
        make_layer(f'type: "Data" data_param {{ source: "{tmp_path / "none"}" batch_size: 1 backend: LMDB }}')
    with pytest.raises(CaffeError, match="batch_size must be positive"):
        make_layer(f'type: "Data" data_param {{ source: "{tmp_path}" backend: LMDB }}')
    with open_writer(tmp_path / "bad", "lmdb") as writer:
        writer.put("00000000", array_to_datum(np.zeros((1, 2, 2), np.uint8)).SerializeToString())
        writer.put("00000001", b"\xff\xff\xff")
    layer, top = make_layer(f'type: "Data" data_param {{ source: "{tmp_path / "bad"}" batch_size: 2 '
                            'backend: LMDB }')
    with pytest.raises(DataError, match=r"key 00000001.*not a Datum"):
        forward(layer, top)
    with pytest.raises(DataError, match="stopped"):
        forward(layer, top)
    layer.stop()


def test_data_layer_channel_mismatch_with_mean_file(tmp_path):
    write_images(tmp_path / "db", "lmdb", [np.zeros((1, 2, 2), np.uint8)], [0])
    mean = engine.formats.array_to_blobproto(np.zeros((1, 3, 2, 2), np.float32))
    engine.formats.write_binary(tmp_path / "mean.binaryproto", mean)
    layer, top = make_layer(f'type: "Data" transform_param {{ mean_file: "{tmp_path / "mean.binaryproto"}" }} '
                            f'data_param {{ source: "{tmp_path / "db"}" batch_size: 1 backend: LMDB }}')
    with pytest.raises(DataError, match="does not match the mean file"):
        forward(layer, top)
    layer.stop()


# -- prefetch ----------------------------------------------------------------------------


def test_prefetcher_order_error_and_stop():
    counter = iter(range(100))
    prefetcher = Prefetcher(lambda: next(counter), count=2)
    assert [prefetcher.get() for _ in range(5)] == [0, 1, 2, 3, 4]
    prefetcher.stop()
    assert not prefetcher.running

    def broken():
        raise DataError("bad record")

    failing = Prefetcher(broken, count=2)
    with pytest.raises(DataError, match="bad record"):
        failing.get()
    failing.stop()


def test_dropped_layer_ends_its_thread(tmp_path):
    write_images(tmp_path / "db", "lmdb", [np.zeros((1, 2, 2), np.uint8)], [0])
    before = threading.active_count()
    layer, top = make_layer(f'type: "Data" data_param {{ source: "{tmp_path / "db"}" batch_size: 1 '
                            'backend: LMDB prefetch: 2 }')
    assert threading.active_count() == before + 1
    del layer
    deadline = time.time() + 5
    while threading.active_count() > before and time.time() < deadline:
        time.sleep(0.01)
    assert threading.active_count() == before


# -- HDF5Data / HDF5Output ------------------------------------------------------------------


def write_h5(path, data, label):
    with h5py.File(path, "w") as handle:
        handle["data"] = data
        handle["label"] = label


def test_hdf5_data_reads_files_in_order_and_wraps(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    a = np.arange(3 * 2 * 2, dtype=np.float64).reshape(3, 2, 2)
    b = -np.arange(2 * 2 * 2, dtype=np.float32).reshape(2, 2, 2) - 1
    write_h5("a.h5", a, np.arange(3))
    write_h5("b.h5", b, np.arange(10, 12))
    (tmp_path / "list.txt").write_text("a.h5\n  b.h5 \n")
    layer, top = make_layer('type: "HDF5Data" top: "data" top: "label" '
                            'hdf5_data_param { source: "list.txt" batch_size: 4 }')
    assert top[0].shape == (4, 2, 2) and top[1].shape == (4,)
    rows = np.concatenate([a, b]).astype(np.float32)
    labels = [0, 1, 2, 10, 11]
    for batch in range(3):
        index = [(4 * batch + i) % 5 for i in range(4)]
        data, label = forward(layer, top)
        assert np.array_equal(data, rows[index])
        assert label.tolist() == [labels[i] for i in index]


def test_hdf5_data_shuffle_is_a_permutation(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_h5("a.h5", np.arange(8, dtype=np.float32).reshape(8, 1), np.arange(8))
    (tmp_path / "list.txt").write_text("a.h5\n")
    layer, top = make_layer('type: "HDF5Data" top: "data" top: "label" '
                            'hdf5_data_param { source: "list.txt" batch_size: 8 shuffle: true }')
    data, label = forward(layer, top)
    assert sorted(label.tolist()) == list(range(8)) and label.tolist() != list(range(8))
    assert np.array_equal(data[:, 0], label)


def test_hdf5_data_errors(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    text = 'type: "HDF5Data" top: "data" top: "label" hdf5_data_param {{ source: "{}" batch_size: 2 }}'
    with pytest.raises(DataError, match="Failed to open source file: missing.txt"):
        make_layer(text.format("missing.txt"))
    (tmp_path / "empty.txt").write_text("\n")
    with pytest.raises(DataError, match="at least 1 HDF5 filename"):
        make_layer(text.format("empty.txt"))
    (tmp_path / "nofile.txt").write_text("nothing.h5\n")
    with pytest.raises(DataError, match="Failed opening HDF5 file: nothing.h5"):
        make_layer(text.format("nofile.txt"))
    with h5py.File("only_data.h5", "w") as handle:
        handle["data"] = np.zeros((2, 1))
    (tmp_path / "only.txt").write_text("only_data.h5\n")
    with pytest.raises(DataError, match="Failed to find HDF5 dataset label"):
        make_layer(text.format("only.txt"))
    write_h5("rows.h5", np.zeros((3, 1)), np.zeros(2))
    (tmp_path / "rows.txt").write_text("rows.h5\n")
    with pytest.raises(DataError, match="has 2 rows but data has 3"):
        make_layer(text.format("rows.txt"))
    # Rows whose shape changes from one file to the next, and a file cut short.
    write_h5("first.h5", np.zeros((2, 3)), np.zeros(2))
    write_h5("second.h5", np.zeros((2, 4)), np.zeros(2))
    (tmp_path / "two.txt").write_text("first.h5\nsecond.h5\n")
    layer, top = make_layer(text.format("two.txt"))
    with pytest.raises(DataError, match=r"second.h5: dataset data rows have shape \(4,\), but the first file's "
                                        r"have \(3,\)"):
        forward(layer, top)
    with open("first.h5", "rb") as handle:
        (tmp_path / "cut.h5").write_bytes(handle.read()[:1000])
    (tmp_path / "cut.txt").write_text("cut.h5\n")
    with pytest.raises(DataError, match=r"Failed reading HDF5 file: cut.h5 \(truncated or garbled\?"):
        make_layer(text.format("cut.txt"))


def test_hdf5_output_writes_data_and_label(tmp_path):
    param = layer_param(f'type: "HDF5Output" hdf5_output_param {{ file_name: "{tmp_path / "out.h5"}" }}')
    layer = layer_class("HDF5Output")(param)
    data, label = Blob((2, 3)), Blob((2,))
    data.data[...] = np.arange(6).reshape(2, 3)
    label.data[...] = [4, 5]
    layer.set_up([data, label], [])
    layer.run_forward([data, label], [])
    with h5py.File(tmp_path / "out.h5", "r") as handle:
        assert handle["data"].shape == (2, 3, 1, 1) and handle["label"].shape == (2, 1, 1, 1)
        assert np.array_equal(handle["data"][:, :, 0, 0], np.arange(6).reshape(2, 3))
    with pytest.raises(CaffeError, match="already saved"):
        layer.run_forward([data, label], [])


# -- MemoryData -------------------------------------------------------------------------------


def memory_net(batch_size=2):
    param = caffe_pb2.NetParameter()
    engine.formats.parse_text(f'layer {{ name: "m" type: "MemoryData" top: "data" top: "label" '
                              f'memory_data_param {{ batch_size: {batch_size} channels: 1 height: 2 width: 3 }} }}',
                              param)
    return engine.Net(param, engine.TEST)


def test_memory_data_serves_consecutive_batches():
    net = memory_net()
    data = np.arange(4 * 6, dtype=np.float32).reshape(4, 1, 2, 3)
    net.set_input_arrays(data, np.arange(4, dtype=np.float32))
    for start in (0, 2, 0):
        out = net.forward()
        assert np.array_equal(out["data"], data[start:start + 2])
        assert out["label"].shape == (2, 1, 1, 1) and out["label"].ravel().tolist() == [start, start + 1]


@pytest.mark.parametrize("data,labels,message", [
    (np.zeros((3, 1, 2, 3)), np.zeros(3), "multiple of batch size"),
    (np.zeros((2, 1, 2, 3)), np.zeros(4), "same first dimension"),
    (np.zeros((2, 2, 2, 3)), np.zeros(2), "data array has wrong number of channels"),
    (np.zeros((2, 1, 3, 3)), np.zeros(2), "data array has wrong height"),
    (np.zeros((2, 1, 2, 2)), np.zeros(2), "data array has wrong width"),
    (np.zeros((2, 6)), np.zeros(2), "data array must be 4-d"),
])
def test_memory_data_checks_like_pycaffe(data, labels, message):
    net = memory_net()
    with pytest.raises(CaffeError, match=message):
        net.set_input_arrays(data, labels)


def test_memory_data_needs_reset_and_positive_sizes():
    net = memory_net()
    with pytest.raises(CaffeError, match="needs to be initialized by calling Reset"):
        net.forward()
    with pytest.raises(CaffeError, match="must be specified and positive"):
        make_layer('type: "MemoryData" memory_data_param { batch_size: 2 channels: 1 height: 2 }')


# -- DummyData --------------------------------------------------------------------------------


def test_dummy_data_constant_fills_once_others_refill():
    layer, top = make_layer('type: "DummyData" dummy_data_param { shape { dim: 2 dim: 3 } shape { dim: 4 } '
                            'data_filler { type: "constant" value: 7 } data_filler { type: "uniform" } }')
    assert top[0].shape == (2, 3) and (top[0].data == 7).all()
    assert (top[1].data == 0).all(), "non-constant tops are first filled by forward"
    top[0].data[...] = 1
    first = forward(layer, top)
    second = forward(layer, top)
    assert (first[0] == 1).all(), "a constant top is never refilled"
    assert not np.array_equal(first[1], second[1])


def test_dummy_data_legacy_dims_and_default_filler():
    layer, top = make_layer('type: "DummyData" dummy_data_param { num: 2 channels: 3 height: 4 width: 5 '
                            'num: 1 channels: 1 height: 1 width: 1 }')
    assert top[0].shape == (2, 3, 4, 5) and top[1].shape == (1, 1, 1, 1)
    assert not top[0].data.any()


@pytest.mark.parametrize("text,message", [
    ('shape { dim: 1 } num: 1 channels: 1 height: 1 width: 1', "Both shape and legacy"),
    ('shape { dim: 1 } shape { dim: 1 } shape { dim: 1 }', "Must specify 'shape' once"),
    ('num: 1 num: 1 num: 1 channels: 1 height: 1 width: 1', "Must specify 'num' once"),
    ('shape { dim: 1 } data_filler {} data_filler {} data_filler {}', "Number of data fillers"),
])
def test_dummy_data_errors(text, message):
    with pytest.raises(CaffeError, match=message):
        make_layer(f'type: "DummyData" dummy_data_param {{ {text} }}')


# -- ImageData --------------------------------------------------------------------------------


def image_folder(tmp_path, count=3):
    rng = np.random.default_rng(4)
    pixels = []
    for index in range(count):
        rgb = rng.integers(0, 256, (4 + index, 5, 3), dtype=np.uint8)
        Image.fromarray(rgb, "RGB").save(tmp_path / f"im {index}.png")
        pixels.append(rgb)
    (tmp_path / "list.txt").write_text("".join(f"im {i}.png {10 + i}\n" for i in range(count)))
    return pixels


def test_image_data_reads_list_with_root_folder_and_resize(tmp_path):
    pixels = image_folder(tmp_path)
    layer, top = make_layer(f'type: "ImageData" image_data_param {{ source: "{tmp_path / "list.txt"}" '
                            f'root_folder: "{tmp_path}/" batch_size: 2 new_height: 4 new_width: 5 }}')
    assert top[0].shape == (2, 3, 4, 5)
    data, label = forward(layer, top)
    assert label.tolist() == [10, 11]
    assert np.array_equal(data[0], pixels[0][..., ::-1].transpose(2, 0, 1))
    data, label = forward(layer, top)
    assert label.tolist() == [12, 10]
    layer.stop()


def test_image_data_gray_and_shuffle(tmp_path):
    image_folder(tmp_path, 4)
    layer, top = make_layer(f'type: "ImageData" image_data_param {{ source: "{tmp_path / "list.txt"}" '
                            f'root_folder: "{tmp_path}/" batch_size: 4 is_color: false shuffle: true '
                            'new_height: 3 new_width: 3 }')
    data, label = forward(layer, top)
    assert data.shape == (4, 1, 3, 3) and sorted(label.tolist()) == [10, 11, 12, 13]
    layer.stop()


def test_image_data_errors(tmp_path):
    image_folder(tmp_path, 1)
    (tmp_path / "nolabel.txt").write_text("im 0.png 1\nim0.png\n")
    text = 'type: "ImageData" image_data_param {{ source: "{}" root_folder: "{}/" batch_size: 1 }}'
    with pytest.raises(DataError, match=r"nolabel.txt:2: 'im0.png' has no label"):
        make_layer(text.format(tmp_path / "nolabel.txt", tmp_path))
    with pytest.raises(DataError, match="Failed to open image list"):
        make_layer(text.format(tmp_path / "none.txt", tmp_path))
    (tmp_path / "missing.txt").write_text("gone.png 1\n")
    with pytest.raises(DataError, match="Could not load gone.png"):
        make_layer(text.format(tmp_path / "missing.txt", tmp_path))
    (tmp_path / "junk.png").write_bytes(b"junk")
    (tmp_path / "junk.txt").write_text("im 0.png 0\njunk.png 1\n")
    layer, top = make_layer(text.format(tmp_path / "junk.txt", tmp_path))
    forward(layer, top)
    with pytest.raises(DataError, match="could not decode"):
        forward(layer, top)
    layer.stop()
    with pytest.raises(CaffeError, match="new_height and new_width"):
        make_layer(f'type: "ImageData" image_data_param {{ source: "x" batch_size: 1 new_height: 3 }}')


# -- WindowData --------------------------------------------------------------------------------


def window_setup(tmp_path, extra=""):
    rgb = np.random.default_rng(5).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    Image.fromarray(rgb, "RGB").save(tmp_path / "scene.png")
    (tmp_path / "windows.txt").write_text(
        "# 0\nscene.png\n3\n20\n30\n3\n"
        "2 0.9 4 2 13 11\n"     # foreground, label 2
        "1 0.3 0 0 7 5\n"       # background: label forced to 0
        "1 0.6 0 0 9 9\n")      # neither: unused
    text = (f'type: "WindowData" transform_param {{ crop_size: 8 {extra} }} '
            f'window_data_param {{ source: "{tmp_path / "windows.txt"}" root_folder: "{tmp_path}/" '
            'batch_size: 4 fg_fraction: 0.5 fg_threshold: 0.8 bg_threshold: 0.5 scale: 0.5 }')
    return rgb, text


def test_window_data_warps_windows(tmp_path):
    from engine.data.image import resize_linear

    rgb, text = window_setup(tmp_path)
    layer, top = make_layer(text)
    data, label = forward(layer, top)
    assert data.shape == (4, 3, 8, 8) and label.tolist() == [0, 0, 2, 2]
    bgr = rgb[..., ::-1]
    background = resize_linear(np.ascontiguousarray(bgr[0:6, 0:8]), 8, 8).transpose(2, 0, 1)
    foreground = resize_linear(np.ascontiguousarray(bgr[2:12, 4:14]), 8, 8).transpose(2, 0, 1)
    assert np.array_equal(data[0], background.astype(np.float32) * 0.5)
    assert np.array_equal(data[3], foreground.astype(np.float32) * 0.5)
    layer.stop()


def test_window_data_context_pad_leaves_zero_border(tmp_path):
    _, text = window_setup(tmp_path, "mirror: false")
    text = text.replace("scale: 0.5", "scale: 1 context_pad: 2")
    layer, top = make_layer(text)
    data, _ = forward(layer, top)
    # The background window touches the image's top-left corner: padding there stays zero.
    assert not data[0, :, 0, :].any() and not data[0, :, :, 0].any()
    assert data[0, :, 3:, 3:].any()
    layer.stop()


def test_window_data_errors(tmp_path):
    _, text = window_setup(tmp_path)
    with pytest.raises(DataError, match="Failed to open window file"):
        make_layer(text.replace("windows.txt", "none.txt"))
    (tmp_path / "windows.txt").write_text("# 0\nscene.png\n3\n20\n30\n1\n1 0.1 0 0 3 3\n")
    with pytest.raises(DataError, match="needs foreground and background"):
        make_layer(text)
    (tmp_path / "windows.txt").write_text("# 0\nscene.png\n3\n20\n")
    with pytest.raises(DataError, match="ends inside the entry"):
        make_layer(text)


@pytest.mark.gpu
def test_data_and_hdf5_layers_fill_gpu_tops(tmp_path, monkeypatch):
    from engine import backend

    monkeypatch.chdir(tmp_path)
    images = [np.full((1, 3, 3), i, np.uint8) for i in range(3)]
    write_images(tmp_path / "db", "lmdb", images, range(3))
    write_h5("a.h5", np.arange(6, dtype=np.float32).reshape(3, 2), np.arange(3))
    (tmp_path / "list.txt").write_text("a.h5\n")
    texts = [f'type: "Data" data_param {{ source: "{tmp_path / "db"}" batch_size: 2 backend: LMDB }}',
             'type: "HDF5Data" top: "data" top: "label" hdf5_data_param { source: "list.txt" batch_size: 2 }']
    for text in texts:
        cpu_layer, cpu_top = make_layer(text)
        expected = forward(cpu_layer, cpu_top)
        getattr(cpu_layer, "stop", lambda: None)()
        engine.set_mode_gpu()
        try:
            gpu_layer, gpu_top = make_layer(text)
            got = forward(gpu_layer, gpu_top)
            getattr(gpu_layer, "stop", lambda: None)()
        finally:
            engine.set_mode_cpu()
        for ours, theirs in zip(got, expected):
            assert np.array_equal(backend.to_host(ours), theirs)


def test_data_layer_rand_skip_starts_within_the_skip(tmp_path):
    write_images(tmp_path / "db", "lmdb", [np.zeros((1, 1, 1), np.uint8)] * 6, range(6))
    starts = set()
    for seed in range(12):
        engine.set_random_seed(seed)
        layer, top = make_layer(f'type: "Data" data_param {{ source: "{tmp_path / "db"}" batch_size: 2 '
                                'backend: LMDB rand_skip: 3 }')
        _, label = forward(layer, top)
        layer.stop()
        assert label[1] == (label[0] + 1) % 6
        starts.add(int(label[0]))
    assert starts <= {0, 1, 2} and len(starts) > 1


# -- exact resume: reader states ---------------------------------------------------------------


def replay(layer, top, batches=4):
    """Batches after the layer's resume state, and the same batches again after restoring it."""
    state = layer.resume_state()
    engine_rng = engine.backend.rng().bit_generator.state
    first = [forward(layer, top) for _ in range(batches)]
    layer.restore_resume_state(state)
    engine.backend.rng().bit_generator.state = engine_rng
    return first, [forward(layer, top) for _ in range(batches)]


def assert_same_batches(first, again):
    for (data, label), (data2, label2) in zip(first, again):
        np.testing.assert_array_equal(data, data2)
        np.testing.assert_array_equal(label, label2)


def test_image_data_resumes_its_shuffled_list_and_mirroring(tmp_path):
    image_folder(tmp_path, 5)
    layer, top = make_layer(f'type: "ImageData" image_data_param {{ source: "{tmp_path / "list.txt"}" '
                            f'root_folder: "{tmp_path}/" batch_size: 2 shuffle: true new_height: 3 '
                            'new_width: 3 } transform_param { mirror: true crop_size: 2 }', phase=caffe_pb2.TRAIN)
    forward(layer, top)
    first, again = replay(layer, top, 6)  # past the end of the list: a reshuffle
    assert_same_batches(first, again)
    layer.stop()


def test_data_layer_resume_drops_read_ahead_batches(tmp_path):
    images = [np.full((1, 2, 2), i, np.uint8) for i in range(7)]
    write_images(str(tmp_path / "db"), "lmdb", images, range(7))
    layer, top = make_layer(f'type: "Data" data_param {{ source: "{tmp_path / "db"}" batch_size: 3 '
                            'backend: LMDB prefetch: 4 } transform_param { mirror: true }', phase=caffe_pb2.TRAIN)
    forward(layer, top)
    time.sleep(0.2)  # let the thread read ahead as far as it may
    first, again = replay(layer, top)
    assert [label.tolist() for _, label in first] == [[3, 4, 5], [6, 0, 1], [2, 3, 4], [5, 6, 0]]
    assert_same_batches(first, again)
    layer.stop()


def test_hdf5_data_resumes_its_file_and_row_order(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_h5("a.h5", np.arange(5, dtype=np.float32).reshape(5, 1), np.arange(5))
    write_h5("b.h5", np.arange(5, 8, dtype=np.float32).reshape(3, 1), np.arange(5, 8))
    (tmp_path / "list.txt").write_text("a.h5\nb.h5\n")
    layer, top = make_layer('type: "HDF5Data" top: "data" top: "label" '
                            'hdf5_data_param { source: "list.txt" batch_size: 3 shuffle: true }')
    forward(layer, top)
    first, again = replay(layer, top, 5)
    assert_same_batches(first, again)


def test_window_data_resumes_its_draws(tmp_path):
    _, text = window_setup(tmp_path, "mirror: true")
    layer, top = make_layer(text, phase=caffe_pb2.TRAIN)
    forward(layer, top)
    first, again = replay(layer, top, 3)
    assert_same_batches(first, again)
    layer.stop()
