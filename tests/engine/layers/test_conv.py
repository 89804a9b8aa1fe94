"""Convolution and Deconvolution (conv.py): loop-by-loop references, gradients, shapes, errors, GPU."""

import itertools

import numpy as np
import pytest
from layer_check import build_layer, check_gradient, forward

from engine import backend
from engine.blob import Blob
from engine.errors import LayerError
from engine.layers import conv

RNG = np.random.default_rng(5)
FILLERS = 'weight_filler { type: "gaussian" std: 0.5 } bias_filler { type: "uniform" min: -1 max: 1 }'


def conv_text(params, kind="Convolution"):
    return f'type: "{kind}" convolution_param {{ {params} {FILLERS} }}'


def reference_conv(x, w, b, stride, pad, dilation, group):
    """Direct convolution, one output cell at a time (x: (N, C, *spatial), w: (O, C/g, *kernel))."""
    num = x.shape[0]
    outputs, per_group = w.shape[:2]
    kernel = w.shape[2:]
    spatial = x.shape[2:]
    out = [(s + 2 * p - (d * (k - 1) + 1)) // st + 1
           for s, k, p, st, d in zip(spatial, kernel, pad, stride, dilation)]
    y = np.zeros((num, outputs) + tuple(out))
    o_per_group = outputs // group
    for o, cell in itertools.product(range(outputs), itertools.product(*(range(n) for n in out))):
        g = o // o_per_group
        total = np.zeros(num)
        for c, offset in itertools.product(range(per_group), itertools.product(*(range(k) for k in kernel))):
            pos = [q * st - p + off * d for q, st, p, off, d in zip(cell, stride, pad, offset, dilation)]
            if all(0 <= v < s for v, s in zip(pos, spatial)):
                total += w[(o, c) + offset] * x[(slice(None), g * per_group + c) + tuple(pos)]
        y[(slice(None), o) + cell] = total + (b[o] if b is not None else 0)
    return y


def reference_deconv(x, w, b, stride, pad, dilation, group):
    """Direct transposed convolution: every input cell scatters its kernel (w: (C, O/g, *kernel))."""
    num, channels = x.shape[:2]
    per_group_out = w.shape[1]
    kernel = w.shape[2:]
    spatial = x.shape[2:]
    out = [st * (s - 1) + d * (k - 1) + 1 - 2 * p for s, k, p, st, d in zip(spatial, kernel, pad, stride, dilation)]
    y = np.zeros((num, per_group_out * group) + tuple(out))
    c_per_group = channels // group
    for c, cell in itertools.product(range(channels), itertools.product(*(range(n) for n in spatial))):
        g = c // c_per_group
        for o, offset in itertools.product(range(per_group_out), itertools.product(*(range(k) for k in kernel))):
            pos = [q * st - p + off * d for q, st, p, off, d in zip(cell, stride, pad, offset, dilation)]
            if all(0 <= v < s for v, s in zip(pos, out)):
                contribution = w[(c, o) + offset] * x[(slice(None), c) + cell]
                y[(slice(None), g * per_group_out + o) + tuple(pos)] += contribution
    if b is not None:
        y += b.reshape((1, -1) + (1,) * len(spatial))
    return y


# (params, bottom shape)
CONV_CASES = [
    ("num_output: 4 kernel_size: 3 pad: 1", (2, 3, 5, 5)),
    ("num_output: 6 group: 2 kernel_h: 3 kernel_w: 2 stride_h: 2 stride_w: 1 pad_h: 1", (2, 4, 7, 6)),
    ("num_output: 3 kernel_size: 3 pad: 2 dilation: 2", (2, 2, 6, 7)),
    ("num_output: 4 group: 4 kernel_size: 3 pad: 1 stride: 2", (2, 4, 6, 6)),           # depthwise
    ("num_output: 8 group: 4 kernel_size: 3 pad: 1", (2, 4, 5, 5)),                     # depthwise, x2
    ("num_output: 3 kernel_size: 1 bias_term: false", (3, 5, 4, 3)),
    ("num_output: 2 kernel_size: 2 kernel_size: 3 kernel_size: 2 stride: 2 stride: 1 stride: 1 pad: 1",
     (2, 2, 4, 4, 3)),                                                                  # 3-D
    ("num_output: 3 kernel_size: 3 stride: 2 pad: 1", (2, 2, 9)),                       # 1-D
    ("num_output: 2 kernel_size: 3 force_nd_im2col: true dilation: 1 dilation: 2", (1, 3, 5, 6)),
]


def run_layer(text, x, **kw):
    layer, bottom, top = build_layer(text, [x], **kw)
    return layer, forward(layer, bottom, top)[0]


@pytest.mark.parametrize("params,shape", CONV_CASES, ids=[c[0] for c in CONV_CASES])
def test_convolution_forward_matches_direct_loops(params, shape):
    x = RNG.standard_normal(shape)
    layer, y = run_layer(conv_text(params), x)
    b = layer.blobs[1].data if layer.bias_term else None
    expected = reference_conv(x, layer.blobs[0].data, b, layer.stride, layer.pad, layer.dilation, layer.group)
    assert y.shape == expected.shape
    np.testing.assert_allclose(y, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("params,shape", CONV_CASES, ids=[c[0] for c in CONV_CASES])
def test_convolution_gradient(params, shape):
    check_gradient(conv_text(params), [RNG.standard_normal(shape)], max_checks=60)


DECONV_CASES = [
    ("num_output: 6 group: 2 kernel_size: 4 stride: 2 pad: 1", (2, 4, 3, 3)),
    ("num_output: 3 kernel_size: 3", (2, 2, 3, 4)),
    ("num_output: 2 kernel_h: 2 kernel_w: 3 stride_h: 2 stride_w: 1 pad_w: 1 dilation: 2", (1, 3, 3, 3)),
    ("num_output: 4 group: 4 kernel_size: 3 stride: 2 bias_term: false", (2, 4, 3, 3)),
    ("num_output: 2 kernel_size: 2 stride: 2", (1, 2, 2, 3, 2)),                         # 3-D
]


@pytest.mark.parametrize("params,shape", DECONV_CASES, ids=[c[0] for c in DECONV_CASES])
def test_deconvolution_forward_matches_scatter(params, shape):
    x = RNG.standard_normal(shape)
    layer, y = run_layer(conv_text(params, "Deconvolution"), x)
    b = layer.blobs[1].data if layer.bias_term else None
    expected = reference_deconv(x, layer.blobs[0].data, b, layer.stride, layer.pad, layer.dilation, layer.group)
    assert y.shape == expected.shape
    np.testing.assert_allclose(y, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("params,shape", DECONV_CASES, ids=[c[0] for c in DECONV_CASES])
def test_deconvolution_gradient(params, shape):
    check_gradient(conv_text(params, "Deconvolution"), [RNG.standard_normal(shape)], max_checks=60)


def test_blob_shapes_follow_caffe():
    x = np.zeros((1, 6, 5, 5))
    layer, _, top = build_layer(conv_text("num_output: 4 group: 2 kernel_h: 3 kernel_w: 1"), [x])
    assert [b.shape for b in layer.blobs] == [(4, 3, 3, 1), (4,)]
    assert top[0].shape == (1, 4, 3, 5)
    layer, _, top = build_layer(conv_text("num_output: 4 group: 2 kernel_size: 2 stride: 2", "Deconvolution"), [x])
    assert [b.shape for b in layer.blobs] == [(6, 2, 2, 2), (4,)]
    assert top[0].shape == (1, 4, 10, 10)


def test_default_fillers_are_constant_zero_and_fillers_apply():
    x = np.ones((1, 2, 3, 3))
    layer, _, _ = build_layer('type: "Convolution" convolution_param { num_output: 2 kernel_size: 1 }', [x])
    assert not layer.blobs[0].data.any() and not layer.blobs[1].data.any()
    text = ('type: "Convolution" convolution_param { num_output: 2 kernel_size: 1 '
            'weight_filler { type: "constant" value: 0.5 } bias_filler { type: "constant" value: 2 } }')
    layer, y = run_layer(text, x)
    np.testing.assert_allclose(y, np.full((1, 2, 3, 3), 3.0))


def test_axis_makes_leading_axes_batch_like():
    x = RNG.standard_normal((2, 3, 4, 5))
    layer, y = run_layer(conv_text("num_output: 2 kernel_size: 3 pad: 1 axis: 2"), x)
    expected = reference_conv(x.reshape(6, 4, 5), layer.blobs[0].data, layer.blobs[1].data, (1,), (1,), (1,), 1)
    np.testing.assert_allclose(y, expected.reshape(2, 3, 2, 5), rtol=1e-10)


def test_several_bottoms_share_the_weights():
    text = conv_text("num_output: 3 kernel_size: 2 stride: 1")
    x1, x2 = RNG.standard_normal((2, 2, 4, 4)), RNG.standard_normal((2, 2, 4, 4))
    layer, bottom, top = build_layer(text, [x1, x2], num_tops=2)
    y1, y2 = forward(layer, bottom, top)
    w, b = layer.blobs[0].data, layer.blobs[1].data
    np.testing.assert_allclose(y1, reference_conv(x1, w, b, (1, 1), (0, 0), (1, 1), 1), rtol=1e-10)
    np.testing.assert_allclose(y2, reference_conv(x2, w, b, (1, 1), (0, 0), (1, 1), 1), rtol=1e-10)
    check_gradient(text, [x1, x2], num_tops=2, max_checks=25)
    check_gradient(conv_text("num_output: 2 kernel_size: 2", "Deconvolution"), [x1, x2], num_tops=2, max_checks=20)


@pytest.mark.parametrize("kind", ["Convolution", "Deconvolution"])
def test_chunked_batches_give_the_same_numbers(monkeypatch, kind):
    text = conv_text("num_output: 4 group: 2 kernel_size: 3 pad: 1 stride: 2", kind)
    x = RNG.standard_normal((5, 4, 5, 5))
    layer, bottom, top = build_layer(text, [x])
    whole = forward(layer, bottom, top)[0]
    monkeypatch.setattr(conv, "COLUMN_BUFFER_LIMIT", 50)  # one image per chunk
    assert len(layer._chunks()) == 5
    np.testing.assert_allclose(forward(layer, bottom, top)[0], whole, rtol=1e-12)
    check_gradient(text, [x], max_checks=20)


@pytest.mark.parametrize("short_inner", [0, 1 << 30])
@pytest.mark.parametrize("kind", ["Convolution", "Deconvolution"])
def test_weight_diff_in_either_layout(monkeypatch, kind, short_inner):
    """The weight diff computed in the weights' layout (short inner dimension) or as its transpose (long)."""
    monkeypatch.setattr(conv, "SHORT_INNER", short_inner)
    check_gradient(conv_text("num_output: 4 group: 2 kernel_size: 3 pad: 1 stride: 2", kind),
                   [RNG.standard_normal((3, 4, 5, 5))], max_checks=30)


def test_backward_accumulates_param_diffs_and_respects_propagate_flags():
    text = conv_text("num_output: 2 kernel_size: 2")
    layer, bottom, top = build_layer(text, [RNG.standard_normal((2, 2, 3, 3))])
    forward(layer, bottom, top)
    top[0].diff[...] = RNG.standard_normal(top[0].shape)
    layer.backward(top, [True], bottom)
    once = [b.diff.copy() for b in layer.blobs]
    layer.backward(top, [True], bottom)
    for blob, first in zip(layer.blobs, once):
        np.testing.assert_allclose(blob.diff, 2 * first)
    bottom[0].diff[...] = 7
    layer.param_propagate_down = [False, False]
    layer.backward(top, [False], bottom)
    assert (bottom[0].diff == 7).all()
    for blob, first in zip(layer.blobs, once):
        np.testing.assert_allclose(blob.diff, 2 * first)


def test_float32_blobs_stay_float32():
    x = RNG.standard_normal((2, 3, 6, 6))
    layer64, y64 = run_layer(conv_text("num_output: 4 kernel_size: 3 group: 1"), x)
    layer, bottom, top = build_layer(conv_text("num_output: 4 kernel_size: 3"), [x], dtype=np.float32)
    layer.blobs[0].data[...] = layer64.blobs[0].data
    layer.blobs[1].data[...] = layer64.blobs[1].data
    y32 = forward(layer, bottom, top)[0]
    assert y32.dtype == np.float32
    np.testing.assert_allclose(y32, y64, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("params,shape,message", [
    ("num_output: 4 group: 2 kernel_size: 1", (1, 3, 2, 2), r"channels \(3\) must be a multiple of group \(2\)"),
    ("num_output: 3 group: 2 kernel_size: 1", (1, 4, 2, 2), "Number of output should be multiples of group"),
    ("kernel_size: 1", (1, 4, 2, 2), "num_output must be positive"),
    ("num_output: 1 kernel_size: 5", (1, 1, 3, 3), "kernel extent 5 is larger than the padded input"),
    ("num_output: 1 kernel_h: 1 kernel_w: 1", (1, 1, 3, 3, 3), "kernel_h & kernel_w can only be used for 2D"),
    ("num_output: 1 kernel_size: 1 axis: 3", (1, 1, 3, 3), "at least one spatial axis"),
])
def test_bad_parameters_raise_layer_errors(params, shape, message):
    with pytest.raises(LayerError, match=message):
        build_layer(conv_text(params), [np.zeros(shape)])


def test_reshape_checks_channels_and_axes():
    layer, bottom, top = build_layer(conv_text("num_output: 2 kernel_size: 1"), [np.zeros((1, 3, 2, 2))])
    with pytest.raises(LayerError, match="Input size incompatible with convolution kernel"):
        layer.reshape([Blob((1, 4, 2, 2), np.float64)], top)
    with pytest.raises(LayerError, match="bottom num_axes may not change"):
        layer.reshape([Blob((1, 3, 2, 2, 2), np.float64)], top)


def test_existing_blobs_of_the_wrong_shape_are_rejected():
    layer, bottom, top = build_layer(conv_text("num_output: 2 kernel_size: 3"), [np.zeros((1, 3, 4, 4))])
    layer.blobs[0] = Blob((2, 3, 2, 2), np.float64)
    with pytest.raises(LayerError, match=r"Incorrect weight shape: expected shape 2 3 3 3 \(54\); "
                                         r"instead, shape was 2 3 2 2 \(24\)"):
        layer.setup(bottom, top)


@pytest.mark.gpu
@pytest.mark.parametrize("kind,params,shape", [
    ("Convolution", "num_output: 6 group: 2 kernel_size: 3 pad: 1 stride: 2", (2, 4, 7, 7)),
    ("Convolution", "num_output: 4 group: 4 kernel_size: 3 pad: 1", (2, 4, 6, 6)),
    ("Convolution", "num_output: 2 kernel_size: 2 dilation: 2", (2, 3, 4, 4, 4)),
    ("Deconvolution", "num_output: 4 group: 2 kernel_size: 4 stride: 2 pad: 1", (2, 4, 3, 3)),
])
def test_cupy_matches_numpy(kind, params, shape):
    import cupy

    x = RNG.standard_normal(shape)
    text = conv_text(params, kind)
    cpu, cpu_bottom, cpu_top = build_layer(text, [x])
    backend.set_mode_gpu()
    gpu, gpu_bottom, gpu_top = build_layer(text, [x], xp=cupy)
    for mine, theirs in zip(gpu.blobs, cpu.blobs):
        mine.data[...] = cupy.asarray(theirs.data)
    y_cpu, y_gpu = forward(cpu, cpu_bottom, cpu_top)[0], forward(gpu, gpu_bottom, gpu_top)[0]
    np.testing.assert_allclose(cupy.asnumpy(y_gpu), y_cpu, rtol=1e-10, atol=1e-12)
    dy = RNG.standard_normal(y_cpu.shape)
    cpu_top[0].diff[...] = dy
    gpu_top[0].diff[...] = cupy.asarray(dy)
    cpu.backward(cpu_top, [True], cpu_bottom)
    gpu.backward(gpu_top, [True], gpu_bottom)
    np.testing.assert_allclose(cupy.asnumpy(gpu_bottom[0].diff), cpu_bottom[0].diff, rtol=1e-10, atol=1e-12)
    for mine, theirs in zip(gpu.blobs, cpu.blobs):
        np.testing.assert_allclose(cupy.asnumpy(mine.diff), theirs.diff, rtol=1e-10, atol=1e-12)



# -- filter_stride: DeepLab / ParseNet's name for the dilation --------------------------------------
@pytest.mark.parametrize("layer_type, fork, bvlc, dilation", [
    ("Convolution", "filter_stride: 2", "dilation: 2", (2, 2)),
    ("Convolution", "filter_stride_h: 2 filter_stride_w: 3", "dilation: 2 dilation: 3", (2, 3)),
    ("Deconvolution", "filter_stride: 2", "dilation: 2", (2, 2)),
])
def test_filter_stride_is_dilation(layer_type, fork, bvlc, dilation):
    x = RNG.standard_normal((2, 3, 9, 8))
    text = f'type: "{layer_type}" convolution_param {{ num_output: 2 kernel_size: 3 pad: 1 GEOMETRY ' \
           'weight_filler { type: "gaussian" } bias_filler { type: "gaussian" } }'
    layer, bottom, top = build_layer(text.replace("GEOMETRY", fork), [x])
    assert layer.dilation == dilation
    reference, ref_bottom, ref_top = build_layer(text.replace("GEOMETRY", bvlc), [x])
    for ours, theirs in zip(layer.blobs, reference.blobs):
        theirs.data[...] = ours.data
    np.testing.assert_array_equal(forward(layer, bottom, top)[0], forward(reference, ref_bottom, ref_top)[0])
    check_gradient(text.replace("GEOMETRY", fork), [x], max_checks=40)


def test_filter_stride_against_opencv_dilation():
    from opencv_reference import opencv_forward

    x = RNG.standard_normal((1, 3, 10, 9))
    layer, bottom, top = build_layer('type: "Convolution" convolution_param { num_output: 4 kernel_size: 3 '
                                     'filter_stride: 3 pad: 2 bias_filler { type: "gaussian" } }', [x])
    ours = forward(layer, bottom, top)[0]
    net = 'input: "data" input_shape { dim: 1 dim: 3 dim: 10 dim: 9 }\n' \
          'layer { name: "c" type: "Convolution" bottom: "data" top: "c" ' \
          'convolution_param { num_output: 4 kernel_size: 3 dilation: 3 pad: 2 } }'
    (reference,) = opencv_forward(net, {"data": x}, ["c"], {"c": [b.data for b in layer.blobs]})
    np.testing.assert_allclose(ours, reference, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("params, message", [
    ("filter_stride: 2 dilation: 2", "Either dilation or filter_stride"),
    ("filter_stride: 2 filter_stride_h: 2 filter_stride_w: 2", "filter_stride OR filter_stride_h and"),
    ("filter_stride_h: 2", "filter_stride OR filter_stride_h and"),
    ("filter_stride: 0", "Dilation dimensions must be nonzero"),
])
def test_filter_stride_errors(params, message):
    with pytest.raises(LayerError, match=message):
        build_layer(f'type: "Convolution" convolution_param {{ num_output: 1 kernel_size: 3 {params} }}',
                    [np.zeros((1, 1, 8, 8))])
