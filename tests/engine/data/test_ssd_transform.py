"""SSD's annotated-image transform: resize modes against OpenCV, crop and expansion
by hand, and the whole pipeline's boxes following the pixels."""

import numpy as np
import pytest

from engine import caffe_pb2, formats
from engine.data import ssd_transform as st
from engine.errors import DataError

cv2 = pytest.importorskip("cv2")
TRAIN, TEST = caffe_pb2.TRAIN, caffe_pb2.TEST
RESIZE = caffe_pb2.ResizeParameter


def image(shape=(30, 40, 3), seed=0):
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def resize_param(text):
    return formats.parse_text(text, caffe_pb2.ResizeParameter())


@pytest.mark.parametrize("interp, cv_interp", [(RESIZE.LINEAR, cv2.INTER_LINEAR),
                                               (RESIZE.NEAREST, cv2.INTER_NEAREST)])
def test_resize_matches_opencv(interp, cv_interp):
    img = image()
    for size in ((17, 23), (64, 50)):
        assert np.array_equal(st.resize_image(img, *size, interp), cv2.resize(img, size, interpolation=cv_interp))


@pytest.mark.parametrize("interp", [RESIZE.AREA, RESIZE.CUBIC, RESIZE.LANCZOS4])
def test_other_interpolations_are_close_to_opencv(interp):
    img = cv2.GaussianBlur(image(), (5, 5), 2)  # smooth, so filters agree closely
    cv_interp = {RESIZE.AREA: cv2.INTER_AREA, RESIZE.CUBIC: cv2.INTER_CUBIC, RESIZE.LANCZOS4: cv2.INTER_LANCZOS4}
    ours = st.resize_image(img, 20, 15, interp).astype(int)
    theirs = cv2.resize(img, (20, 15), interpolation=cv_interp[interp]).astype(int)
    assert np.abs(ours - theirs).mean() < 4


@pytest.mark.parametrize("pad_mode, border", [("CONSTANT", cv2.BORDER_CONSTANT), ("MIRRORED", cv2.BORDER_REFLECT101),
                                              ("REPEAT_NEAREST", cv2.BORDER_REPLICATE)])
def test_fit_large_size_and_pad_as_opencv(pad_mode, border):
    img = image((30, 40, 3))
    rng = np.random.default_rng(0)
    param = resize_param(f"resize_mode: FIT_LARGE_SIZE_AND_PAD height: 50 width: 50 pad_mode: {pad_mode} "
                         f"pad_value: 9 pad_value: 8 pad_value: 7")
    inner = cv2.resize(img, (50, 37), interpolation=cv2.INTER_LINEAR)  # floor(50 / (40/30)) = 37
    expected = cv2.copyMakeBorder(inner, 6, 7, 0, 0, border, value=(9, 8, 7))
    assert np.array_equal(st.apply_resize(img, param, rng), expected)
    tall = st.apply_resize(image((40, 20, 3)), param, rng)
    assert tall.shape == (50, 50, 3)


def test_fit_small_size_and_warp_shapes():
    rng = np.random.default_rng(0)
    assert st.apply_resize(image((30, 40, 3)), resize_param("resize_mode: FIT_SMALL_SIZE height: 20 width: 20"),
                           rng).shape == (20, 26, 3)
    assert st.apply_resize(image((30, 40, 3)), resize_param("height: 11 width: 13"), rng).shape == (11, 13, 3)
    with pytest.raises(DataError, match="pad_value"):
        st.apply_resize(image(), resize_param("resize_mode: FIT_LARGE_SIZE_AND_PAD height: 9 width: 9 "
                                              "pad_value: 1 pad_value: 2"), rng)


def test_crop_and_expand_by_hand():
    img = image((10, 20, 3))
    # Box (0.25, 0.2)-(0.75, 0.9) of 20 x 10: columns 5..14, rows 2..8.
    assert np.array_equal(st.crop_image(img, (0.25, 0.2, 0.75, 0.9)), img[2:9, 5:15])
    assert np.array_equal(st.crop_image(img, (-0.5, -0.5, 0.5, 0.5)), img[0:5, 0:10])  # clipped first
    rng = np.random.default_rng(5)
    canvas, box = st.expand_image(img, 2.5, np.array([1, 2, 3], np.uint8), rng)
    assert canvas.shape == (25, 50, 3)
    left, top = int(round(-box[0] * 20)), int(round(-box[1] * 10))
    assert np.array_equal(canvas[top:top + 10, left:left + 20], img)
    assert box[2] == pytest.approx((50 - left) / 20) and box[3] == pytest.approx((25 - top) / 10)
    outside = canvas.copy()
    outside[top:top + 10, left:left + 20] = [1, 2, 3]
    assert (outside == [1, 2, 3]).all()


def transformer(text, phase=TRAIN, samplers=()):
    param = formats.parse_text(text, caffe_pb2.TransformationParameter())
    samplers = [formats.parse_text(s, caffe_pb2.BatchSampler()) for s in samplers]
    return st.SSDTransformer(param, phase, samplers, where="test")


def test_transform_mean_scale_mirror_and_boxes():
    img = image((4, 6, 3))
    rows = np.array([[1, 0, 0.0, 0.25, 0.5, 0.75, 0]], np.float32)
    t = transformer("mean_value: 10 mean_value: 20 mean_value: 30 scale: 0.5 mirror: true")
    seen = set()
    for _ in range(20):
        values, out = t(img, rows)
        mirrored = bool(out[0, 2] > 0.4)
        seen.add(mirrored)
        source = img[:, ::-1] if mirrored else img
        expected = (source.transpose(2, 0, 1).astype(np.float32) - np.array([10, 20, 30], np.float32)[:, None, None]) * 0.5
        np.testing.assert_array_equal(values, expected)
        np.testing.assert_allclose(out[0, 2:6], [0.5, 0.25, 1.0, 0.75] if mirrored else [0.0, 0.25, 0.5, 0.75])
    assert seen == {True, False}


def test_transform_resize_and_centre_crop_in_test():
    img = image((30, 40, 3))
    rows = np.array([[2, 0, 0.0, 0.0, 0.5, 0.5, 0]], np.float32)
    t = transformer("resize_param { height: 20 width: 20 } crop_size: 10", phase=TEST)
    assert t.output_shape(img.shape) == (3, 10, 10)
    values, out = t(img, rows)
    expected = cv2.resize(img, (20, 20), interpolation=cv2.INTER_LINEAR)[5:15, 5:15]
    np.testing.assert_array_equal(values, expected.transpose(2, 0, 1).astype(np.float32))
    np.testing.assert_allclose(out[0, 2:6], [0.0, 0.0, 0.5, 0.5])  # (0.25..0.5) of 20 -> (0..0.5) of the crop


def test_sampling_crops_pixels_and_boxes_together():
    """A one-colour square must stay under its box through expansion and sampling."""
    img = np.zeros((40, 40, 3), np.uint8)
    img[10:20, 20:30] = 255
    rows = np.array([[1, 0, 0.5, 0.25, 0.75, 0.5, 0]], np.float32)
    t = transformer("expand_param { prob: 1 max_expand_ratio: 2 } emit_constraint { emit_type: CENTER }",
                    samplers=["sampler { min_scale: 0.5 max_scale: 1 min_aspect_ratio: 0.5 max_aspect_ratio: 2 } "
                              "sample_constraint { min_object_coverage: 1 } max_trials: 20 max_sample: 1"])
    for _ in range(10):
        image_out, out = t.augment(img, rows)
        assert out.shape == (1, 7)
        h, w = image_out.shape[:2]
        x0, y0, x1, y1 = out[0, 2:6] * [w, h, w, h]
        # SSD crops at whole pixels (offsets and sizes truncated) but maps the boxes
        # through the exact window: up to two pixels of slack.
        inside = image_out[int(y0) + 2:int(y1) - 2, int(x0) + 2:int(x1) - 2]
        assert inside.size and (inside == 255).all()
        assert (image_out == 255).all(axis=2).sum() == pytest.approx((x1 - x0) * (y1 - y0), abs=2 * (w + h))


def test_bad_settings_are_refused():
    with pytest.raises(DataError, match="max_expand_ratio"):
        transformer("expand_param { max_expand_ratio: 1 }")
    with pytest.raises(DataError, match="resize_param needs positive"):
        transformer("resize_param { height: 0 width: 5 }")
    with pytest.raises(DataError, match="hist_eq is not supported"):
        transformer("noise_param { hist_eq: true }")
    with pytest.raises(DataError, match="crop_size 50"):
        transformer("crop_size: 50").output_shape((30, 40, 3))
