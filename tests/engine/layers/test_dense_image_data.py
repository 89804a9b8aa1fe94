"""SegNet's DenseImageData: image / label-image pairs read, resized (bilinear for images,
nearest for labels) and cropped as the fork does, checked against OpenCV's imread and
resize; mirror and crop shared by image and label; errors for bad settings and files."""

import cv2
import numpy as np
import pytest
from layer_check import data_forward, make_data_layer

import engine
from engine import caffe_pb2, formats
from engine.errors import DataError, LayerError
from engine.net import Net


def make_layer(text, phase=caffe_pb2.TRAIN):
    return make_data_layer(text, phase=phase)


run = data_forward


def pair_folder(tmp_path, count=3, size=(10, 14), classes=5):
    """`count` colour PNGs and label PNGs (values below `classes`) under tmp_path/data, a list file."""
    rng = np.random.default_rng(11)
    folder = tmp_path / "data"
    folder.mkdir()
    lines = []
    for index in range(count):
        cv2.imwrite(str(folder / f"img{index}.png"), rng.integers(0, 256, size + (3,), dtype=np.uint8))
        cv2.imwrite(str(folder / f"lab{index}.png"), rng.integers(0, classes, size, dtype=np.uint8))
        lines.append(f"img{index}.png   lab{index}.png")
    (tmp_path / "list.txt").write_text("\n".join(lines) + "\n")
    return folder


def param_text(tmp_path, extra="", transform=""):
    return (f'type: "DenseImageData" top: "data" top: "label" transform_param {{ {transform} }} '
            f'dense_image_data_param {{ source: "{tmp_path / "list.txt"}" root_folder: "{tmp_path}/data/" '
            f'{extra} }}')


def opencv_pair(folder, index, size=None, label_size=None, is_color=True):
    image = cv2.imread(str(folder / f"img{index}.png"), cv2.IMREAD_COLOR if is_color else cv2.IMREAD_GRAYSCALE)
    label = cv2.imread(str(folder / f"lab{index}.png"), cv2.IMREAD_GRAYSCALE)
    if size:
        image = cv2.resize(image, size[::-1], interpolation=cv2.INTER_LINEAR)
        label = cv2.resize(label, (label_size or size)[::-1], interpolation=cv2.INTER_NEAREST)
    if image.ndim == 2:
        image = image[..., None]
    return image.transpose(2, 0, 1).astype(np.float32), label[None].astype(np.float32)


def test_pairs_in_order_with_mean_and_scale_against_opencv(tmp_path):
    folder = pair_folder(tmp_path)
    layer, top = make_layer(param_text(tmp_path, "batch_size: 2",
                                       "mean_value: 100 mean_value: 110 mean_value: 120 scale: 0.5"))
    assert top[0].shape == (2, 3, 10, 14) and top[1].shape == (2, 1, 10, 14)
    mean = np.array([100, 110, 120], np.float32)[:, None, None]
    for indices in ([0, 1], [2, 0]):
        data, label = run(layer, top)
        for row, index in enumerate(indices):
            image, expected = opencv_pair(folder, index)
            np.testing.assert_array_equal(data[row], (image - mean) * np.float32(0.5))
            np.testing.assert_array_equal(label[row], expected)  # class indices, untouched
    layer.stop()


def test_resize_bilinear_images_nearest_labels_and_enet_label_divide_factor(tmp_path):
    folder = pair_folder(tmp_path, count=2)
    layer, top = make_layer(param_text(tmp_path, "batch_size: 2 new_height: 7 new_width: 9 is_color: false"))
    data, label = run(layer, top)
    for index in range(2):
        image, expected = opencv_pair(folder, index, (7, 9), is_color=False)
        np.testing.assert_array_equal(data[index], image)
        np.testing.assert_array_equal(label[index], expected)
    layer.stop()
    layer, top = make_layer(param_text(tmp_path, "batch_size: 1 new_height: 8 new_width: 12 label_divide_factor: 2"))
    data, label = run(layer, top)
    assert data.shape == (1, 3, 8, 12) and label.shape == (1, 1, 4, 6)
    np.testing.assert_array_equal(label[0], opencv_pair(folder, 0, (8, 12), (4, 6))[1])
    layer.stop()


def test_mirror_and_crop_cut_image_and_label_alike(tmp_path):
    folder = pair_folder(tmp_path, count=1)
    image, label = opencv_pair(folder, 0)
    layer, top = make_layer(param_text(tmp_path, "batch_size: 1 mirror: true crop_height: 6 crop_width: 5"),
                            phase=caffe_pb2.TEST)
    assert top[0].shape == (1, 3, 6, 5) and top[1].shape == (1, 1, 6, 5)
    seen = set()
    for _ in range(30):
        data, labels = run(layer, top)
        found = None
        for flip in (False, True):
            source_image = image[..., ::-1] if flip else image
            source_label = label[..., ::-1] if flip else label
            for h in range(10 - 6 + 1):
                for w in range(14 - 5 + 1):
                    if np.array_equal(source_image[:, h:h + 6, w:w + 5], data[0]):
                        found = (flip, h, w)
                        np.testing.assert_array_equal(source_label[:, h:h + 6, w:w + 5], labels[0])
        assert found is not None, "the crop is not a window of the (mirrored) image"
        seen.add(found)
    assert len({flip for flip, _, _ in seen}) == 2 and len(seen) > 5  # random windows and flips, in TEST too
    layer.stop()


def test_single_image_batches_take_each_images_size(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    for index, size in enumerate([(5, 6), (7, 4)]):
        cv2.imwrite(str(folder / f"img{index}.png"), np.full(size + (3,), index * 50, np.uint8))
        cv2.imwrite(str(folder / f"lab{index}.png"), np.full(size, index + 1, np.uint8))
    (tmp_path / "list.txt").write_text("img0.png lab0.png img1.png lab1.png")  # the fork reads tokens
    layer, top = make_layer(param_text(tmp_path, "batch_size: 1"))
    assert run(layer, top)[1].shape == (1, 1, 5, 6)
    data, label = run(layer, top)
    assert data.shape == (1, 3, 7, 4) and label.shape == (1, 1, 7, 4) and (label == 2).all()
    layer.stop()
    layer, top = make_layer(param_text(tmp_path, "batch_size: 2"))
    with pytest.raises(DataError, match=r"\(DenseImageData\): .*does not fit a batch"):
        run(layer, top)
    layer.stop()


def test_shuffle_visits_every_pair_once_per_pass(tmp_path):
    pair_folder(tmp_path, count=4, size=(3, 3))
    folder = tmp_path / "data"
    for index in range(4):  # one grey level per pair, so each image names itself
        cv2.imwrite(str(folder / f"img{index}.png"), np.full((3, 3, 3), index, np.uint8))
        cv2.imwrite(str(folder / f"lab{index}.png"), np.full((3, 3), index, np.uint8))
    layer, top = make_layer(param_text(tmp_path, "batch_size: 4 shuffle: true"))
    for _ in range(2):
        data, label = run(layer, top)
        assert sorted(data[:, 0, 0, 0].tolist()) == [0, 1, 2, 3]
        np.testing.assert_array_equal(data[:, 0, 0, 0], label[:, 0, 0, 0])
    layer.stop()


@pytest.mark.parametrize("extra, transform, message", [
    ("batch_size: 1 new_height: 4", "", "new_height and new_width to be set at the same time"),
    ("batch_size: 1 crop_width: 4", "", "crop_height and crop_width to be set at the same time"),
    ("", "", "Positive batch size required"),
    ("batch_size: 1", "mirror: true", "use dense_image_data_param's mirror, crop_height and crop_width"),
    ("batch_size: 1", "crop_size: 4", "would transform image and label differently"),
    ("batch_size: 1 label_divide_factor: 2", "", "label_divide_factor above 1 needs new_height"),
    ("batch_size: 1 label_divide_factor: 0", "", "label_divide_factor must be positive"),
])
def test_bad_settings_are_one_line_layer_errors(tmp_path, extra, transform, message):
    pair_folder(tmp_path, count=1)
    with pytest.raises(LayerError, match=rf"^layer 'layer' \(DenseImageData\): .*{message}") as info:
        make_layer(param_text(tmp_path, extra, transform))
    assert "\n" not in str(info.value)


def test_bad_files_name_the_layer_and_the_file(tmp_path):
    folder = pair_folder(tmp_path, count=1)
    (tmp_path / "list.txt").write_text("img0.png lab0.png img0.png\n")
    with pytest.raises(DataError, match=r"\(DenseImageData\): .*list.txt: 'img0.png' has no label image"):
        make_layer(param_text(tmp_path, "batch_size: 1"))
    (tmp_path / "list.txt").write_text("img0.png gone.png\n")
    with pytest.raises(DataError, match=r"\(DenseImageData\): Could not load gone.png"):
        make_layer(param_text(tmp_path, "batch_size: 1"))
    cv2.imwrite(str(folder / "small.png"), np.zeros((4, 4), np.uint8))
    (tmp_path / "list.txt").write_text("img0.png small.png\n")
    with pytest.raises(DataError, match=r"label image small.png is 4 x 4, image img0.png 10 x 14: "
                                         r"Input and label image heights and widths must match"):
        make_layer(param_text(tmp_path, "batch_size: 1"))
    (tmp_path / "list.txt").write_text("img0.png lab0.png\n")
    with pytest.raises(DataError, match=r"smaller than the crop 12 x 5"):
        make_layer(param_text(tmp_path, "batch_size: 1 crop_height: 12 crop_width: 5"))
    (tmp_path / "list.txt").write_text("")
    with pytest.raises(DataError, match=r"File is empty"):
        make_layer(param_text(tmp_path, "batch_size: 1"))


def test_a_segnet_style_net_trains_on_the_pairs_with_class_weighting(tmp_path):
    pair_folder(tmp_path, count=2, size=(8, 8), classes=3)
    text = f"""
    layer {{ {param_text(tmp_path, "batch_size: 2 shuffle: true").replace('type: "DenseImageData"',
                                                                   'name: "data" type: "DenseImageData"')} }}
    layer {{ name: "score" type: "Convolution" bottom: "data" top: "score"
             convolution_param {{ num_output: 3 kernel_size: 3 pad: 1 weight_filler {{ type: "gaussian" std: 0.01 }} }} }}
    layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "score" bottom: "label" top: "loss"
             loss_param {{ weight_by_label_freqs: true class_weighting: 0.5 class_weighting: 1 class_weighting: 2 }} }}
    """
    net = Net(formats.parse_text(text, caffe_pb2.NetParameter()), phase=engine.TRAIN)
    assert net.blobs["label"].shape == (2, 1, 8, 8)
    net.forward()
    assert np.isfinite(float(net.blobs["loss"].data)) and float(net.blobs["loss"].data) > 0
    net.backward()
    assert np.abs(net.params["score"][0].diff).sum() > 0
    net.layers[0].stop()
