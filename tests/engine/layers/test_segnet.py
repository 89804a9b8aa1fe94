"""SegNet's BN and Upsample (segnet.py), from the fork's loops: LEARN and INFERENCE,
the mask top of Pooling feeding Upsample in a net, gradients, weights files, errors."""

import numpy as np
import pytest
from layer_check import build_layer, check_gradient, forward

import engine
from engine import caffe_pb2, formats
from engine.errors import LayerError
from engine.layers.segnet import SegNetBNLayer
from engine.net import Net

RNG = np.random.default_rng(21)
X = RNG.standard_normal((3, 4, 5, 6)) * 2 + 1
LEARN = 'type: "BN" bn_param { scale_filler { type: "gaussian" } shift_filler { type: "gaussian" } }'
INFERENCE = 'type: "BN" bn_param { scale_filler { type: "gaussian" } shift_filler { type: "gaussian" } ' \
            'bn_mode: INFERENCE }'


def segnet_learn(x, scale, shift):
    """The fork's LEARN forward: E(x^2) - E(x)^2 over (num, spatial), eps 1e-9, then scale and shift."""
    mean = x.mean(axis=(0, 2, 3), keepdims=True)
    variance = (x ** 2).mean(axis=(0, 2, 3), keepdims=True) - mean ** 2
    return scale * (x - mean) / np.sqrt(variance + 1e-9) + shift, mean, variance


def test_learn_forward_and_the_mean_and_variance_tops():
    layer, bottom, top = build_layer(LEARN, [X], num_tops=3)
    assert isinstance(layer, SegNetBNLayer) and [b.shape for b in layer.blobs] == [(1, 4, 1, 1)] * 2
    y, mean, variance = forward(layer, bottom, top)
    expected = segnet_learn(X, layer.blobs[0].data, layer.blobs[1].data)
    for ours, theirs in zip((y, mean, variance), expected):
        np.testing.assert_allclose(ours, theirs, rtol=1e-10, atol=1e-12)
    assert mean.shape == (1, 4, 1, 1)


def test_learn_uses_the_batch_in_either_phase():
    for phase in (caffe_pb2.TRAIN, caffe_pb2.TEST):
        layer, bottom, top = build_layer(LEARN, [X], phase=phase)
        y = forward(layer, bottom, top)[0]
        np.testing.assert_allclose(y, segnet_learn(X, layer.blobs[0].data, layer.blobs[1].data)[0], rtol=1e-10)


def test_inference_is_scale_and_shift():
    layer, bottom, top = build_layer(INFERENCE, [X])
    y = forward(layer, bottom, top)[0]
    np.testing.assert_allclose(y, layer.blobs[0].data * X + layer.blobs[1].data, rtol=1e-14)


def test_default_fillers_and_no_bn_param_mean_segnet_learn():
    layer, bottom, top = build_layer('type: "BN"', [X])
    assert isinstance(layer, SegNetBNLayer) and layer.learn
    np.testing.assert_array_equal(layer.blobs[0].data, 0)  # Caffe's default filler: constant 0
    layer.blobs[0].data[...] = 1
    np.testing.assert_allclose(forward(layer, bottom, top)[0], segnet_learn(X, 1, 0)[0], rtol=1e-10)


@pytest.mark.parametrize("text", [LEARN, INFERENCE])
def test_gradients(text):
    check_gradient(text, [X], rtol=1e-4)


def test_learn_backward_matches_the_fork_formula():
    layer, bottom, top = build_layer(LEARN, [X])
    forward(layer, bottom, top)
    dy = RNG.standard_normal(X.shape)
    top[0].diff[...] = dy
    for blob in layer.blobs:
        blob.diff[...] = 0
    layer.run_backward(top, [True], bottom)
    scale = layer.blobs[0].data
    mean = X.mean(axis=(0, 2, 3), keepdims=True)
    std = np.sqrt((X ** 2).mean(axis=(0, 2, 3), keepdims=True) - mean ** 2 + 1e-9)
    x_norm = (X - mean) / std
    m = X.shape[0] * X.shape[2] * X.shape[3]
    buffer = scale * dy
    # bottom_diff = (buf - (sum(x_norm * buf) x_norm + sum(buf)) / m) / std, as the fork's gemm/axpby steps.
    expected = (buffer - (x_norm * (x_norm * buffer).sum(axis=(0, 2, 3), keepdims=True)
                          + buffer.sum(axis=(0, 2, 3), keepdims=True)) / m) / std
    np.testing.assert_allclose(bottom[0].diff, expected, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(layer.blobs[0].diff, (x_norm * dy).sum(axis=(0, 2, 3), keepdims=True), rtol=1e-10)
    np.testing.assert_allclose(layer.blobs[1].diff, dy.sum(axis=(0, 2, 3), keepdims=True), rtol=1e-12)


def test_inference_in_place_keeps_the_input_for_the_scale_gradient():
    layer, bottom, _ = build_layer(INFERENCE, [X])
    layer.run_forward(bottom, bottom)
    bottom[0].diff[...] = 1
    for blob in layer.blobs:
        blob.diff[...] = 0
    layer.run_backward(bottom, [True], bottom)
    np.testing.assert_allclose(layer.blobs[0].diff.reshape(-1), X.sum(axis=(0, 2, 3)), rtol=1e-12)
    np.testing.assert_allclose(bottom[0].diff, np.broadcast_to(layer.blobs[0].data, X.shape), rtol=0)


def test_inference_allows_one_top_only():
    with pytest.raises(LayerError, match="at most 1 top"):
        build_layer(INFERENCE, [X], num_tops=2)


# -- Upsample ------------------------------------------------------------------------------
def upsample_loop(x, mask, out_h, out_w):
    """The fork's Forward_cpu: top[mask[i]] = x[i] per channel, in order."""
    top = np.zeros(x.shape[:2] + (out_h, out_w))
    for n in range(x.shape[0]):
        for c in range(x.shape[1]):
            plane = top[n, c].reshape(-1)
            for i, (value, index) in enumerate(zip(x[n, c].reshape(-1), mask[n, c].reshape(-1))):
                plane[int(index)] = value
    return top


def pooled(x, params):
    layer, bottom, top = build_layer(f'type: "Pooling" pooling_param {{ pool: MAX {params} }}', [x], num_tops=2)
    return forward(layer, bottom, top)


@pytest.mark.parametrize("pool, upsample, out", [
    ("kernel_size: 2 stride: 2", "scale: 2", (6, 8)),
    ("kernel_size: 2 stride: 2", "upsample_h: 5 upsample_w: 7", (5, 7)),
    ("kernel_size: 2 stride: 2", "scale: 2 pad_out_h: true", (5, 8)),
    ("kernel_size: 3 stride: 2", "upsample_h: 6 upsample_w: 8", (6, 8)),  # overlapping windows
    ("kernel_size: 3 stride: 3", "scale_h: 3 scale_w: 3", (6, 9)),
])
def test_upsample_forward_and_backward_match_the_fork(pool, upsample, out):
    x = RNG.permutation(6 * 8 * 2 * 3).reshape(2, 3, 6, 8) * 0.1
    values, mask = pooled(x[..., :out[0], :out[1]], pool)
    features = RNG.standard_normal(values.shape)
    layer, bottom, top = build_layer(f'type: "Upsample" upsample_param {{ {upsample} }}', [features, mask])
    y = forward(layer, bottom, top)[0]
    assert y.shape == (2, 3) + out
    np.testing.assert_array_equal(y, upsample_loop(features, mask, *out))
    dy = RNG.standard_normal(y.shape)
    top[0].diff[...] = dy
    layer.run_backward(top, [True, False], bottom)
    gathered = np.take_along_axis(dy.reshape(6, -1), mask.reshape(6, -1).astype(int), axis=1)
    np.testing.assert_array_equal(bottom[0].diff, gathered.reshape(features.shape))


def test_upsample_gradient():
    x = RNG.permutation(2 * 3 * 6 * 6).reshape(2, 3, 6, 6) * 0.1
    mask = pooled(x, "kernel_size: 2 stride: 2")[1]
    check_gradient('type: "Upsample" upsample_param { scale: 2 }', [RNG.standard_normal(mask.shape), mask],
                   bottoms_checked=[0])


SEGNET_NET = """
name: "segnet-tiny"
input: "data" input_shape { dim: 2 dim: 3 dim: 8 dim: 8 }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
  convolution_param { num_output: 4 kernel_size: 3 pad: 1 weight_filler { type: "gaussian" std: 0.5 } } }
layer { name: "bn" type: "BN" bottom: "conv" top: "conv"
  bn_param { scale_filler { type: "constant" value: 1 } shift_filler { type: "constant" value: 0.001 } MODE } }
layer { name: "pool" type: "Pooling" bottom: "conv" top: "pool" top: "pool_mask"
  pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "up" type: "Upsample" bottom: "pool" bottom: "pool_mask" top: "up" upsample_param { scale: 2 } }
"""


def test_a_segnet_net_trains_and_its_weights_load_into_inference(tmp_path):
    train = Net(formats.parse_text(SEGNET_NET.replace("MODE", "bn_mode: LEARN"), caffe_pb2.NetParameter()),
                engine.TRAIN)
    x = RNG.standard_normal((2, 3, 8, 8))
    train.blobs["data"].data[...] = x
    train.forward()
    conv, up = train.blobs["conv"].data, train.blobs["up"].data
    mask = train.blobs["pool_mask"].data
    np.testing.assert_array_equal(up, upsample_loop(train.blobs["pool"].data, mask, 8, 8))
    assert ((up == 0) | (up == conv)).all() and (up != 0).sum() == 2 * 4 * 16
    train.blobs["up"].diff[...] = 1
    train.backward()
    path = tmp_path / "segnet.caffemodel"
    train.save(str(path))
    saved = formats.read_weights(str(path))
    assert [formats.blob_shape(b) for b in saved["bn"]] == [(1, 4, 1, 1), (1, 4, 1, 1)]
    text = SEGNET_NET.replace("MODE", "bn_mode: INFERENCE")
    inference = Net(formats.parse_text(text, caffe_pb2.NetParameter()), str(path), engine.TEST)
    np.testing.assert_array_equal(inference.params["bn"][1].data, 0.001 * np.ones((1, 4, 1, 1), np.float32))


@pytest.mark.parametrize("text, bottoms, message", [
    ('upsample_param { scale: 2 }', [(1, 2, 3, 3), (1, 2, 3, 4)], "must have the input's shape"),
    ('upsample_param { scale: 2 }', [(1, 2, 3, 3), (1, 3, 3, 3)], "must have the input's shape"),
    ('upsample_param { scale: 2 }', [(2, 3, 3), (2, 3, 3)], "Input must have 4 axes"),
    ('upsample_param { scale: 2 scale_h: 2 scale_w: 2 }', [(1, 1, 2, 2)] * 2, "upsample_h & upsample_w are required"),
    ('upsample_param { scale: 1 }', [(1, 1, 2, 2)] * 2, "scale must be above 1"),
    ('upsample_param { upsample_h: 1 upsample_w: 4 }', [(1, 1, 2, 2)] * 2, "must be above 1"),
    ('upsample_param { scale: 3 pad_out_w: true }', [(1, 1, 2, 2)] * 2, "requires scale_w == 2"),
])
def test_upsample_bad_parameters_and_shapes(text, bottoms, message):
    with pytest.raises(LayerError, match=message):
        build_layer(f'type: "Upsample" {text}', [np.zeros(s) for s in bottoms])


@pytest.mark.parametrize("bad", [16, -1])
def test_upsample_mask_index_out_of_range(bad):
    mask = np.zeros((1, 1, 2, 2))
    mask[0, 0, 1, 1] = bad
    layer, bottom, top = build_layer('type: "Upsample" upsample_param { scale: 2 }', [np.ones((1, 1, 2, 2)), mask])
    with pytest.raises(LayerError, match=f"upsample top index {bad} out of range for the 4 x 4 top"):
        forward(layer, bottom, top)


def test_upsample_on_both_devices(mode):
    from engine.backend import array_module, to_host

    x = RNG.permutation(2 * 3 * 6 * 6).reshape(2, 3, 6, 6) * 0.1
    values, mask = pooled(x, "kernel_size: 3 stride: 2 pad: 1")
    layer, bottom, top = build_layer('type: "Upsample" upsample_param { upsample_h: 6 upsample_w: 6 }',
                                     [values, mask], xp=array_module())
    np.testing.assert_array_equal(to_host(forward(layer, bottom, top)[0]), upsample_loop(values, mask, 6, 6))


def test_bn_on_both_devices(mode):
    from engine.backend import array_module, to_host

    layer, bottom, top = build_layer(LEARN, [X], xp=array_module())
    expected = segnet_learn(X, to_host(layer.blobs[0].data), to_host(layer.blobs[1].data))[0]
    np.testing.assert_allclose(to_host(forward(layer, bottom, top)[0]), expected, rtol=1e-10)


# -- SoftmaxWithLoss with SegNet's class weighting ---------------------------------------

WEIGHTS = [0.5, 2.0, 3.5]
WEIGHTED = ('type: "SoftmaxWithLoss" loss_param { weight_by_label_freqs: true ignore_label: 255 '
            + " ".join(f"class_weighting: {w}" for w in WEIGHTS) + " }")


def segnet_weighted_loss(x, labels, weights, ignore):
    """The fork's loops: -log p[label] * weight[label] summed over positions, divided by the
    count of positions not ignored; the gradient (p - onehot) * weight[label] / count."""
    num, classes, height, width = x.shape
    e = np.exp(x - x.max(axis=1, keepdims=True))
    prob = e / e.sum(axis=1, keepdims=True)
    loss, count, grad = 0.0, 0, prob.copy()
    for n in range(num):
        for h in range(height):
            for w in range(width):
                label = int(labels[n, 0, h, w])
                if label == ignore:
                    grad[n, :, h, w] = 0
                    continue
                loss -= np.log(max(prob[n, label, h, w], np.finfo(np.float32).tiny)) * weights[label]
                grad[n, label, h, w] -= 1
                grad[n, :, h, w] *= weights[label]
                count += 1
    return loss / count, grad / count


def weighted_case():
    x = RNG.standard_normal((2, 3, 4, 5))
    labels = RNG.integers(0, 3, (2, 1, 4, 5)).astype(np.float64)
    labels[0, 0, 1, 2] = labels[1, 0, 3, 0] = 255
    return x, labels


def test_class_weighting_forward_and_backward_match_the_fork():
    x, labels = weighted_case()
    layer, bottom, top = build_layer(WEIGHTED, [x, labels])
    loss = forward(layer, bottom, top)[0]
    expected_loss, expected_grad = segnet_weighted_loss(x, labels, WEIGHTS, 255)
    np.testing.assert_allclose(loss, expected_loss, rtol=1e-12)
    top[0].diff[...] = 1.5
    layer.run_backward(top, [True, False], bottom)
    np.testing.assert_allclose(bottom[0].diff, 1.5 * expected_grad, rtol=1e-12, atol=1e-15)


def test_class_weighting_gradient():
    check_gradient(WEIGHTED, list(weighted_case()), bottoms_checked=[0])


def test_class_weighting_is_read_only_with_weight_by_label_freqs():
    x, labels = weighted_case()
    plain = 'type: "SoftmaxWithLoss" loss_param { ignore_label: 255 class_weighting: 9 }'
    layer, bottom, top = build_layer(plain, [x, labels])
    np.testing.assert_allclose(forward(layer, bottom, top)[0],
                               segnet_weighted_loss(x, labels, [1.0] * 3, 255)[0], rtol=1e-12)


def test_class_weighting_must_give_one_value_per_class():
    text = 'type: "SoftmaxWithLoss" loss_param { weight_by_label_freqs: true class_weighting: 1 class_weighting: 2 }'
    x, labels = weighted_case()
    with pytest.raises(LayerError, match=r"2 class_weighting values, the predictions 3 classes$"):
        build_layer(text, [x, np.minimum(labels, 2)])


def test_class_weighting_on_both_devices(mode):
    from engine.backend import array_module, to_host

    x, labels = weighted_case()
    layer, bottom, top = build_layer(WEIGHTED, [x, labels], xp=array_module())
    expected_loss, expected_grad = segnet_weighted_loss(x, labels, WEIGHTS, 255)
    np.testing.assert_allclose(float(to_host(forward(layer, bottom, top)[0])), expected_loss, rtol=1e-12)
    top[0].diff[...] = 1
    layer.run_backward(top, [True, False], bottom)
    np.testing.assert_allclose(to_host(bottom[0].diff), expected_grad, rtol=1e-12, atol=1e-15)
