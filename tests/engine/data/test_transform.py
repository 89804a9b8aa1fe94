"""DataTransformer against hand-computed values: mean, crop, mirror, scale."""

import numpy as np
import pytest

from engine import caffe_pb2, formats
from engine.data.transform import DataTransformer
from engine.errors import CaffeError, DataError

TRAIN, TEST = caffe_pb2.TRAIN, caffe_pb2.TEST


def transformer(text, phase=TEST):
    param = formats.parse_text(text, caffe_pb2.TransformationParameter())
    return DataTransformer(param, phase, where="test")


def images(count=3, shape=(2, 5, 6), seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, shape, dtype=np.uint8) for _ in range(count)]


def test_identity_gives_float32_pixels():
    batch = images()
    out = transformer("").transform(batch)
    assert out.dtype == np.float32 and np.array_equal(out, np.stack(batch).astype(np.float32))


@pytest.mark.parametrize("values", [[10.0], [10.0, 20.0]])
def test_mean_value_then_scale(values):
    text = " ".join(f"mean_value: {v}" for v in values) + " scale: 0.5"
    batch = images()
    out = transformer(text).transform(batch)
    mean = np.asarray(values, dtype=np.float32).reshape(-1, 1, 1)
    expected = (np.stack(batch).astype(np.float32) - mean) * np.float32(0.5)
    assert np.array_equal(out, expected)


def test_centre_crop_in_test_phase_with_mean_file(tmp_path):
    mean = np.arange(60, dtype=np.float32).reshape(1, 2, 5, 6)
    formats.write_binary(tmp_path / "mean.binaryproto", formats.array_to_blobproto(mean))
    batch = images()
    out = transformer(f'crop_size: 3 mean_file: "{tmp_path / "mean.binaryproto"}"').transform(batch)
    # (5 - 3) // 2 = 1 rows down, (6 - 3) // 2 = 1 column in; the mean is cropped alike.
    expected = np.stack(batch)[:, :, 1:4, 1:4].astype(np.float32) - mean[:, :, 1:4, 1:4]
    assert np.array_equal(out, expected)


def test_random_crop_in_train_is_a_window_of_the_image():
    batch = [np.arange(30, dtype=np.uint8).reshape(1, 5, 6) + 30 * i for i in range(8)]
    out = transformer("crop_size: 3", TRAIN).transform(batch)
    offsets = set()
    for image, crop in zip(batch, out):
        top, left = divmod(int(crop[0, 0, 0]) % 30, 6)
        assert np.array_equal(crop, image[:, top:top + 3, left:left + 3])
        offsets.add((top, left))
    assert len(offsets) > 1, "TRAIN crops should not all sit at one place"


def test_mirror_flips_some_images_and_reads_mean_unmirrored(tmp_path):
    mean = np.arange(30, dtype=np.float32).reshape(1, 1, 5, 6)
    formats.write_binary(tmp_path / "m.binaryproto", formats.array_to_blobproto(mean))
    batch = [np.full((1, 5, 6), 200, dtype=np.uint8) + 2 * np.arange(6, dtype=np.uint8)] * 16
    out = transformer(f'mirror: true mean_file: "{tmp_path / "m.binaryproto"}"', TEST).transform(batch)
    straight = batch[0].astype(np.float32) - mean[0]
    flipped = straight[..., ::-1]
    kinds = [np.array_equal(o, straight) or (np.array_equal(o, flipped) and "flip") for o in out]
    assert all(kinds) and "flip" in kinds and True in kinds


def test_images_of_different_shapes_with_crop():
    batch = images(1, (1, 5, 6)) + images(1, (1, 7, 4), seed=1)
    out = transformer("crop_size: 3").transform(batch)
    assert out.shape == (2, 1, 3, 3)
    assert np.array_equal(out[1], batch[1][:, 2:5, 0:3])
    with pytest.raises(DataError, match="does not fit a batch"):
        transformer("").transform(batch)


def test_float_data_keeps_values():
    batch = [np.linspace(-1, 1, 12, dtype=np.float32).reshape(1, 3, 4)]
    out = transformer("scale: 2 mean_value: 0.5").transform(batch)
    assert np.array_equal(out[0], (batch[0] - np.float32(0.5)) * np.float32(2))


def test_errors(tmp_path):
    mean = np.zeros((1, 3, 5, 6), dtype=np.float32)
    formats.write_binary(tmp_path / "m.binaryproto", formats.array_to_blobproto(mean))
    with pytest.raises(DataError, match="does not match the mean file"):
        transformer(f'mean_file: "{tmp_path / "m.binaryproto"}"').transform(images(), sources=["db (key 7)"] * 3)
    with pytest.raises(DataError, match="Cannot specify mean_file and mean_value"):
        transformer(f'mean_file: "{tmp_path / "m.binaryproto"}" mean_value: 1')
    with pytest.raises(DataError, match="Specify either 1 mean_value or as many as channels"):
        transformer("mean_value: 1 mean_value: 2 mean_value: 3").transform(images())
    with pytest.raises(DataError, match="crop_size 9 is larger"):
        transformer("crop_size: 9").transform(images())
    with pytest.raises(CaffeError, match="mean file .*missing.binaryproto not found; compute it with .tools/compute_image_mean"):
        transformer(f'mean_file: "{tmp_path / "missing.binaryproto"}"')


def test_same_seed_same_crops():
    import engine

    engine.set_random_seed(5)
    first = transformer("crop_size: 2 mirror: true", TRAIN).transform(images(6))
    engine.set_random_seed(5)
    second = transformer("crop_size: 2 mirror: true", TRAIN).transform(images(6))
    assert np.array_equal(first, second)
