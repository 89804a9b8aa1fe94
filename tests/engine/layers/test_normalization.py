"""BatchNorm and MVN: hand-computed forwards, Caffe's running sums, gradients."""

import numpy as np
import pytest
from layer_check import build_layer, check_gradient, forward

from engine import caffe_pb2
from engine.blob import Blob
from engine.errors import LayerError
from engine.formats import parse_text
from engine.net import Net

RNG = np.random.default_rng(3)


def bn_text(extra=""):
    return f'type: "BatchNorm" batch_norm_param {{ {extra} }}'


def batch_stats(x):
    axes = (0,) + tuple(range(2, x.ndim))
    mean = x.mean(axis=axes)
    var = ((x - mean.reshape((1, -1) + (1,) * (x.ndim - 2))) ** 2).mean(axis=axes)
    return mean, var


def expand(v, ndim):
    return v.reshape((1, -1) + (1,) * (ndim - 2))


# -- BatchNorm -------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(4, 3, 2, 2), (5, 2), (2, 3, 4)])
def test_batchnorm_train_forward_and_running_sums(shape):
    x = RNG.standard_normal(shape) * 2 + 1
    layer, bottom, top = build_layer(bn_text("moving_average_fraction: 0.9 eps: 0.001"), [x],
                                     phase=caffe_pb2.TRAIN)
    (y,) = forward(layer, bottom, top)
    mean, var = batch_stats(x)
    np.testing.assert_allclose(y, (x - expand(mean, x.ndim)) / np.sqrt(expand(var, x.ndim) + 1e-3), rtol=1e-6)
    m = x.size // shape[1]
    np.testing.assert_allclose(layer.blobs[0].data, mean)
    np.testing.assert_allclose(layer.blobs[1].data, var * m / (m - 1))
    np.testing.assert_allclose(layer.blobs[2].data, [1.0])
    # A second pass decays the sums by the fraction and adds the new statistics.
    bottom[0].data[...] = x * 0.5
    forward(layer, bottom, top)
    mean2, var2 = batch_stats(x * 0.5)
    np.testing.assert_allclose(layer.blobs[0].data, mean2 + 0.9 * mean)
    np.testing.assert_allclose(layer.blobs[1].data, var2 * m / (m - 1) + 0.9 * var * m / (m - 1))
    np.testing.assert_allclose(layer.blobs[2].data, [1.9])


def test_batchnorm_global_stats_divide_by_scale_factor():
    x = RNG.standard_normal((3, 2, 2, 2))
    layer, bottom, top = build_layer(bn_text(), [x])  # TEST phase: global stats by default
    layer.blobs[0].data[...] = [1.0, -2.0]
    layer.blobs[1].data[...] = [4.0, 0.5]
    layer.blobs[2].data[...] = [2.0]
    (y,) = forward(layer, bottom, top)
    mean, var = np.array([0.5, -1.0]), np.array([2.0, 0.25])
    np.testing.assert_allclose(y, (x - expand(mean, 4)) / np.sqrt(expand(var, 4) + 1e-5))
    top[0].diff[...] = RNG.standard_normal(x.shape)
    layer.run_backward(top, [True], bottom)
    np.testing.assert_allclose(bottom[0].diff, top[0].diff / np.sqrt(expand(var, 4) + 1e-5))
    # Running sums are left alone outside of batch statistics.
    np.testing.assert_allclose(layer.blobs[2].data, [2.0])


def test_batchnorm_zero_scale_factor_means_zero_statistics():
    x = RNG.standard_normal((2, 3))
    layer, bottom, top = build_layer(bn_text("use_global_stats: true"), [x], phase=caffe_pb2.TRAIN)
    layer.blobs[0].data[...] = 5.0
    (y,) = forward(layer, bottom, top)
    np.testing.assert_allclose(y, x / np.sqrt(1e-5))


@pytest.mark.parametrize("phase, explicit, expected", [
    (caffe_pb2.TEST, "", True), (caffe_pb2.TRAIN, "", False),
    (caffe_pb2.TEST, "use_global_stats: false", False), (caffe_pb2.TRAIN, "use_global_stats: true", True)])
def test_batchnorm_use_global_stats_default_follows_phase(phase, explicit, expected):
    layer, _, _ = build_layer(bn_text(explicit), [np.ones((2, 3))], phase=phase)
    assert layer.use_global_stats is expected


def test_batchnorm_forces_zero_lr_mult_and_refuses_learning():
    layer, _, _ = build_layer(bn_text(), [np.ones((2, 3))])
    assert [spec.lr_mult for spec in layer.param.param] == [0, 0, 0]
    with pytest.raises(LayerError, match="Cannot configure batch normalization statistics"):
        build_layer(bn_text() + " param { lr_mult: 0 } param { lr_mult: 1 }", [np.ones((2, 3))])


def test_batchnorm_in_a_net_has_zero_learning_rates():
    text = """
    layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 } } }
    layer { name: "bn" type: "BatchNorm" bottom: "x" top: "x" }
    """
    net = Net(parse_text(text, caffe_pb2.NetParameter()), "TRAIN")
    assert net.params_lr == [0.0, 0.0, 0.0]
    assert [b.shape for b in net.params["bn"]] == [(3,), (3,), (1,)]


def test_batchnorm_in_place_matches_out_of_place():
    x = RNG.standard_normal((4, 2, 3))
    dy = RNG.standard_normal(x.shape)
    layer, bottom, top = build_layer(bn_text(), [x], phase=caffe_pb2.TRAIN)
    forward(layer, bottom, top)
    top[0].diff[...] = dy
    layer.run_backward(top, [True], bottom)
    expected_y, expected_dx = top[0].data.copy(), bottom[0].diff.copy()

    same, _, _ = build_layer(bn_text(), [x], phase=caffe_pb2.TRAIN)
    blob = Blob(x.shape, dtype=np.float64)
    blob.data[...] = x
    same.set_up([blob], [blob])
    same.run_forward([blob], [blob])
    np.testing.assert_allclose(blob.data, expected_y)
    blob.diff[...] = dy
    same.run_backward([blob], [True], [blob])
    np.testing.assert_allclose(blob.diff, expected_dx)


@pytest.mark.parametrize("shape", [(4, 3, 2, 2), (6, 2), (3, 2, 5)])
@pytest.mark.parametrize("extra", ["", "eps: 0.01"])
def test_batchnorm_train_gradient(shape, extra):
    x = RNG.standard_normal(shape)
    check_gradient(bn_text(extra), [x], phase=caffe_pb2.TRAIN, params_checked=[])


def test_batchnorm_global_gradient():
    check_gradient(bn_text("use_global_stats: true eps: 0.5"), [RNG.standard_normal((3, 2, 2))], params_checked=[])


def test_batchnorm_channel_change_is_an_error():
    layer, bottom, top = build_layer(bn_text(), [np.ones((2, 3))])
    bottom[0].reshape(2, 4)
    with pytest.raises(LayerError, match="channels"):
        layer.run_forward(bottom, top)


# -- MVN -------------------------------------------------------------------------------

def mvn_reference(x, normalize_variance, across_channels, eps=1e-9):
    rows = x.reshape(x.shape[0], -1) if across_channels else x.reshape(x.shape[0] * x.shape[1], -1)
    centred = rows - rows.mean(axis=1, keepdims=True)
    if normalize_variance:
        centred = centred / (np.sqrt((centred ** 2).mean(axis=1, keepdims=True)) + eps)
    return centred.reshape(x.shape)


@pytest.mark.parametrize("normalize_variance", [True, False])
@pytest.mark.parametrize("across_channels", [True, False])
def test_mvn_forward(normalize_variance, across_channels):
    x = RNG.standard_normal((2, 3, 2, 3)) * 3 + 2
    text = (f'type: "MVN" mvn_param {{ normalize_variance: {str(normalize_variance).lower()} '
            f'across_channels: {str(across_channels).lower()} }}')
    layer, bottom, top = build_layer(text, [x])
    (y,) = forward(layer, bottom, top)
    np.testing.assert_allclose(y, mvn_reference(x, normalize_variance, across_channels), rtol=1e-7, atol=1e-12)


def test_mvn_eps_is_added_to_the_standard_deviation():
    x = np.array([[[[1.0, 3.0]]]])  # mean 2, std 1
    layer, bottom, top = build_layer('type: "MVN" mvn_param { eps: 1 }', [x])
    (y,) = forward(layer, bottom, top)
    np.testing.assert_allclose(y.ravel(), [-0.5, 0.5])


def test_mvn_top_is_four_axis_like_caffe():
    layer, bottom, top = build_layer('type: "MVN"', [RNG.standard_normal((2, 3))])
    assert top[0].shape == (2, 3, 1, 1)
    with pytest.raises(LayerError, match="at most 4 axes"):
        build_layer('type: "MVN"', [np.ones((1, 2, 2, 2, 2))])


@pytest.mark.parametrize("normalize_variance", [True, False])
@pytest.mark.parametrize("across_channels", [True, False])
def test_mvn_gradient(normalize_variance, across_channels):
    text = (f'type: "MVN" mvn_param {{ normalize_variance: {str(normalize_variance).lower()} '
            f'across_channels: {str(across_channels).lower()} }}')
    check_gradient(text, [RNG.standard_normal((2, 2, 3, 2))])


# -- one code path: CuPy gives NumPy's numbers ---------------------------------------------

@pytest.mark.gpu
@pytest.mark.parametrize("text, phase", [
    (bn_text("eps: 0.01"), caffe_pb2.TRAIN), (bn_text(), caffe_pb2.TEST),
    ('type: "MVN"', caffe_pb2.TEST), ('type: "MVN" mvn_param { across_channels: true normalize_variance: false }',
                                      caffe_pb2.TEST)])
@pytest.mark.parametrize("shape", [(3, 2, 2, 2), (9, 5, 13, 11), (4, 3, 20, 20), (40, 3)])
def test_gpu_matches_cpu(text, phase, shape):
    import cupy

    import engine

    if len(shape) < 4 and "MVN" in text:
        pytest.skip("MVN takes 4-axis blobs")
    x, dy = RNG.standard_normal(shape), RNG.standard_normal(shape)
    results = []
    for xp in (np, cupy):
        if xp is cupy:
            engine.set_mode_gpu()
        layer, bottom, top = build_layer(text, [x], phase=phase, xp=xp)
        for blob, value in zip(layer.blobs, (0.5, 2.0, 1.5)):
            blob.data[...] = value
        forward(layer, bottom, top)
        top[0].diff[...] = xp.asarray(dy)
        layer.run_backward(top, [True], bottom)
        results.append([engine.backend.to_host(a) for a in (top[0].data, bottom[0].diff)]
                       + [engine.backend.to_host(b.data) for b in layer.blobs])
    for cpu, gpu in zip(*results):
        np.testing.assert_allclose(gpu, cpu, rtol=1e-10, atol=1e-12)
