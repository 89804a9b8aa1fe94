"""coord_map: hand-computed maps through conv/pool/deconv, and a crop() net that runs."""

import numpy as np
import pytest

import caffe
from caffe import layers as L
from caffe import params as P
from caffe.coord_map import (AxisMismatchException, UndefinedMapException, compose, coord_map,
                             coord_map_from_to, crop, inverse)


def fcn_like(pad=0, dpad=0):
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 1, 12, 12]))
    n.conv = L.Convolution(n.data, num_output=2, kernel_size=3, pad=pad, weight_filler=dict(type="xavier"))
    n.pool = L.Pooling(n.conv, pool=P.Pooling.MAX, kernel_size=2, stride=2)
    n.up = L.Deconvolution(n.pool, convolution_param=dict(num_output=2, kernel_size=4, stride=2, pad=dpad))
    return n


def test_single_layer_maps():
    n = fcn_like()
    # conv k3 s1 p0: x -> x - 1; pool k2 s2: x -> (x - 0.5) / 2; deconv k4 s2 p0: x -> 2x + 1.5
    assert coord_map(n.conv.fn) == (1, 1, -1)
    axis, a, b = coord_map(n.pool.fn)
    assert (axis, float(a[0]), float(b[0])) == (1, 0.5, -0.25)
    axis, a, b = coord_map(n.up.fn)
    assert (axis, float(a[0]), float(b[0])) == (1, 2, 1.5)
    assert coord_map(L.ReLU(n.up).fn) == (None, 1, 0)
    with pytest.raises(UndefinedMapException):
        coord_map(L.InnerProduct(n.up, num_output=1).fn)


def test_compose_and_inverse():
    assert compose((None, 2, 1), (3, 0.5, 4)) == (3, 1.0, 9)
    assert inverse((1, 4.0, 2.0)) == (1, 0.25, -0.5)
    with pytest.raises(AxisMismatchException):
        compose((1, 1, 0), (2, 1, 0))


@pytest.mark.parametrize("pad, dpad, shift", [(0, 0, 0), (1, 0, -1), (0, 1, 1), (2, 1, -1)])
def test_map_from_output_back_to_data(pad, dpad, shift):
    n = fcn_like(pad, dpad)
    axis, a, b = coord_map_from_to(n.up, n.data)
    assert axis == 1 and np.all(a == 1) and np.all(b == shift)


def test_unconnected_tops_are_a_runtime_error():
    n = fcn_like()
    n.other = L.Input(shape=dict(dim=[1, 1, 12, 12]))
    with pytest.raises(RuntimeError, match="connected"):
        coord_map_from_to(n.up, n.other)


def test_crop_builds_a_crop_layer_that_runs(tmp_path):
    n = fcn_like(dpad=0)
    n.score = L.Convolution(n.up, num_output=2, kernel_size=1, pad=2, weight_filler=dict(type="xavier"))
    n.crop = crop(n.score, n.data)  # score is offset by 2 pixels from data
    layer = n.to_proto().layer[-1]
    assert layer.type == "Crop" and list(layer.bottom) == ["score", "data"]
    assert layer.crop_param.axis == 2 and list(layer.crop_param.offset) == [2]
    path = tmp_path / "fcn.prototxt"
    path.write_text(str(n.to_proto()))
    net = caffe.Net(str(path), caffe.TEST)
    net.blobs["data"].data[...] = np.random.default_rng(0).random((1, 1, 12, 12))
    net.forward()
    assert net.blobs["score"].data.shape == (1, 2, 16, 16)
    assert net.blobs["crop"].data.shape == (1, 2, 12, 12)
    np.testing.assert_array_equal(net.blobs["crop"].data, net.blobs["score"].data[:, :, 2:14, 2:14])


def test_crop_refuses_scale_mismatch_and_negative_offsets():
    n = fcn_like()
    n.small = L.Pooling(n.data, pool=P.Pooling.MAX, kernel_size=3, stride=3)
    with pytest.raises(AssertionError, match="scale mismatch"):
        crop(n.up, n.small)
    n = fcn_like(dpad=3)
    with pytest.raises(AssertionError, match="negative offset"):
        crop(n.up, n.data)
