"""Classifier and Detector: images through Transformer and a small net, checked by hand."""

import numpy as np
import pytest
from PIL import Image

import caffe

DEPLOY = """
name: "tiny"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 dim: 4 dim: 4 } } }
layer { name: "score" type: "InnerProduct" bottom: "data" top: "score" inner_product_param { num_output: 3 } }
layer { name: "prob" type: "Softmax" bottom: "score" top: "prob" }
"""
MEAN = np.array([100.0, 110.0, 120.0])  # per channel, in the net's (BGR) order


@pytest.fixture
def model(tmp_path):
    deploy = tmp_path / "deploy.prototxt"
    deploy.write_text(DEPLOY)
    net = caffe.Net(str(deploy), caffe.TEST)
    rng = np.random.default_rng(0)
    net.params["score"][0].data[...] = rng.standard_normal((3, 48)) * 0.01
    net.params["score"][1].data[...] = rng.standard_normal(3) * 0.1
    weights = tmp_path / "tiny.caffemodel"
    net.save(str(weights))
    return str(deploy), str(weights), net.params["score"][0].data.copy(), net.params["score"][1].data.copy()


def softmax(scores):
    e = np.exp(scores - scores.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def by_hand(crop, w, b):
    """One H x W x 3 RGB crop in [0, 1] through the preprocessing and the net, written out."""
    blob = crop.transpose(2, 0, 1)[::-1] * 255.0 - MEAN[:, None, None]
    return softmax(w @ blob.ravel() + b)


def images(tmp_path):
    rng = np.random.default_rng(1)
    paths = []
    for index, size in enumerate([(9, 7), (5, 6)]):
        path = tmp_path / f"im{index}.png"
        Image.fromarray(rng.integers(0, 256, size + (3,), dtype=np.uint8)).save(path)
        paths.append(str(path))
    return [caffe.io.load_image(p) for p in paths], paths


def test_classifier_oversample_and_center(model, tmp_path):
    deploy, weights, w, b = model
    classifier = caffe.Classifier(deploy, weights, image_dims=(6, 6), mean=MEAN, raw_scale=255,
                                  channel_swap=(2, 1, 0))
    inputs, _ = images(tmp_path)
    resized = [caffe.io.resize_image(im, (6, 6)) for im in inputs]

    predictions = classifier.predict(inputs)
    assert predictions.shape == (2, 3)
    for prediction, im in zip(predictions, resized):
        corners = [im[0:4, 0:4], im[0:4, 2:6], im[2:6, 0:4], im[2:6, 2:6], im[1:5, 1:5]]
        crops = corners + [c[:, ::-1] for c in corners]
        expected = np.mean([by_hand(c, w, b) for c in crops], axis=0)
        np.testing.assert_allclose(prediction, expected, rtol=1e-4, atol=1e-6)

    center = classifier.predict(inputs, oversample=False)
    for prediction, im in zip(center, resized):
        np.testing.assert_allclose(prediction, by_hand(im[1:5, 1:5], w, b), rtol=1e-4, atol=1e-6)


def test_classifier_defaults_to_the_crop_size(model):
    deploy, weights, _, _ = model
    classifier = caffe.Classifier(deploy, weights)
    assert list(classifier.image_dims) == [4, 4]
    assert isinstance(classifier, caffe.Net)
    gray = np.random.default_rng(2).random((4, 4, 3)).astype(np.float32)
    assert classifier.predict([gray], oversample=False).shape == (1, 3)


def test_detector_scores_windows(model, tmp_path):
    deploy, weights, w, b = model
    detector = caffe.Detector(deploy, weights, mean=MEAN, raw_scale=255, channel_swap=(2, 1, 0))
    inputs, paths = images(tmp_path)
    windows = [(paths[0], [(0, 0, 4, 4), (2, 1, 9, 7)]), (paths[1], [(1, 1, 5, 6)])]
    detections = detector.detect_windows(windows)
    assert [d["filename"] for d in detections] == [paths[0], paths[0], paths[1]]
    cuts = [inputs[0][0:4, 0:4], inputs[0][2:9, 1:7], inputs[1][1:5, 1:6]]
    for detection, cut in zip(detections, cuts):
        np.testing.assert_allclose(detection["prediction"], by_hand(caffe.io.resize_image(cut, (4, 4)), w, b),
                                   rtol=1e-4, atol=1e-6)


def test_detector_context_padding_fills_with_the_mean(model):
    deploy, weights, _, _ = model
    detector = caffe.Detector(deploy, weights, mean=MEAN, raw_scale=255, channel_swap=(2, 1, 0), context_pad=1)
    image = np.random.default_rng(3).random((8, 8, 3)).astype(np.float32)
    crop = detector.crop(image, np.array([0, 0, 3, 3]))
    assert crop.shape == (4, 4, 3)
    rgb_mean = MEAN[::-1] / 255.0
    np.testing.assert_allclose(crop[0], np.broadcast_to(rgb_mean, (4, 3)), rtol=1e-6)
    np.testing.assert_allclose(crop[:, 0], np.broadcast_to(rgb_mean, (4, 3)), rtol=1e-6)
    # The grown box (-2..6) clipped to the image is warped into the 3x3 that the padding leaves.
    np.testing.assert_allclose(crop[1:, 1:], caffe.io.resize_image(image[0:6, 0:6], (3, 3)), rtol=1e-6)
