"""PSPNet's BN and Interp (pspnet.py): the fork's loops, running statistics, frozen,
OpenCV's dnn for Interp's resizing, gradients, weights files and errors."""

import numpy as np
import pytest
from layer_check import build_layer, check_gradient, forward
from opencv_reference import opencv_forward

import engine
from engine import caffe_pb2, formats
from engine.errors import LayerError
from engine.layers.pspnet import PSPNetBNLayer
from engine.net import Net

RNG = np.random.default_rng(31)
X = RNG.standard_normal((3, 4, 5, 6)) * 1.5 - 0.5
FILLERS = 'slope_filler { type: "gaussian" } bias_filler { type: "gaussian" }'
BN = f'type: "BN" bn_param {{ {FILLERS} momentum: 0.95 eps: 1e-4 }}'
FROZEN = f'type: "BN" bn_param {{ {FILLERS} frozen: true eps: 1e-4 }}'
F32 = lambda value: float(np.float32(value))  # noqa: E731 (the fields are float32)


def set_running(layer, mean, variance):
    layer.blobs[2].data[...] = mean.reshape(1, -1, 1, 1)
    layer.blobs[3].data[...] = variance.reshape(1, -1, 1, 1)


def test_blobs_and_forced_learning_rates():
    layer, _, _ = build_layer(BN, [X])
    assert isinstance(layer, PSPNetBNLayer) and [b.shape for b in layer.blobs] == [(1, 4, 1, 1)] * 4
    np.testing.assert_array_equal(layer.blobs[2].data, 0)
    np.testing.assert_array_equal(layer.blobs[3].data, 0)
    assert [(p.lr_mult, p.decay_mult) for p in layer.param.param] == [(1, 1), (1, 1), (0, 0), (0, 0)]
    frozen, _, _ = build_layer(FROZEN, [X])
    np.testing.assert_array_equal(frozen.blobs[3].data, 1)  # the fork starts a frozen variance at 1
    assert [(p.lr_mult, p.decay_mult) for p in frozen.param.param] == [(0, 0)] * 4


def test_train_uses_the_batch_and_moves_the_running_statistics():
    layer, bottom, top = build_layer(BN, [X], phase=caffe_pb2.TRAIN)
    running_mean, running_var = RNG.standard_normal(4), RNG.uniform(0.5, 2, 4)
    set_running(layer, running_mean, running_var)
    y = forward(layer, bottom, top)[0]
    mean = X.mean(axis=(0, 2, 3))
    variance = ((X - mean.reshape(1, -1, 1, 1)) ** 2).mean(axis=(0, 2, 3))
    slope, bias = layer.blobs[0].data, layer.blobs[1].data
    expected = slope * (X - mean.reshape(1, -1, 1, 1)) * (variance.reshape(1, -1, 1, 1) + F32(1e-4)) ** -0.5 + bias
    np.testing.assert_allclose(y, expected, rtol=1e-12)
    m = F32(0.95)
    np.testing.assert_allclose(layer.blobs[2].data.reshape(-1), (1 - m) * mean + m * running_mean, rtol=1e-12)
    np.testing.assert_allclose(layer.blobs[3].data.reshape(-1), (1 - m) * variance + m * running_var, rtol=1e-12)


@pytest.mark.parametrize("text, phase", [(BN, caffe_pb2.TEST), (FROZEN, caffe_pb2.TRAIN), (FROZEN, caffe_pb2.TEST)])
def test_test_phase_or_frozen_uses_and_keeps_the_running_statistics(text, phase):
    layer, bottom, top = build_layer(text, [X], phase=phase)
    mean, variance = RNG.standard_normal(4), RNG.uniform(0.5, 2, 4)
    set_running(layer, mean, variance)
    y = forward(layer, bottom, top)[0]
    slope, bias = layer.blobs[0].data, layer.blobs[1].data
    expected = slope * (X - mean.reshape(1, -1, 1, 1)) / np.sqrt(variance.reshape(1, -1, 1, 1) + F32(1e-4)) + bias
    np.testing.assert_allclose(y, expected, rtol=1e-12)
    np.testing.assert_array_equal(layer.blobs[2].data.reshape(-1), mean)
    np.testing.assert_array_equal(layer.blobs[3].data.reshape(-1), variance)


def test_train_gradient():
    check_gradient(BN, [X], phase=caffe_pb2.TRAIN, params_checked=[0, 1], rtol=1e-4)


def test_test_phase_gradient_is_exact():
    layer = check_gradient(BN.replace("momentum", "frozen: false momentum"), [X], params_checked=[0, 1])
    assert not layer.frozen


def test_frozen_backward_only_scales_the_top_diff():
    layer, bottom, top = build_layer(FROZEN, [X], phase=caffe_pb2.TRAIN)
    variance = RNG.uniform(0.5, 2, 4)
    set_running(layer, RNG.standard_normal(4), variance)
    forward(layer, bottom, top)
    dy = RNG.standard_normal(X.shape)
    top[0].diff[...] = dy
    for blob in layer.blobs:
        blob.diff[...] = 0
    layer.param_propagate_down = [True] * 4
    layer.run_backward(top, [True], bottom)
    expected = dy * layer.blobs[0].data / np.sqrt(variance.reshape(1, -1, 1, 1) + F32(1e-4))
    np.testing.assert_allclose(bottom[0].diff, expected, rtol=1e-12)
    for blob in layer.blobs:
        np.testing.assert_array_equal(blob.diff, 0)


def test_pspnet_weights_load_by_name(tmp_path):
    """A .caffemodel laid out as PSPNet's: slope, bias, mean, variance, each 1 x C x 1 x 1."""
    text = """
input: "data" input_shape { dim: 2 dim: 4 dim: 3 dim: 3 }
layer { name: "bn" type: "BN" bottom: "data" top: "bn" bn_param { frozen: true } }
"""
    values = [RNG.standard_normal((1, 4, 1, 1)), RNG.standard_normal((1, 4, 1, 1)),
              RNG.standard_normal((1, 4, 1, 1)), RNG.uniform(0.5, 2, (1, 4, 1, 1))]
    weights = caffe_pb2.NetParameter()
    layer = weights.layer.add(name="bn", type="BN")
    layer.bn_param.frozen = True
    for array in values:
        layer.blobs.add().CopyFrom(formats.array_to_blobproto(array.astype(np.float32)))
    path = tmp_path / "pspnet.caffemodel"
    formats.write_binary(str(path), weights)
    net = Net(formats.parse_text(text, caffe_pb2.NetParameter()), str(path), engine.TEST)
    x = RNG.standard_normal((2, 4, 3, 3))
    net.blobs["data"].data[...] = x
    net.forward()
    v = [a.astype(np.float32).astype(np.float64) for a in values]
    expected = v[0] * (x - v[2]) / np.sqrt(v[3] + F32(1e-5)) + v[1]
    np.testing.assert_allclose(net.blobs["bn"].data, expected, rtol=1e-5, atol=1e-6)


def test_wrong_blob_count_is_an_error():
    param_text = f'type: "BN" bn_param {{ {FILLERS} }}'
    layer, bottom, top = build_layer(param_text, [X])
    from layer_check import layer_param

    other = layer_param(param_text)
    fresh = type(layer)(other)
    fresh.blobs.add_blob(1, 4, 1, 1)
    with pytest.raises(LayerError, match="PSPNet's BN has 4 blobs"):
        fresh.set_up(bottom, top)


def test_bn_on_both_devices(mode):
    from engine.backend import array_module, to_host

    layer, bottom, top = build_layer(BN, [X], phase=caffe_pb2.TRAIN, xp=array_module())
    y = to_host(forward(layer, bottom, top)[0])
    mean = X.mean(axis=(0, 2, 3), keepdims=True)
    variance = ((X - mean) ** 2).mean(axis=(0, 2, 3), keepdims=True)
    expected = to_host(layer.blobs[0].data) * (X - mean) / np.sqrt(variance + F32(1e-4)) + to_host(layer.blobs[1].data)
    np.testing.assert_allclose(y, expected, rtol=1e-12)


# -- Interp -------------------------------------------------------------------------------
def interp_loop(x, x1, y1, height1, width1, height2, width2):
    """caffe_cpu_interp2 (not packed), for a crop at (x1, y1) of height1 x width1, in float32 ratios."""
    top = np.zeros(x.shape[:2] + (height2, width2))
    if height1 == height2 and width1 == width2:
        return x[:, :, y1:y1 + height1, x1:x1 + width1].copy()
    rheight = np.float32(height1 - 1) / np.float32(height2 - 1) if height2 > 1 else np.float32(0)
    rwidth = np.float32(width1 - 1) / np.float32(width2 - 1) if width2 > 1 else np.float32(0)
    for h2 in range(height2):
        h1r = np.float32(rheight * np.float32(h2))
        h1 = int(h1r)
        h1p = 1 if h1 < height1 - 1 else 0
        h1lambda = float(np.float32(h1r - np.float32(h1)))
        h0lambda = 1.0 - h1lambda
        for w2 in range(width2):
            w1r = np.float32(rwidth * np.float32(w2))
            w1 = int(w1r)
            w1p = 1 if w1 < width1 - 1 else 0
            w1lambda = float(np.float32(w1r - np.float32(w1)))
            w0lambda = 1.0 - w1lambda
            p = x[:, :, y1 + h1:, x1 + w1:]
            top[:, :, h2, w2] = h0lambda * (w0lambda * p[:, :, 0, 0] + w1lambda * p[:, :, 0, w1p]) + \
                h1lambda * (w0lambda * p[:, :, h1p, 0] + w1lambda * p[:, :, h1p, w1p])
    return top


XI = RNG.standard_normal((2, 3, 5, 7))
INTERP_CASES = [  # (interp_param, output size, OpenCV agrees)
    ("zoom_factor: 3", (13, 19), True),
    ("zoom_factor: 1", (5, 7), True),
    ("height: 9 width: 4", (9, 4), True),
    ("height: 1 width: 1", (1, 1), True),
    ("shrink_factor: 2", (3, 4), False),
    ("shrink_factor: 2 zoom_factor: 3", (7, 10), False),
    ("zoom_factor: 2 pad_beg: -1 pad_end: -1", (5, 9), False),
    ("shrink_factor: 3 pad_end: -1", (2, 2), False),
    ("zoom_factor: 2 height: 3 width: 3", (9, 13), True),  # a factor wins over height and width
]


@pytest.mark.parametrize("params, size, opencv", INTERP_CASES, ids=[c[0] for c in INTERP_CASES])
def test_interp_forward_matches_the_fork_loop_and_opencv(params, size, opencv):
    text = f'type: "Interp" interp_param {{ {params} }}'
    y = forward(*build_layer(text, [XI]))[0]
    assert y.shape == (2, 3) + size
    pad_beg = -int(params.split("pad_beg: ")[1].split()[0]) if "pad_beg" in params else 0
    pad_end = -int(params.split("pad_end: ")[1].split()[0]) if "pad_end" in params else 0
    crop = (5 - pad_beg - pad_end, 7 - pad_beg - pad_end)
    np.testing.assert_allclose(y, interp_loop(XI, pad_beg, pad_beg, *crop, *size), rtol=1e-12, atol=1e-12)
    if opencv:  # OpenCV's Interp ignores shrink_factor with zoom_factor, and pad_beg / pad_end
        net = 'input: "data" input_shape { dim: 2 dim: 3 dim: 5 dim: 7 }\n' \
              f'layer {{ name: "i" type: "Interp" bottom: "data" top: "i" interp_param {{ {params} }} }}'
        (reference,) = opencv_forward(net, {"data": XI}, ["i"])
        np.testing.assert_allclose(y, reference, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("params", ["zoom_factor: 2", "shrink_factor: 2 pad_beg: -1", "height: 4 width: 9",
                                    "zoom_factor: 1"])
def test_interp_gradient(params):
    check_gradient(f'type: "Interp" interp_param {{ {params} }}', [XI])


def test_interp_backward_is_the_adjoint_of_the_forward():
    layer, bottom, top = build_layer('type: "Interp" interp_param { zoom_factor: 3 pad_beg: -1 }', [XI])
    y = forward(layer, bottom, top)[0]
    dy = RNG.standard_normal(y.shape)
    top[0].diff[...] = dy
    layer.run_backward(top, [True], bottom)
    assert np.isclose((y * dy).sum(), (XI * bottom[0].diff).sum(), rtol=1e-12)
    np.testing.assert_array_equal(bottom[0].diff[:, :, 0, :], 0)  # cropped away


@pytest.mark.parametrize("params, message", [
    ("", "interp_param needs zoom_factor, shrink_factor, or height and width"),
    ("height: 4", "interp_param needs zoom_factor, shrink_factor, or height and width"),
    ("zoom_factor: 0", "Zoom factor must be positive"),
    ("shrink_factor: 0", "Shrink factor must be positive"),
    ("zoom_factor: 2 pad_beg: 1", "Only supports non-pos padding"),
    ("zoom_factor: 2 pad_beg: -3 pad_end: -2", "leaves no pixel"),
    ("height: 0 width: 3", "output size 0 x 3 must be positive"),
])
def test_interp_bad_parameters(params, message):
    with pytest.raises(LayerError, match=message):
        build_layer(f'type: "Interp" interp_param {{ {params} }}', [XI])


def test_interp_needs_four_axes():
    with pytest.raises(LayerError, match="Input must have 4 axes"):
        build_layer('type: "Interp" interp_param { zoom_factor: 2 }', [np.zeros((2, 3, 4))])


def test_interp_on_both_devices(mode):
    from engine.backend import array_module, to_host

    layer, bottom, top = build_layer('type: "Interp" interp_param { zoom_factor: 2 pad_end: -1 }', [XI],
                                     xp=array_module())
    np.testing.assert_allclose(to_host(forward(layer, bottom, top)[0]), interp_loop(XI, 0, 0, 4, 6, 7, 11),
                               rtol=1e-12, atol=1e-12)
