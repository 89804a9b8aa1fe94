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


# -- PCA lighting (this project's extension, AlexNet section 4.1) ---------------------------
# The widely used ImageNet values (RGB on the [0, 1] scale); column k of V is eigenvector k.
EIGENVALUES = [0.2175, 0.0188, 0.0045]
V = [[-0.5675, 0.7192, 0.4009], [-0.5808, -0.0045, -0.8140], [-0.5836, -0.6948, 0.4203]]
LIGHTING = ("pca_lighting { " + " ".join(f"eigenvalue: {v}" for v in EIGENVALUES) + " "
            + " ".join(f"eigenvector: {v}" for row in V for v in row) + " alpha_std: 0.1 }")


def test_pca_lighting_adds_the_paper_shift_per_image_in_bgr():
    """out = (pixel + shift - mean) * scale with shift_rgb = 255 * sum_k alpha_k lambda_k p_k, alpha drawn per image."""
    import copy

    batch = images(4, (3, 2, 3))
    t = transformer(LIGHTING + " mean_value: 100 mean_value: 110 mean_value: 120 scale: 0.5", TRAIN)
    alphas = copy.deepcopy(t.rng).normal(0.0, 0.1, (4, 3))  # no crop, no mirror: the first draws are alpha's
    out = t.transform(batch)
    for n in range(4):
        rgb = [255 * sum(alphas[n][k] * EIGENVALUES[k] * V[c][k] for k in range(3)) for c in range(3)]
        bgr = np.float32(rgb[::-1]).reshape(3, 1, 1)
        plain = batch[n].astype(np.float32)
        expected = (plain + bgr - np.float32([100, 110, 120]).reshape(3, 1, 1)) * np.float32(0.5)
        np.testing.assert_allclose(out[n], expected, rtol=0, atol=1e-4)
    shifts = out * 2 - (np.stack(batch).astype(np.float32) - np.float32([100, 110, 120]).reshape(1, 3, 1, 1))
    assert len({round(float(s), 3) for s in shifts[:, 0, 0, 0]}) == 4, "each image draws its own alpha"


def test_pca_lighting_shift_follows_the_eigenvectors():
    """Over many images the shift, seen along each eigenvector, has std 255 * 0.1 * lambda_k and no correlation."""
    batch = np.zeros((20000, 3, 1, 1), np.uint8)
    out = transformer(LIGHTING, TRAIN).transform(batch)
    rgb = out[:, ::-1, 0, 0].astype(np.float64) / 255
    along = rgb @ np.asarray(V)  # coordinates on the eigenvectors (V is orthogonal)
    np.testing.assert_allclose(along.std(axis=0), 0.1 * np.asarray(EIGENVALUES), rtol=0.03)
    correlation = np.corrcoef(along.T)
    assert np.abs(correlation - np.eye(3)).max() < 0.03


def test_pca_lighting_only_in_train_and_checked():
    batch = images(3, (3, 4, 4))
    assert np.array_equal(transformer(LIGHTING).transform(batch), np.stack(batch).astype(np.float32))
    with pytest.raises(DataError, match=r"^test: pca_lighting needs 3 eigenvalue and 9 eigenvector values \(got 2 and 9\)$"):
        transformer(LIGHTING.replace("eigenvalue: 0.0045 ", ""), TRAIN)
    with pytest.raises(DataError, match="^test: pca_lighting alpha_std must not be negative"):
        transformer(LIGHTING.replace("alpha_std: 0.1", "alpha_std: -1"), TRAIN)
    with pytest.raises(DataError, match="^test: pca_lighting needs 3-channel .BGR. images, got 2 channels$"):
        transformer(LIGHTING, TRAIN).transform(images())
