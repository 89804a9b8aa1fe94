"""Caffe's output-size arithmetic (engine.geometry): the edge cases that differ between frameworks."""

import pytest

from engine import caffe_pb2
from engine.formats import parse_text
from engine.geometry import (GeometryError, conv_output_size, conv_spatial_params, deconv_output_size,
                             kernel_extent, pool_output_size, pool_spatial_params, pool_window_sizes)


@pytest.mark.parametrize("size,kernel,pad,stride,dilation,expected", [
    (7, 3, 1, 1, 1, 7),
    (7, 3, 0, 2, 1, 3),
    (8, 3, 0, 2, 1, 3),     # floor: the last partial window is dropped
    (9, 3, 2, 1, 2, 9),     # dilation 2: extent 5
    (227, 11, 0, 4, 1, 55),
    (5, 5, 0, 1, 1, 1),
    (4, 3, 0, 1, 3, None),   # extent 7 > 4
])
def test_conv_output_size(size, kernel, pad, stride, dilation, expected):
    if expected is None:
        with pytest.raises(GeometryError, match="kernel extent 7"):
            conv_output_size(size, kernel, pad, stride, dilation)
    else:
        assert conv_output_size(size, kernel, pad, stride, dilation) == expected


def test_kernel_extent():
    assert kernel_extent(3, 1) == 3
    assert kernel_extent(3, 2) == 5
    assert kernel_extent(1, 7) == 1


@pytest.mark.parametrize("size,kernel,pad,stride,dilation,expected", [
    (5, 4, 1, 2, 1, 10),
    (3, 3, 0, 1, 1, 5),
    (4, 3, 1, 2, 2, 9),
])
def test_deconv_output_size_inverts_convolution(size, kernel, pad, stride, dilation, expected):
    out = deconv_output_size(size, kernel, pad, stride, dilation)
    assert out == expected
    assert conv_output_size(out, kernel, pad, stride, dilation) == size


def test_deconv_output_size_rejects_non_positive():
    with pytest.raises(GeometryError, match="non-positive"):
        deconv_output_size(1, 1, 1, 1)


@pytest.mark.parametrize("size,kernel,pad,stride,ceil_mode,expected", [
    (5, 2, 1, 2, True, 3),     # Caffe clips the window that would start in the padding (not 4)
    (8, 3, 0, 2, True, 4),     # ceil: a last window hanging over the edge is kept
    (8, 3, 0, 2, False, 3),    # round_mode FLOOR
    (7, 3, 1, 2, True, 4),
    (7, 2, 1, 2, True, 4),     # ceil gives 5; the fifth window would start at 8 = 7 + 1: clipped
    (7, 7, 0, 1, True, 1),     # global pooling
    (2, 3, 0, 2, True, 1),     # kernel larger than the input: one clipped window
    (13, 3, 0, 2, True, 6),
    (55, 3, 0, 2, True, 27),
])
def test_pool_output_size(size, kernel, pad, stride, ceil_mode, expected):
    assert pool_output_size(size, kernel, pad, stride, ceil_mode) == expected


def test_pool_clip_applies_to_both_axes_when_either_has_padding():
    # kernel 1 < stride 2: without clipping ceil((4-1)/2)+1 = 3 windows, the last starting at 4.
    assert pool_output_size(4, 1, 0, 2, clip=False) == 3
    assert pool_output_size(4, 1, 0, 2, clip=True) == 2


def test_pool_window_sizes_count_padding_but_not_overhang():
    # height 7, kernel 3, stride 2, pad 1 -> windows [-1,2) [1,4) [3,6) [5,8): all clip to <= 8
    assert pool_window_sizes(7, 3, 1, 2, 4) == [3, 3, 3, 3]
    # height 8, kernel 3, stride 2, no pad, ceil -> last window [6,9) clips to [6,8)
    assert pool_window_sizes(8, 3, 0, 2, 4) == [3, 3, 3, 2]
    # the first window starts at -pad and keeps its padded cells
    assert pool_window_sizes(5, 2, 1, 2, 3) == [2, 2, 2]


def conv_param(text):
    return parse_text(text, caffe_pb2.ConvolutionParameter())


def pool_param(text):
    return parse_text(text, caffe_pb2.PoolingParameter())


def test_conv_params_repeated_and_hw_forms():
    assert conv_spatial_params(conv_param("kernel_size: 3"), 2) == ((3, 3), (1, 1), (0, 0), (1, 1))
    got = conv_spatial_params(conv_param("kernel_size: 3 kernel_size: 5 stride: 2 pad: 1 pad: 0 dilation: 2"), 2)
    assert got == ((3, 5), (2, 2), (1, 0), (2, 2))
    got = conv_spatial_params(conv_param("kernel_h: 3 kernel_w: 2 stride_h: 2 stride_w: 1 pad_h: 1"), 2)
    assert got == ((3, 2), (2, 1), (1, 0), (1, 1))
    assert conv_spatial_params(conv_param("kernel_size: 2 kernel_size: 3 kernel_size: 4"), 3)[0] == (2, 3, 4)


def test_filter_stride_is_the_dilation():
    assert conv_spatial_params(conv_param("kernel_size: 3 filter_stride: 4"), 2)[3] == (4, 4)
    assert conv_spatial_params(conv_param("kernel_size: 3 filter_stride: 2"), 3)[3] == (2, 2, 2)
    assert conv_spatial_params(conv_param("kernel_size: 3 filter_stride_h: 2 filter_stride_w: 5"), 2)[3] == (2, 5)


@pytest.mark.parametrize("text,axes,message", [
    ("", 2, "kernel_size must be specified once, or once per spatial dimension"),
    ("kernel_size: 3 kernel_size: 3", 3, r"kernel_size specified 2 times; 3 spatial dims"),
    ("kernel_h: 3 kernel_w: 3", 3, "kernel_h & kernel_w can only be used for 2D convolution"),
    ("kernel_size: 3 kernel_h: 3 kernel_w: 3", 2, "Either kernel_size or kernel_h/w should be specified; not both"),
    ("kernel_size: 0", 2, "Filter dimensions must be nonzero"),
    ("kernel_size: 3 stride: 0", 2, "Stride dimensions must be nonzero"),
    ("kernel_size: 3 pad: 1 pad_h: 1", 2, "Either pad or pad_h/w"),
    ("kernel_size: 3 dilation: 1 dilation: 1 dilation: 1", 2, "dilation must be specified once"),
    ("kernel_size: 3 filter_stride_h: 2 filter_stride_w: 2", 3, "filter_stride_h & filter_stride_w can only"),
    ("kernel_size: 3 filter_stride_w: 2", 2, "filter_stride OR filter_stride_h and filter_stride_w"),
    ("kernel_size: 3 dilation: 2 filter_stride: 2", 2, "Either dilation or filter_stride"),
])
def test_conv_param_errors(text, axes, message):
    with pytest.raises(GeometryError, match=message):
        conv_spatial_params(conv_param(text), axes)


def test_pool_params():
    assert pool_spatial_params(pool_param("kernel_size: 3 stride: 2")) == ((3, 3), (2, 2), (0, 0))
    got = pool_spatial_params(pool_param("kernel_h: 3 kernel_w: 2 stride_h: 2 stride_w: 1 pad_h: 1 pad_w: 0"))
    assert got == ((3, 2), (2, 1), (1, 0))
    assert pool_spatial_params(pool_param("global_pooling: true")) == (None, (1, 1), (0, 0))


@pytest.mark.parametrize("text,message", [
    ("", "Filter size is required"),
    ("kernel_size: 2 kernel_h: 2 kernel_w: 2", "kernel_size OR kernel_h and kernel_w"),
    ("kernel_h: 2", "Filter size is required"),
    ("kernel_size: 0", "cannot be zero"),
    ("kernel_size: 2 pad: 1 pad_h: 1 pad_w: 1", "pad is pad OR pad_h and pad_w"),
    ("kernel_size: 2 pad_h: 1", "pad is pad OR pad_h and pad_w"),
    ("kernel_size: 2 stride_w: 1", "Stride is stride OR stride_h and stride_w"),
    ("global_pooling: true kernel_size: 2", "Filter size cannot specified"),
    ("global_pooling: true stride: 2", "only pad = 0 and stride = 1"),
])
def test_pool_param_errors(text, message):
    with pytest.raises(GeometryError, match=message):
        pool_spatial_params(pool_param(text))
