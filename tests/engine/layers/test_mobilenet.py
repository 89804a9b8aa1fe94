"""The MobileNet forks' layers (mobilenet.py): both depthwise convolutions and ReLU6,
against OpenCV's dnn module, the forks' own loops, gradients and bad input."""

import numpy as np
import pytest
from layer_check import build_layer, check_gradient, forward
from opencv_reference import opencv_forward

from engine import caffe_pb2
from engine.errors import LayerError

RNG = np.random.default_rng(11)
X = RNG.standard_normal((2, 3, 7, 6))
HEADER = 'input: "data" input_shape { dim: 2 dim: 3 dim: 7 dim: 6 }\n'


def depthwise_loop(x, w, b, stride, pad, dilation):
    """ConvolutionDepthwise's CPU forward (caffe-mobilenet's conv_dw_layer.cpp), loop for loop."""
    num, channels, height, width = x.shape
    kh, kw = w.shape[2:]
    out_h = (height + 2 * pad - (dilation * (kh - 1) + 1)) // stride + 1
    out_w = (width + 2 * pad - (dilation * (kw - 1) + 1)) // stride + 1
    top = np.zeros((num, channels, out_h, out_w))
    for n in range(num):
        for c in range(channels):
            for h in range(out_h):
                for ww in range(out_w):
                    value = 0.0
                    for i in range(kh):
                        for j in range(kw):
                            h_in, w_in = -pad + h * stride + i * dilation, -pad + ww * stride + j * dilation
                            if 0 <= h_in < height and 0 <= w_in < width:
                                value += w[c, 0, i, j] * x[n, c, h_in, w_in]
                    top[n, c, h, ww] = value + b[c]
    return top


DW = 'convolution_param { num_output: 3 group: 3 kernel_size: 3 stride: 2 pad: 1 }'
# ConvolutionDepthwise ignores num_output and group: ShuffleNet's prototxts give neither.
CDW_BARE = 'convolution_param { kernel_size: 3 stride: 2 pad: 1 bias_term: true }'


@pytest.mark.parametrize("layer_type, conv", [("ConvolutionDepthwise", CDW_BARE), ("ConvolutionDepthwise", DW),
                                              ("DepthwiseConvolution", DW)])
def test_depthwise_forward_matches_opencv_and_the_fork_loop(layer_type, conv):
    layer, bottom, top = build_layer(f'type: "{layer_type}" {conv}', [X])
    assert layer.blobs[0].shape == (3, 1, 3, 3) and layer.blobs[1].shape == (3,)
    layer.blobs[0].data[...] = RNG.standard_normal((3, 1, 3, 3))
    layer.blobs[1].data[...] = RNG.standard_normal(3)
    ours = forward(layer, bottom, top)[0]
    w, b = layer.blobs[0].data, layer.blobs[1].data
    np.testing.assert_allclose(ours, depthwise_loop(X, w, b, 2, 1, 1), rtol=1e-12, atol=1e-12)
    # OpenCV has ConvolutionDepthwise; DepthwiseConvolution is its grouped Convolution.
    cv_type = "ConvolutionDepthwise" if layer_type == "ConvolutionDepthwise" else "Convolution"
    net = HEADER + f'layer {{ name: "dw" type: "{cv_type}" bottom: "data" top: "dw" {DW} }}'
    (reference,) = opencv_forward(net, {"data": X}, ["dw"], {"dw": [w, b]})
    np.testing.assert_allclose(ours, reference, rtol=1e-4, atol=1e-5)


def test_convolution_depthwise_dilation_as_the_fork_reads_it():
    text = 'type: "ConvolutionDepthwise" convolution_param { kernel_size: 2 dilation: 2 pad: 1 }'
    layer, bottom, top = build_layer(text, [X])
    layer.blobs[1].data[...] = RNG.standard_normal(3)
    ours = forward(layer, bottom, top)[0]
    np.testing.assert_allclose(ours, depthwise_loop(X, layer.blobs[0].data, layer.blobs[1].data, 1, 1, 2),
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("layer_type, conv", [("ConvolutionDepthwise", CDW_BARE), ("DepthwiseConvolution", DW)])
def test_depthwise_gradients(layer_type, conv):
    conv = conv.replace("}", 'weight_filler { type: "gaussian" } bias_filler { type: "gaussian" } }')
    check_gradient(f'type: "{layer_type}" {conv}', [X])


@pytest.mark.parametrize("conv, message", [
    ('num_output: 6 group: 3 kernel_size: 3', "group and num_output equal to the bottom's channels"),
    ('num_output: 3 kernel_size: 3', "got group 1, num_output 3"),
])
def test_depthwise_convolution_refuses_what_its_gpu_kernel_cannot_do(conv, message):
    with pytest.raises(LayerError, match=message):
        build_layer(f'type: "DepthwiseConvolution" convolution_param {{ {conv} }}', [X])


def test_convolution_depthwise_needs_a_kernel():
    with pytest.raises(LayerError, match="kernel_size"):
        build_layer('type: "ConvolutionDepthwise" convolution_param { stride: 2 }', [X])


WIDE = RNG.uniform(-3, 9, (2, 3, 5, 4))


def test_relu6_matches_opencv():
    ours = forward(*build_layer('type: "ReLU6"', [WIDE]))[0]
    np.testing.assert_allclose(ours, np.clip(WIDE, 0, 6), rtol=0, atol=0)
    net = 'input: "data" input_shape { dim: 2 dim: 3 dim: 5 dim: 4 }\n' \
          'layer { name: "r" type: "ReLU6" bottom: "data" top: "r" }'
    (reference,) = opencv_forward(net, {"data": WIDE}, ["r"])
    np.testing.assert_allclose(ours, reference, rtol=1e-6, atol=1e-6)


def test_relu6_negative_slope_as_the_fork_computes_it():
    ours = forward(*build_layer('type: "ReLU6" relu6_param { negative_slope: 0.1 }', [WIDE]))[0]
    expected = np.minimum(np.maximum(WIDE, 0) + 0.1 * np.minimum(WIDE, 0), 6)
    np.testing.assert_allclose(ours, expected, rtol=1e-7)


@pytest.mark.parametrize("slope", [0, 0.2, -0.5])
def test_relu6_gradient_zero_past_six(slope):
    text = f'type: "ReLU6" relu6_param {{ negative_slope: {slope} }}'
    away = np.where(np.abs(WIDE) < 0.05, 0.3, np.where(np.abs(WIDE - 6) < 0.05, 6.3, WIDE))
    check_gradient(text, [away])
    layer, bottom, top = build_layer(text, [away])
    forward(layer, bottom, top)
    top[0].diff[...] = 1
    layer.run_backward(top, [True], bottom)
    expected = np.where(away >= 6, 0, np.where(away > 0, 1, float(np.float32(slope))))
    np.testing.assert_array_equal(bottom[0].diff, expected)


@pytest.mark.parametrize("slope", [0, -0.5])
def test_relu6_in_place_gives_the_same_gradient(slope):
    text = f'type: "ReLU6" relu6_param {{ negative_slope: {slope} }}'
    layer, bottom, _ = build_layer(text, [WIDE])
    top = bottom
    layer.run_forward(bottom, top)
    top[0].diff[...] = 1
    layer.run_backward(top, [True], bottom)
    np.testing.assert_array_equal(bottom[0].diff, np.where(WIDE >= 6, 0, np.where(WIDE > 0, 1, slope)))


def test_relu6_on_both_devices(mode):
    from engine.backend import array_module, to_host

    layer, bottom, top = build_layer('type: "ReLU6"', [WIDE], xp=array_module())
    ours = to_host(forward(layer, bottom, top)[0])
    np.testing.assert_array_equal(ours, np.clip(WIDE, 0, 6))


def test_depthwise_in_a_net_with_phase():
    layer, bottom, top = build_layer(f'type: "ConvolutionDepthwise" {CDW_BARE}', [X], phase=caffe_pb2.TRAIN)
    assert top[0].shape == (2, 3, 4, 3)
