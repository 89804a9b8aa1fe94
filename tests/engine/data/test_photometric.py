"""SSD's photometric distortion and noise against OpenCV (cv2) and hand-computed values."""

import numpy as np
import pytest

from engine import caffe_pb2, formats
from engine.data import photometric as ph
from engine.errors import DataError

cv2 = pytest.importorskip("cv2")


def image(seed=0, shape=(23, 31, 3)):
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def test_hsv_round_trip_matches_opencv():
    img = image()
    hsv = cv2.cvtColor(img, cv2.COLOR_BGR2HSV)
    assert np.array_equal(ph.bgr_to_hsv(img), hsv)
    assert np.array_equal(ph.hsv_to_bgr(hsv), cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR))
    # Hue pushed past 180 (SSD's saturating convertTo) wraps around on the way back, as in OpenCV.
    shifted = hsv.copy()
    shifted[..., 0] = np.clip(shifted[..., 0].astype(int) + 70, 0, 255)
    assert np.array_equal(ph.hsv_to_bgr(shifted), cv2.cvtColor(shifted, cv2.COLOR_HSV2BGR))


def test_convert_to_rounds_half_to_even_and_saturates():
    pixels = np.array([[[0, 10, 250]]], np.uint8)
    np.testing.assert_array_equal(ph.convert_to(pixels, 1, 20.5), [[[20, 30, 255]]])  # 20.5 -> 20, 30.5 -> 30
    np.testing.assert_array_equal(ph.convert_to(pixels, 0.25, -1), [[[0, 2, 62]]])  # 1.5 -> 2, 61.5 -> 62


@pytest.mark.parametrize("factor", [0.5, 1.4])
def test_saturation_and_hue_as_opencv_pipelines(factor):
    img = image(1)
    hsv = cv2.cvtColor(img, cv2.COLOR_BGR2HSV)
    sat = hsv.copy()
    sat[..., 1] = np.clip(np.rint(sat[..., 1] * np.float32(factor)), 0, 255)
    assert np.array_equal(ph.adjust_saturation(img, factor), cv2.cvtColor(sat, cv2.COLOR_HSV2BGR))
    hue = hsv.copy()
    hue[..., 0] = np.clip(np.rint(hue[..., 0] + np.float32(factor * 10 - 9)), 0, 255)
    assert np.array_equal(ph.adjust_hue(img, factor * 10 - 9), cv2.cvtColor(hue, cv2.COLOR_HSV2BGR))
    assert ph.adjust_hue(img, 0) is img and ph.adjust_contrast(img, 1.0005) is img


def distort(text):
    return formats.parse_text(text, caffe_pb2.DistortionParameter())


def test_distort_probabilities_and_orders():
    img = image(2)
    rng = np.random.default_rng(0)
    assert np.array_equal(ph.distort(img, distort(""), rng), img)  # every probability 0
    always = distort("brightness_prob: 1 brightness_delta: 32 contrast_prob: 1 contrast_lower: 0.5 "
                     "contrast_upper: 1.5 saturation_prob: 1 saturation_lower: 0.5 saturation_upper: 1.5 "
                     "hue_prob: 1 hue_delta: 18 random_order_prob: 1")
    changed = [not np.array_equal(ph.distort(img, always, rng), img) for _ in range(5)]
    assert all(changed)
    # Brightness alone: one uniform draw for the order, one for the probability, one for delta.
    rng_a, rng_b = np.random.default_rng(3), np.random.default_rng(3)
    out = ph.distort(img, distort("brightness_prob: 1 brightness_delta: 32"), rng_a)
    rng_b.uniform(0, 1), rng_b.uniform(0, 1)
    delta = rng_b.uniform(-32, 32)
    assert np.array_equal(out, np.clip(np.rint(img.astype(np.float32) + np.float32(delta)), 0, 255))
    with pytest.raises(DataError, match="contrast_lower"):
        ph.distort(img, distort("contrast_prob: 1 contrast_lower: 2 contrast_upper: 1"), rng)
    with pytest.raises(DataError, match="3-channel"):
        ph.distort(img[..., :1], distort("hue_prob: 1 hue_delta: 5"), rng)


def noise(text):
    return formats.parse_text(text, caffe_pb2.NoiseParameter())


def test_noise_effects():
    img = image(4)
    rng = np.random.default_rng(0)
    gray = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    assert np.array_equal(ph.apply_noise(img, noise("decolorize: true"), rng), np.repeat(gray[..., None], 3, 2))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3), (1, 1))
    assert np.array_equal(ph.apply_noise(img, noise("erode: true"), rng), cv2.erode(img, kernel))
    assert np.array_equal(ph.apply_noise(img, noise("inverse: true"), rng), 255 - img)
    assert np.array_equal(ph.apply_noise(img, noise("posterize: true"), rng), img // 64 * 64 + 32)
    salted = ph.apply_noise(img, noise("saltpepper: true saltpepper_param { fraction: 0.1 value: 7 }"), rng)
    assert 0 < (salted != img).any(axis=2).sum() <= int(0.1 * 23 * 31)
    assert set(np.unique(salted[(salted != img).any(axis=2)])) == {7}
    jpeg = ph.apply_noise(img, noise("jpeg: 50"), rng)
    assert jpeg.shape == img.shape and not np.array_equal(jpeg, img)
    with pytest.raises(DataError, match="clahe is not supported"):
        ph.apply_noise(img, noise("clahe: true"), rng)
