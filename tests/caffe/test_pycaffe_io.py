"""caffe.io: image loading and resizing, oversampling, Transformer, proto converters."""

import io as stdio

import numpy as np
import pytest
from PIL import Image

import caffe
from caffe.proto import caffe_pb2
from engine.errors import CaffeError

RGB = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255]],
                [[10, 20, 30], [200, 100, 50], [255, 255, 255]]], dtype=np.uint8)


def save(tmp_path, array, mode=None, name="img.png"):
    path = tmp_path / name
    (Image.fromarray(array, mode) if mode else Image.fromarray(array)).save(path)
    return str(path)


# -- load_image --------------------------------------------------------------------------
def test_load_color_image(tmp_path):
    image = caffe.io.load_image(save(tmp_path, RGB))
    assert image.dtype == np.float32 and image.shape == (2, 3, 3)
    np.testing.assert_allclose(image, RGB / 255.0, rtol=1e-6)


def test_load_color_image_as_gray_uses_scikit_image_weights(tmp_path):
    image = caffe.io.load_image(save(tmp_path, RGB), color=False)
    assert image.shape == (2, 3, 1)
    expected = (RGB / 255.0) @ np.array([0.2125, 0.7154, 0.0721])
    np.testing.assert_allclose(image[:, :, 0], expected, rtol=1e-6)


def test_load_gray_image(tmp_path):
    gray = np.array([[0, 128], [255, 7]], dtype=np.uint8)
    path = save(tmp_path, gray)
    np.testing.assert_allclose(caffe.io.load_image(path, color=False)[:, :, 0], gray / 255.0, rtol=1e-6)
    color = caffe.io.load_image(path)
    assert color.shape == (2, 2, 3)
    for channel in range(3):
        np.testing.assert_allclose(color[:, :, channel], gray / 255.0, rtol=1e-6)


def test_load_drops_alpha_and_expands_palettes(tmp_path):
    rgba = np.concatenate([RGB, np.full((2, 3, 1), 9, np.uint8)], axis=2)
    np.testing.assert_allclose(caffe.io.load_image(save(tmp_path, rgba, name="a.png")), RGB / 255.0, rtol=1e-6)
    palette = Image.fromarray(RGB).convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    path = tmp_path / "p.png"
    palette.save(path)
    expected = np.asarray(palette.convert("RGB")) / 255.0
    np.testing.assert_allclose(caffe.io.load_image(str(path)), expected, rtol=1e-6)


def test_load_sixteen_bit_image(tmp_path):
    deep = np.array([[0, 65535], [1000, 30000]], dtype=np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(deep).save(path)
    np.testing.assert_allclose(caffe.io.load_image(str(path), color=False)[:, :, 0], deep / 65535.0, rtol=1e-6)


# -- resize_image ---------------------------------------------------------------------------
# Doubling a size samples the source at -0.25, 0.25, 0.75, 1.25 pixels; outside the image
# scikit-image's mode='constant' blends in 0 of the [0, 1]-scaled image, i.e. the image minimum.
UP2 = np.array([[0.75, 0.0], [0.75, 0.25], [0.25, 0.75], [0.0, 0.75]])


def test_resize_bilinear_matches_hand_computed_weights():
    im = np.array([[1.0, 2.0], [3.0, 4.0]])[:, :, None]
    resized = caffe.io.resize_image(im, (4, 4))
    unit = (im[:, :, 0] - 1.0) / 3.0
    expected = UP2 @ unit @ UP2.T * 3.0 + 1.0
    assert resized.dtype == np.float32 and resized.shape == (4, 4, 1)
    np.testing.assert_allclose(resized[:, :, 0], expected, rtol=1e-6)


def test_resize_keeps_channels_apart_and_constant_images_constant():
    im = np.stack([np.array([[1.0, 2.0], [3.0, 4.0]]), np.zeros((2, 2)), np.ones((2, 2))], axis=2)
    resized = caffe.io.resize_image(im, (4, 2))
    unit = im / 4.0  # the whole image's range is 0..4
    for channel in range(3):
        np.testing.assert_allclose(resized[:, :, channel], UP2 @ unit[:, :, channel] * 4.0, rtol=1e-6)
    flat = caffe.io.resize_image(np.full((3, 3, 1), 0.25), (5, 4))
    assert flat.shape == (5, 4, 1) and np.all(flat == np.float32(0.25))


def test_resize_other_channel_counts_zoom_directly():
    im = np.random.default_rng(0).random((4, 4, 2))
    resized = caffe.io.resize_image(im, (2, 8), interp_order=0)
    assert resized.shape == (2, 8, 2)
    assert set(np.unique(resized)) <= set(np.unique(im.astype(np.float32)))


# -- oversample --------------------------------------------------------------------------------
def test_oversample_order_corners_center_mirrors():
    images = np.arange(2 * 6 * 8 * 1, dtype=np.float32).reshape(2, 6, 8, 1)
    crops = caffe.io.oversample(images, (4, 4))
    assert crops.shape == (20, 4, 4, 1)
    for n in range(2):
        im = images[n]
        expected = [im[0:4, 0:4], im[0:4, 4:8], im[2:6, 0:4], im[2:6, 4:8], im[1:5, 2:6]]
        expected += [e[:, ::-1] for e in expected]
        np.testing.assert_array_equal(crops[10 * n:10 * n + 10], np.stack(expected))


# -- Transformer ----------------------------------------------------------------------------------
def make_transformer(mean=None):
    transformer = caffe.io.Transformer({"data": (2, 3, 4, 5)})
    transformer.set_transpose("data", (2, 0, 1))
    transformer.set_channel_swap("data", (2, 1, 0))
    transformer.set_raw_scale("data", 255)
    transformer.set_mean("data", np.array([10.0, 20.0, 30.0]) if mean is None else mean)
    transformer.set_input_scale("data", 0.5)
    return transformer


def test_preprocess_applies_the_steps_in_order():
    image = np.random.default_rng(1).random((4, 5, 3)).astype(np.float32)
    original = image.copy()
    out = make_transformer().preprocess("data", image)
    expected = (image.transpose(2, 0, 1)[[2, 1, 0]] * 255 - np.array([10.0, 20.0, 30.0])[:, None, None]) * 0.5
    assert out.dtype == np.float32 and out.shape == (3, 4, 5)
    np.testing.assert_allclose(out, expected, rtol=1e-5)
    np.testing.assert_array_equal(image, original)


def test_preprocess_resizes_and_batches_agree():
    transformer = make_transformer(mean=np.random.default_rng(2).random((3, 4, 5)))
    images = np.random.default_rng(3).random((3, 6, 7, 3)).astype(np.float32)
    single = np.stack([transformer.preprocess("data", im) for im in images])
    np.testing.assert_allclose(transformer.preprocess_batch("data", images), single, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(single[0], make_transformer(mean=transformer.mean["data"]).preprocess(
        "data", caffe.io.resize_image(images[0], (4, 5))), rtol=1e-5, atol=1e-5)


def test_deprocess_inverts_preprocess():
    transformer = make_transformer()
    image = np.random.default_rng(4).random((4, 5, 3)).astype(np.float32)
    back = transformer.deprocess("data", transformer.preprocess("data", image))
    np.testing.assert_allclose(back, image, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("call", [
    lambda t: t.set_mean("data", np.zeros(4)),
    lambda t: t.set_mean("data", np.zeros((3, 4, 6))),
    lambda t: t.set_mean("data", np.zeros((1, 1, 1, 1))),
    lambda t: t.set_channel_swap("data", (1, 0)),
    lambda t: t.set_transpose("data", (1, 0)),
    lambda t: t.set_raw_scale("label", 1),
])
def test_transformer_rejects_settings_that_do_not_fit(call):
    with pytest.raises(CaffeError):
        call(caffe.io.Transformer({"data": (2, 3, 4, 5)}))


def test_two_dimensional_mean_is_accepted_for_one_channel():
    transformer = caffe.io.Transformer({"data": (1, 1, 2, 2)})
    transformer.set_mean("data", np.ones((2, 2)))
    with pytest.raises(ValueError, match="incompatible"):
        transformer.set_mean("data", np.ones((3, 3)))


# -- BlobProto and Datum ----------------------------------------------------------------------------
def test_blobproto_shapes_and_values():
    blob = caffe.io.array_to_blobproto(np.arange(6.0).reshape(2, 3), diff=-np.arange(6.0).reshape(2, 3))
    assert list(blob.shape.dim) == [2, 3]
    np.testing.assert_array_equal(caffe.io.blobproto_to_array(blob), np.arange(6.0).reshape(2, 3))
    np.testing.assert_array_equal(caffe.io.blobproto_to_array(blob, return_diff=True), -np.arange(6.0).reshape(2, 3))
    legacy = caffe_pb2.BlobProto(num=1, channels=2, height=1, width=3)
    legacy.data.extend(range(6))
    assert caffe.io.blobproto_to_array(legacy).shape == (1, 2, 1, 3)
    shapeless = caffe_pb2.BlobProto()
    shapeless.data.extend([1.0, 2.0])
    with pytest.raises(ValueError):
        caffe.io.blobproto_to_array(shapeless)
    doubles = caffe_pb2.BlobProto()
    doubles.shape.dim.append(2)
    doubles.double_data.extend([0.5, 1e-300])
    np.testing.assert_array_equal(caffe.io.blobproto_to_array(doubles), [0.5, 1e-300])


def test_blobprotovector_round_trip():
    arrays = [np.arange(4.0).reshape(2, 2), np.ones((1, 2, 3))]
    back = caffe.io.blobprotovector_str_to_arraylist(caffe.io.arraylist_to_blobprotovector_str(arrays))
    assert len(back) == 2
    for mine, theirs in zip(arrays, back):
        np.testing.assert_array_equal(mine, theirs)


def test_datum_round_trips_and_label_only_when_given():
    pixels = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    datum = caffe.io.array_to_datum(pixels, label=7)
    assert (datum.channels, datum.height, datum.width, datum.label) == (2, 3, 4, 7)
    np.testing.assert_array_equal(caffe.io.datum_to_array(datum), pixels)
    unlabeled = caffe.io.array_to_datum(pixels.astype(np.float64) / 3)
    assert not unlabeled.HasField("label") and len(unlabeled.float_data) == 24
    back = caffe.io.datum_to_array(unlabeled)
    assert back.dtype == np.float64
    np.testing.assert_allclose(back, pixels / 3, rtol=1e-6)
    with pytest.raises(ValueError):
        caffe.io.array_to_datum(np.zeros((2, 2)))


def test_encoded_datum_is_decoded_in_bgr():
    buffer = stdio.BytesIO()
    Image.fromarray(RGB).save(buffer, format="PNG")
    datum = caffe_pb2.Datum(data=buffer.getvalue(), encoded=True, label=1)
    np.testing.assert_array_equal(caffe.io.datum_to_array(datum), RGB[:, :, ::-1].transpose(2, 0, 1))
