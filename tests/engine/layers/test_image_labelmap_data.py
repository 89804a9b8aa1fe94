"""HED's ImageLabelmapData: image / edge-map pairs, the map divided by 255 with OpenCV's
rounding, one crop window and flip for both, mean and scale on the image only; checked
against OpenCV's imread, resize and Mat division; errors for bad settings and files."""

import cv2
import numpy as np
import pytest
from layer_check import data_forward, make_data_layer

from engine import caffe_pb2
from engine.errors import DataError, LayerError
from engine.formats import array_to_blobproto


def make_layer(text, phase=caffe_pb2.TRAIN):
    return make_data_layer(text, phase=phase)


run = data_forward


def edge_folder(tmp_path, count=2, size=(9, 12)):
    rng = np.random.default_rng(17)
    for index in range(count):
        cv2.imwrite(str(tmp_path / f"img{index}.jpg"), rng.integers(0, 256, size + (3,), dtype=np.uint8))
        edges = rng.integers(0, 256, size, dtype=np.uint8)
        edges[0, :3] = [127, 128, 255]  # either side of the rounding
        cv2.imwrite(str(tmp_path / f"gt{index}.png"), edges)
    (tmp_path / "pairs.lst").write_text("".join(f"img{i}.jpg gt{i}.png\n" for i in range(count)))


def param_text(tmp_path, extra="batch_size: 1", transform=""):
    return (f'type: "ImageLabelmapData" transform_param {{ {transform} }} image_data_param {{ '
            f'source: "{tmp_path / "pairs.lst"}" root_folder: "{tmp_path}/" {extra} }}')


def opencv_pair(tmp_path, index, size=None):
    """The fork's reading: imread, resize both bilinearly, the map divided by 255 as a Mat."""
    image = cv2.imread(str(tmp_path / f"img{index}.jpg"), cv2.IMREAD_COLOR)
    edges = cv2.imread(str(tmp_path / f"gt{index}.png"), cv2.IMREAD_GRAYSCALE)
    if size:
        image = cv2.resize(image, size[::-1], interpolation=cv2.INTER_LINEAR)
        edges = cv2.resize(edges, size[::-1], interpolation=cv2.INTER_LINEAR)
    targets = cv2.multiply(edges, 1 / 255.0, dtype=cv2.CV_8U)  # Mat / 255: rounded, saturated uint8
    return image.transpose(2, 0, 1).astype(np.float32), targets[None].astype(np.float32)


def test_pairs_with_mean_values_and_binarized_maps_against_opencv(tmp_path):
    edge_folder(tmp_path)
    layer, top = make_layer(param_text(tmp_path, "batch_size: 2",
                                       "mean_value: 104.00699 mean_value: 116.66877 mean_value: 122.67892"))
    assert top[0].shape == (2, 3, 9, 12) and top[1].shape == (2, 1, 9, 12)
    data, label = run(layer, top)
    mean = np.array([104.00699, 116.66877, 122.67892], np.float32)[:, None, None]
    for index in range(2):
        image, targets = opencv_pair(tmp_path, index)
        np.testing.assert_array_equal(data[index], image - mean)
        np.testing.assert_array_equal(label[index], targets)
    assert label[0, 0, 0, :3].tolist() == [0, 1, 1] and set(np.unique(label)) <= {0, 1}
    layer.stop()


def test_resize_both_bilinear(tmp_path):
    edge_folder(tmp_path, count=1)
    layer, top = make_layer(param_text(tmp_path, "batch_size: 1 new_height: 6 new_width: 7", "scale: 0.25"))
    data, label = run(layer, top)
    image, targets = opencv_pair(tmp_path, 0, (6, 7))
    np.testing.assert_array_equal(data[0], image * np.float32(0.25))
    np.testing.assert_array_equal(label[0], targets)
    layer.stop()


def test_one_window_and_flip_for_image_and_map_with_the_mean_file_at_the_window(tmp_path):
    edge_folder(tmp_path, count=1)
    mean = np.random.default_rng(3).uniform(0, 50, (1, 3, 9, 12)).astype(np.float32)
    (tmp_path / "mean.binaryproto").write_bytes(array_to_blobproto(mean).SerializeToString())
    layer, top = make_layer(param_text(tmp_path, "batch_size: 1",
                                       f'crop_size: 5 mirror: true mean_file: "{tmp_path / "mean.binaryproto"}"'),
                            phase=caffe_pb2.TEST)
    image, targets = opencv_pair(tmp_path, 0)
    seen = set()
    for _ in range(30):
        data, label = run(layer, top)
        matches = []
        for flip in (False, True):
            for h in range(9 - 5 + 1):
                for w in range(12 - 5 + 1):
                    window = (slice(None), slice(h, h + 5), slice(w, w + 5))
                    values = image[window] - mean[0][window]
                    values, edges = (values[..., ::-1], targets[window][..., ::-1]) if flip \
                        else (values, targets[window])
                    if np.array_equal(values, data[0]) and np.array_equal(edges, label[0]):
                        matches.append((flip, h, w))
        assert matches, "not one window and flip of both image and map"
        seen.add(matches[0])
    assert len({flip for flip, _, _ in seen}) == 2 and len(seen) > 5  # random in TEST too, as the fork
    layer.stop()


@pytest.mark.parametrize("extra, transform, message", [
    ("batch_size: 1 new_width: 4", "", "new_height and new_width to be set at the same time"),
    ("batch_size: 0", "", "Positive batch size required"),
    ("batch_size: 1", "pca_lighting { eigenvalue: 1 }", "pca_lighting is not read by HED's data layer"),
])
def test_bad_settings_are_one_line_layer_errors(tmp_path, extra, transform, message):
    edge_folder(tmp_path, count=1)
    with pytest.raises(LayerError, match=rf"^layer 'layer' \(ImageLabelmapData\): .*{message}"):
        make_layer(param_text(tmp_path, extra, transform))


def test_bad_files_name_the_layer_and_the_file(tmp_path):
    edge_folder(tmp_path, count=1)
    cv2.imwrite(str(tmp_path / "small.png"), np.zeros((3, 3), np.uint8))
    (tmp_path / "pairs.lst").write_text("img0.jpg small.png\n")
    with pytest.raises(DataError, match=r"\(ImageLabelmapData\): .*label map small.png is 3 x 3, image img0.jpg "
                                         r"9 x 12: GT image size should be equal to true image size"):
        make_layer(param_text(tmp_path))
    (tmp_path / "pairs.lst").write_text("img0.jpg\n")
    with pytest.raises(DataError, match=r"\(ImageLabelmapData\): .*pairs.lst: 'img0.jpg' has no label image"):
        make_layer(param_text(tmp_path))
    (tmp_path / "pairs.lst").write_text("img0.jpg gone.png\n")
    with pytest.raises(DataError, match=r"\(ImageLabelmapData\): Could not load gone.png"):
        make_layer(param_text(tmp_path))
    (tmp_path / "pairs.lst").write_text("img0.jpg gt0.png\n")
    with pytest.raises(DataError, match=r"crop_size 10 is larger than the image \(9 x 12\)"):
        make_layer(param_text(tmp_path, transform="crop_size: 10"))
