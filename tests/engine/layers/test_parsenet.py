"""ParseNet's UnPooling, ParseOutput and ParseEvaluate, against the fork's loops written
out here; gradient checks; the geometry a second bottom gives; errors."""

import math

import numpy as np
import pytest
from layer_check import build_layer, check_gradient, forward

from engine.errors import LayerError

RNG = np.random.default_rng(31)


def fork_unpool(x, kernel, stride, pad, method, dy=None):
    """The fork's UnPooling loops: (top, bottom diff for top diff dy)."""
    num, channels, height, width = x.shape
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, pad
    uh_size, uw_size = (height - 1) * sh - 2 * ph + kh, (width - 1) * sw - 2 * pw + kw
    top = np.zeros((num, channels, uh_size, uw_size))
    dx = np.zeros_like(x)
    mask = np.full((uh_size, uw_size), -1 if method == "FIXED" else 0)

    def windows():
        for h in range(height):
            for w in range(width):
                hs, ws = h * sh - ph, w * sw - pw
                yield h, w, hs, ws

    def clipped(hs, ws):
        he, we = min(hs + kh, uh_size + ph), min(ws + kw, uw_size + pw)
        size = (he - hs) * (we - ws)
        return max(hs, 0), max(ws, 0), min(he, uh_size), min(we, uw_size), size

    def middle(hs, ws):
        uh, uw = int((2 * hs + kh - 1) / 2), int((2 * ws + kw - 1) / 2)  # C's truncating division
        return min(max(uh, 0), uh_size - 1), min(max(uw, 0), uw_size - 1)

    for h, w, hs, ws in windows():
        if method == "FIXED":
            mask[middle(hs, ws)] = h * width + w
        else:
            h0, w0 = max(hs, 0), max(ws, 0)
            mask[h0:min(hs + kh, uh_size), w0:min(ws + kw, uw_size)] += 1
    for n in range(num):
        for c in range(channels):
            for h, w, hs, ws in windows():
                if method == "FIXED":
                    top[(n, c) + middle(hs, ws)] = x[n, c, h, w]
                    continue
                h0, w0, h1, w1, size = clipped(hs, ws)
                value = x[n, c, h, w] / size if method == "DIV" else x[n, c, h, w]
                for uh in range(h0, h1):
                    for uw in range(w0, w1):
                        top[n, c, uh, uw] += value / mask[uh, uw]
                        if dy is not None:
                            scale = size if method == "DIV" else 1
                            dx[n, c, h, w] += dy[n, c, uh, uw] / scale / mask[uh, uw]
            if dy is not None and method == "FIXED":
                for uh in range(uh_size):
                    for uw in range(uw_size):
                        if mask[uh, uw] != -1:
                            dx[n, c, mask[uh, uw] // width, mask[uh, uw] % width] = dy[n, c, uh, uw]
    return top, dx


def unpool_text(method, kernel, stride=None, pad=None):
    text = f'type: "UnPooling" unpooling_param {{ unpool: {method} out_kernel_size: {kernel}'
    text += f" out_stride: {stride}" if stride is not None else ""
    text += f" out_pad: {pad}" if pad is not None else ""
    return text + " }"


@pytest.mark.parametrize("method", ["FIXED", "DIV", "REP"])
@pytest.mark.parametrize("kernel, stride, pad", [(2, 2, 0), (3, 2, 1), (4, 2, 1), (3, 1, 0), (2, 3, 0)])
def test_unpooling_matches_the_fork_forward_and_backward(method, kernel, stride, pad):
    x = RNG.standard_normal((2, 3, 4, 5))
    layer, bottom, top = build_layer(unpool_text(method, kernel, stride, pad), [x])
    y = forward(layer, bottom, top)[0]
    dy = RNG.standard_normal(y.shape)
    expected, expected_dx = fork_unpool(x, (kernel,) * 2, (stride,) * 2, (pad,) * 2, method, dy)
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-14)
    top[0].diff[...] = dy
    layer.run_backward(top, [True], bottom)
    np.testing.assert_allclose(bottom[0].diff, expected_dx, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("method", ["FIXED", "DIV", "REP"])
def test_unpooling_gradient(method):
    check_gradient(unpool_text(method, 3, 2, 1), [RNG.standard_normal((2, 2, 3, 4))])


def test_unpooling_rectangular_parameters():
    x = RNG.standard_normal((1, 2, 3, 4))
    text = ('type: "UnPooling" unpooling_param { unpool: REP out_kernel_h: 3 out_kernel_w: 2 '
            'out_stride_h: 2 out_stride_w: 1 out_pad_h: 1 out_pad_w: 0 }')
    layer, bottom, top = build_layer(text, [x])
    np.testing.assert_allclose(forward(layer, bottom, top)[0],
                               fork_unpool(x, (3, 2), (2, 1), (1, 0), "REP")[0], rtol=1e-12)


@pytest.mark.parametrize("small, large", [((1, 1), (8, 6)), ((3, 4), (9, 10)), ((4, 4), (7, 7))])
def test_unpooling_to_a_second_bottoms_size(small, large):
    """ParseNet's global-context branch: the kernel, stride and pad follow from bottom 1."""
    x = RNG.standard_normal((2, 3) + small)
    like = np.zeros((2, 5) + large)
    layer, bottom, top = build_layer('type: "UnPooling" unpooling_param { unpool: REP out_kernel_size: 0 '
                                     'out_stride: 0 }', [x, like])
    geometry = []
    for size, target in zip(small, large):
        kernel = math.ceil(target / size)
        stride = 1 if kernel == target else kernel
        geometry.append((kernel, stride, math.floor(((size - 1) * stride + kernel - target) / 2)))
    kernel, stride, pad = zip(*geometry)
    expected = fork_unpool(x, kernel, stride, pad, "REP")[0]
    y = forward(layer, bottom, top)[0]
    np.testing.assert_allclose(y, expected, rtol=1e-12)
    if small == (1, 1):  # the pooled context repeated over the whole map
        assert y.shape == (2, 3) + large
        np.testing.assert_allclose(y, np.broadcast_to(x, y.shape))
    check_gradient('type: "UnPooling" unpooling_param { unpool: REP out_kernel_size: 0 out_stride: 0 }',
                   [x, like], bottoms_checked=[0])


@pytest.mark.parametrize("text, message", [
    ('unpooling_param { out_kernel_size: 2 out_kernel_h: 2 out_kernel_w: 2 }', "not both"),
    ('unpooling_param { }', "out_kernel_size OR out_kernel_h and out_kernel_w"),
    ('unpooling_param { out_kernel_size: 0 }', "Out filter dimensions cannot be zero"),
    ('unpooling_param { out_kernel_size: 2 out_pad_h: 1 }', "out_pad is out_pad OR out_pad_h and out_pad_w"),
    ('unpooling_param { out_kernel_size: 2 out_stride: 2 out_stride_w: 1 }', "out_stride is out_stride OR"),
    ('unpooling_param { out_kernel_size: 2 out_pad: 2 }', r"out_pad \(2, 2\) must be smaller than out_kernel"),
])
def test_unpooling_bad_parameters(text, message):
    with pytest.raises(LayerError, match=rf"^layer 'layer' \(UnPooling\): .*{message}"):
        build_layer(f'type: "UnPooling" {text}', [np.zeros((1, 1, 3, 3))])


def test_unpooling_bad_shapes():
    with pytest.raises(LayerError, match="Input must have 4 axes"):
        build_layer(unpool_text("REP", 2, 2), [np.zeros((2, 3))])
    with pytest.raises(LayerError, match="bottom 1 .* must have 4 axes"):
        build_layer(unpool_text("REP", 2, 2), [np.zeros((1, 1, 2, 2)), np.zeros((1, 4))])


def test_parse_output_takes_the_first_best_channel_and_its_score():
    x = RNG.integers(0, 3, (2, 4, 3, 5)).astype(np.float64)  # many ties
    layer, bottom, top = build_layer('type: "ParseOutput"', [x], num_tops=2)
    label, score = forward(layer, bottom, top)
    for n in range(2):
        for h in range(3):
            for w in range(5):
                best, value = 0, x[n, 0, h, w]
                for c in range(1, 4):
                    if x[n, c, h, w] > value:
                        best, value = c, x[n, c, h, w]
                assert label[n, 0, h, w] == best and score[n, 0, h, w] == value
    layer, bottom, top = build_layer('type: "ParseOutput"', [x])
    assert forward(layer, bottom, top)[0].shape == (2, 1, 3, 5)


def test_parse_evaluate_counts_by_hand():
    pred = np.array([[[[0, 1, 2], [2, 2, 1]]]], dtype=np.float64)
    truth = np.array([[[[0, 2, 2], [255, 1, 1]]]], dtype=np.float64)
    layer, bottom, top = build_layer('type: "ParseEvaluate" parse_evaluate_param { num_labels: 3 '
                                     'ignore_label: 255 }', [pred, truth])
    counts = forward(layer, bottom, top)[0]
    assert counts.shape == (1, 3, 1, 3)
    # per class: right, true, predicted (the pixel labelled 255 left out)
    np.testing.assert_array_equal(counts[0, :, 0], [[1, 1, 1], [1, 2, 2], [1, 2, 2]])


@pytest.mark.parametrize("text, bottoms, message", [
    ('type: "ParseEvaluate"', [(1, 1, 2, 2)] * 2, "parse_evaluate_param.num_labels is required"),
    ('type: "ParseEvaluate" parse_evaluate_param { num_labels: 3 }', [(1, 1, 2, 2), (1, 1, 2, 3)],
     "must both be num x 1 x height x width"),
    ('type: "ParseEvaluate" parse_evaluate_param { num_labels: 3 }', [(1, 2, 2, 2)] * 2,
     "must both be num x 1 x height x width"),
    ('type: "ParseOutput"', [(2, 3)], "needs a num x channels x height x width bottom"),
])
def test_parse_layers_bad_input(text, bottoms, message):
    with pytest.raises(LayerError, match=message):
        build_layer(text, [np.zeros(s) for s in bottoms])


def test_parse_evaluate_label_out_of_range():
    layer, bottom, top = build_layer('type: "ParseEvaluate" parse_evaluate_param { num_labels: 2 }',
                                     [np.full((1, 1, 1, 2), 2.0), np.zeros((1, 1, 1, 2))])
    with pytest.raises(LayerError, match=r"predicted label 2 outside \[0, 1\]"):
        forward(layer, bottom, top)


# -- Pooling's bin_size -------------------------------------------------------------------

def bin_geometry(size, bins):
    """The fork's per-axis kernel, stride and pad for `bins` bins over `size`."""
    kernel = math.ceil(size / bins)
    stride = 1 if kernel == size else kernel
    return kernel, stride, math.floor(((bins - 1) * stride + kernel - size) / 2)


@pytest.mark.parametrize("pool", ["AVE", "MAX"])
@pytest.mark.parametrize("shape, bins", [((7, 9), (1, 1)), ((8, 8), (2, 2)), ((10, 7), (3, 2)), ((9, 12), (4, 3))])
def test_pooling_bins_equal_pooling_with_the_derived_window(pool, shape, bins):
    x = RNG.standard_normal((2, 3) + shape)
    text = f"bin_size: {bins[0]}" if bins[0] == bins[1] else f"bin_h: {bins[0]} bin_w: {bins[1]}"
    layer, bottom, top = build_layer(f'type: "Pooling" pooling_param {{ pool: {pool} {text} }}', [x])
    y = forward(layer, bottom, top)[0]
    (kh, sh, ph), (kw, sw, pw) = (bin_geometry(s, b) for s, b in zip(shape, bins))
    explicit = (f'type: "Pooling" pooling_param {{ pool: {pool} kernel_h: {kh} kernel_w: {kw} '
                f'stride_h: {sh} stride_w: {sw} pad_h: {ph} pad_w: {pw} }}')
    reference, ref_bottom, ref_top = build_layer(explicit, [x])
    np.testing.assert_array_equal(y, forward(reference, ref_bottom, ref_top)[0])
    assert y.shape[2:] == bins  # as many bins as asked, for these sizes
    if bins == (1, 1) and pool == "AVE":  # ParseNet's global context: the mean of each map
        np.testing.assert_allclose(y[..., 0, 0], x.mean(axis=(2, 3)), rtol=1e-12)


def test_pooling_bins_follow_the_input_size_and_have_a_gradient():
    layer, bottom, top = build_layer('type: "Pooling" pooling_param { pool: AVE bin_size: 2 }',
                                     [RNG.standard_normal((1, 2, 8, 8))])
    bottom[0].reshape((1, 2, 12, 6))
    layer.reshape(bottom, top)
    assert top[0].shape == (1, 2, 2, 2) and layer.kernel == (6, 3)
    check_gradient('type: "Pooling" pooling_param { pool: AVE bin_h: 2 bin_w: 3 }', [RNG.standard_normal((1, 2, 6, 9))])


@pytest.mark.parametrize("text, shape, message", [
    ("bin_h: 2", (6, 6), "both bin_h and bin_w are required"),
    ("bin_size: 2 global_pooling: true", (6, 6), "With Global_pooling: cannot use bin option"),
    ("bin_size: 0", (6, 6), "Bin # cannot be zero"),
    ("bin_size: 4", (7, 9), r"Bin # in height direction cannot be larger than half of height \(4 bins, height 7\)"),
])
def test_pooling_bad_bins(text, shape, message):
    with pytest.raises(LayerError, match=rf"^layer 'layer' \(Pooling\): .*{message}"):
        build_layer(f'type: "Pooling" pooling_param {{ pool: AVE {text} }}', [np.zeros((1, 1) + shape)])


def test_bilinear_upsampling_filler_is_bvlcs_bilinear():
    from engine import caffe_pb2
    from engine.fillers import fill

    ours, bvlc = np.empty((2, 1, 4, 4)), np.empty((2, 1, 4, 4))
    fill(ours, caffe_pb2.FillerParameter(type="bilinear_upsampling"))
    fill(bvlc, caffe_pb2.FillerParameter(type="bilinear"))
    np.testing.assert_array_equal(ours, bvlc)
    # the fork's loop: f = ceil(4 / 2), c = (2f - 1 - f % 2) / 2f
    f, c = 2, (2 * 2 - 1 - 0) / 4
    expected = [[(1 - abs(x / f - c)) * (1 - abs(y / f - c)) for x in range(4)] for y in range(4)]
    np.testing.assert_allclose(ours[1, 0], expected)


@pytest.mark.parametrize("method", ["FIXED", "DIV", "REP"])
def test_unpooling_on_both_devices(mode, method):
    from engine.backend import array_module, to_host

    x = RNG.standard_normal((2, 3, 4, 5))
    layer, bottom, top = build_layer(unpool_text(method, 3, 2, 1), [x], xp=array_module())
    y = to_host(forward(layer, bottom, top)[0])
    dy = RNG.standard_normal(y.shape)
    expected, expected_dx = fork_unpool(x, (3, 3), (2, 2), (1, 1), method, dy)
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-14)
    top[0].diff[...] = array_module().asarray(dy)
    layer.run_backward(top, [True], bottom)
    np.testing.assert_allclose(to_host(bottom[0].diff), expected_dx, rtol=1e-12, atol=1e-14)


def test_parse_layers_on_both_devices(mode):
    from engine.backend import array_module, to_host

    scores = RNG.standard_normal((1, 3, 4, 4))
    layer, bottom, top = build_layer('type: "ParseOutput"', [scores], xp=array_module())
    label = to_host(forward(layer, bottom, top)[0])
    np.testing.assert_array_equal(label[:, 0], scores.argmax(axis=1))
    truth = RNG.integers(0, 3, (1, 1, 4, 4)).astype(np.float64)
    layer, bottom, top = build_layer('type: "ParseEvaluate" parse_evaluate_param { num_labels: 3 }',
                                     [label, truth], xp=array_module())
    counts = to_host(forward(layer, bottom, top)[0])[0, :, 0]
    np.testing.assert_array_equal(counts[:, 1], np.bincount(truth.astype(int).ravel(), minlength=3))
