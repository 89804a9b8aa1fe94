"""tools/compute_pca_lighting: the RGB covariance's eigen-decomposition over a database, as a
transform_param snippet the DataTransformer takes."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import text_format

from engine import caffe_pb2
from engine.data.datum import array_to_datum, encoded_datum
from engine.data.db import open_writer
from engine.data.image import encode_image
from engine.data.transform import DataTransformer
from engine.tools import compute_pca_lighting

ROOT = Path(__file__).resolve().parents[2]


def coloured_images(count=6, seed=0):
    """BGR uint8 images whose colours spread along a known direction."""
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(count):
        t = rng.standard_normal((1, 8, 9))
        noise = rng.standard_normal((3, 8, 9)) * 6
        rgb = 128 + np.array([50, 30, 10]).reshape(3, 1, 1) * t + noise
        images.append(np.clip(np.rint(rgb), 0, 255).astype(np.uint8)[::-1].copy())
    return images


def write_db(path, images, encoded=False):
    writer = open_writer(str(path), "lmdb")
    for index, image in enumerate(images):
        datum = encoded_datum(encode_image(image.transpose(1, 2, 0), "png"), 0) if encoded \
            else array_to_datum(image, 0)
        writer.put(f"{index:08d}", datum.SerializeToString())
    writer.commit()
    writer.close()


def parse(out):
    layer = text_format.Parse("\n".join(line for line in out.splitlines() if not line.startswith("#")),
                              caffe_pb2.LayerParameter())
    lighting = layer.transform_param.pca_lighting
    return np.array(lighting.eigenvalue), np.array(lighting.eigenvector).reshape(3, 3), lighting, layer


@pytest.mark.parametrize("encoded", [False, True])
def test_eigen_decomposition_of_the_rgb_covariance(tmp_path, capsys, encoded):
    images = coloured_images()
    write_db(tmp_path / "db", images, encoded)
    assert compute_pca_lighting.main([str(tmp_path / "db")]) == 0
    out = capsys.readouterr().out
    values, vectors, lighting, layer = parse(out)
    assert out.startswith(f"# PCA lighting of 6 images (432 pixels) of {tmp_path / 'db'}")
    # independently: numpy's covariance of every pixel's RGB values on the [0, 1] scale
    rgb = np.concatenate([image[::-1].reshape(3, -1) for image in images], axis=1) / 255.0
    expected_values, expected_vectors = np.linalg.eigh(np.cov(rgb, bias=True))
    np.testing.assert_allclose(values, expected_values[::-1], rtol=1e-5)
    assert values[0] > values[1] > values[2] > 0
    for k in range(3):  # the same directions (an eigenvector's sign is free)
        assert abs(abs(vectors[:, k] @ expected_vectors[:, 2 - k]) - 1) < 1e-5
        assert vectors[np.argmax(np.abs(vectors[:, k])), k] > 0
    first = vectors[:, 0]  # the dominant direction is the colour spread, (50, 30, 10) in RGB
    assert abs(first @ np.array([50, 30, 10]) / np.linalg.norm([50, 30, 10])) > 0.99
    assert lighting.alpha_std == pytest.approx(0.1)
    DataTransformer(layer.transform_param, caffe_pb2.TRAIN).transform(images)  # the snippet is usable as it is


def test_max_images_and_alpha_std(tmp_path, capsys):
    images = coloured_images(5)
    write_db(tmp_path / "db", images)
    assert compute_pca_lighting.main(["--max_images", "2", "--alpha_std=0.2", str(tmp_path / "db")]) == 0
    out = capsys.readouterr().out
    values, _, lighting, _ = parse(out)
    rgb = np.concatenate([image[::-1].reshape(3, -1) for image in images[:2]], axis=1) / 255.0
    np.testing.assert_allclose(values, np.linalg.eigvalsh(np.cov(rgb, bias=True))[::-1], rtol=1e-5)
    assert "of 2 images (144 pixels)" in out and lighting.alpha_std == pytest.approx(0.2)


def test_errors_are_one_line(tmp_path):
    write_db(tmp_path / "gray", [np.zeros((1, 4, 4), np.uint8)])

    def run(*args):
        result = subprocess.run([sys.executable, str(ROOT / "tools" / "compute_pca_lighting"), *args],
                                capture_output=True, text=True, cwd=tmp_path, timeout=120)
        return result.returncode, result.stderr.strip()

    status, err = run("gray")
    assert status == 1 and err == "compute_pca_lighting: gray (key 00000000): PCA lighting needs 3-channel (BGR) " \
                                  "images, got 1 channels"
    status, err = run("--alpha_std", "x", "gray")
    assert status == 1 and err == "compute_pca_lighting: illegal value 'x' specified for double flag 'alpha_std'"
    status, err = run()
    assert status == 1 and err == "compute_pca_lighting: expected INPUT_DB (see --help)"
    status, err = run("missing_db")
    assert status == 1 and err.startswith("compute_pca_lighting: ") and "missing_db" in err and "\n" not in err
