"""engine/winograd.py: the Convolution layer's F(2x2, 3x3) and F(2x2, 5x5) paths compute what im2col + GEMM computes.

In float64, against a direct convolution (one kernel offset at a time) and
against the layer's im2col path: top, bottom diff, and weight and bias diffs
(accumulated into, not overwritten), over every pad, groups, odd and even
sizes, several bottoms; the Toom-Cook matrices, the routing policy
(conv.WINOGRAD and where 5x5 pays) and float32 error.
"""

import numpy as np
import pytest
from layer_check import build_layer, check_gradient

from engine import caffe_pb2, winograd
from engine.layers import conv

CASES = [  # (num, channels, height, width, num_output, pad, group, kernel)
    (2, 3, 7, 6, 4, 1, 1, 3),
    (2, 4, 8, 8, 6, 0, 2, 3),
    (3, 2, 5, 9, 4, 2, 2, 3),
    (1, 5, 4, 4, 3, 1, 1, 3),
    (2, 6, 3, 3, 4, 0, 1, 3),
    (2, 4, 6, 5, 8, 1, 4, 3),   # depthwise, two outputs per channel
    (1, 3, 1, 2, 2, 1, 1, 3),   # a 1x2 image
    (2, 2, 9, 7, 3, 2, 1, 3),
    (2, 3, 9, 8, 4, 2, 1, 5),
    (2, 4, 8, 7, 6, 0, 2, 5),
    (1, 2, 5, 6, 3, 1, 1, 5),
    (3, 2, 4, 5, 2, 3, 1, 5),
    (1, 3, 2, 3, 2, 4, 1, 5),   # pad 4: every output sees the border
    (2, 4, 7, 7, 4, 2, 4, 5),   # depthwise
]


def direct_conv(x, w, b, pad, group):
    """Cross-correlation, k x k, stride 1, one kernel offset at a time."""
    num, channels, height, width = x.shape
    outputs, per_group, k = w.shape[:3]
    oh, ow = height + 2 * pad - k + 1, width + 2 * pad - k + 1
    padded = np.zeros((num, channels, height + 2 * pad, width + 2 * pad))
    padded[:, :, pad:pad + height, pad:pad + width] = x
    y = np.zeros((num, outputs, oh, ow))
    og = outputs // group
    for g in range(group):
        xs = padded[:, g * per_group:(g + 1) * per_group]
        for i in range(k):
            for j in range(k):
                y[:, g * og:(g + 1) * og] += np.einsum("nchw,oc->nohw", xs[:, :, i:i + oh, j:j + ow],
                                                       w[g * og:(g + 1) * og, :, i, j])
    return y + (b.reshape(1, -1, 1, 1) if b is not None else 0)


def direct_backward(x, w, dy, pad, group):
    """(dx, dw, db) of direct_conv for top diff dy."""
    num, channels, height, width = x.shape
    outputs, per_group, k = w.shape[:3]
    oh, ow = dy.shape[2:]
    padded = np.zeros((num, channels, height + 2 * pad, width + 2 * pad))
    padded[:, :, pad:pad + height, pad:pad + width] = x
    dpadded = np.zeros_like(padded)
    dw = np.zeros_like(w)
    og = outputs // group
    for g in range(group):
        cs, os_ = slice(g * per_group, (g + 1) * per_group), slice(g * og, (g + 1) * og)
        for i in range(k):
            for j in range(k):
                window = padded[:, cs, i:i + oh, j:j + ow]
                dw[os_, :, i, j] += np.einsum("nohw,nchw->oc", dy[:, os_], window)
                dpadded[:, cs, i:i + oh, j:j + ow] += np.einsum("nohw,oc->nchw", dy[:, os_], w[os_, :, i, j])
    return dpadded[:, :, pad:pad + height, pad:pad + width], dw, dy.sum(axis=(0, 2, 3))


def _text(outputs, pad, group, bias=True, kernel=3):
    return (f'type: "Convolution" convolution_param {{ num_output: {outputs} kernel_size: {kernel} pad: {pad} '
            f'group: {group} bias_term: {"true" if bias else "false"} '
            f'weight_filler {{ type: "gaussian" }} bias_filler {{ type: "gaussian" }} }}')


def _run(monkeypatch, mode, text, xs, dys, priors, propagate=None):
    """Forward and backward through the layer with conv.WINOGRAD = mode; returns every result."""
    monkeypatch.setattr(conv, "WINOGRAD", mode)
    layer, bottom, top = build_layer(text, xs, num_tops=len(xs), phase=caffe_pb2.TRAIN)
    for blob, prior in zip(layer.blobs, priors["data"]):
        blob.data[...] = prior
    layer.forward(bottom, top)
    for t, dy in zip(top, dys):
        t.diff[...] = dy
    for blob, prior in zip(layer.blobs, priors["diff"]):
        blob.diff[...] = prior
    for b in bottom:
        b.diff[...] = 7.0
    layer.param_propagate_down = [True] * len(layer.blobs)
    layer.backward(top, propagate or [True] * len(xs), bottom)
    used = conv.WINOGRAD != "never" and layer._use_winograd(np)
    return used, [t.data.copy() for t in top], [b.diff.copy() for b in bottom], [p.diff.copy() for p in layer.blobs]


def _priors(rng, outputs, per_group, bias=True, kernel=3):
    shapes = [(outputs, per_group, kernel, kernel)] + ([(outputs,)] if bias else [])
    return {"data": [rng.standard_normal(s) for s in shapes], "diff": [rng.standard_normal(s) for s in shapes]}


@pytest.mark.parametrize("num,channels,height,width,outputs,pad,group,kernel", CASES)
def test_layer_matches_direct_convolution_and_im2col(monkeypatch, num, channels, height, width, outputs, pad,
                                                     group, kernel):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((num, channels, height, width))
    dy = rng.standard_normal((num, outputs, height + 2 * pad - kernel + 1, width + 2 * pad - kernel + 1))
    priors = _priors(rng, outputs, channels // group, kernel=kernel)
    text = _text(outputs, pad, group, kernel=kernel)
    used, tops, bottoms, params = _run(monkeypatch, "always", text, [x], [dy], priors)
    assert used
    w, b = priors["data"]
    dx, dw, db = direct_backward(x, w, dy, pad, group)
    np.testing.assert_allclose(tops[0], direct_conv(x, w, b, pad, group), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(bottoms[0], dx, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(params[0], priors["diff"][0] + dw, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(params[1], priors["diff"][1] + db, rtol=1e-10, atol=1e-10)
    unused, *im2col = _run(monkeypatch, "never", text, [x], [dy], priors)
    assert not unused
    for mine, theirs in zip((tops, bottoms, params), im2col):
        for a, b_ in zip(mine, theirs):
            np.testing.assert_allclose(a, b_, rtol=1e-10, atol=1e-10)


def test_several_bottoms_no_bias_and_skipped_bottom(monkeypatch):
    rng = np.random.default_rng(4)
    xs = [rng.standard_normal((2, 4, 6, 7)) for _ in range(3)]
    dys = [rng.standard_normal((2, 6, 6, 7)) for _ in range(3)]
    priors = _priors(rng, 6, 2, bias=False)
    text = _text(6, 1, 2, bias=False)
    propagate = [True, False, True]
    results = [_run(monkeypatch, mode, text, xs, dys, priors, propagate) for mode in ("always", "never")]
    assert results[0][0] and not results[1][0]
    for mine, theirs in zip(results[0][1:], results[1][1:]):
        for a, b in zip(mine, theirs):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10)
    assert (results[0][2][1] == 7.0).all()  # no propagation: the bottom diff is left alone


def test_gradient_through_the_winograd_path(monkeypatch):
    monkeypatch.setattr(conv, "WINOGRAD", "always")
    rng = np.random.default_rng(5)
    check_gradient(_text(4, 1, 2), [rng.standard_normal((2, 4, 5, 6))], max_checks=40)
    check_gradient(_text(3, 2, 1), [rng.standard_normal((1, 2, 4, 3))], max_checks=40)
    check_gradient(_text(2, 2, 1, kernel=5), [rng.standard_normal((2, 2, 5, 4))], max_checks=40)
    check_gradient(_text(4, 1, 2, kernel=5), [rng.standard_normal((1, 4, 6, 6))], max_checks=40)


def test_backward_without_forward_recomputes_and_can_skip_the_bottom():
    rng = np.random.default_rng(6)
    x, w = rng.standard_normal((2, 3, 6, 5)), rng.standard_normal((4, 3, 3, 3))
    dy = rng.standard_normal((2, 4, 6, 5))
    reference = winograd.WinogradConvolution((1, 1))
    reference.forward(x, w)
    expected = np.zeros_like(w)
    reference.backward(x, dy, w, expected)
    fresh, dw = winograd.WinogradConvolution((1, 1)), np.zeros_like(w)
    assert fresh.backward(x, dy, w, dw, need_bottom=False) is None
    np.testing.assert_allclose(dw, expected, rtol=1e-12)
    np.testing.assert_allclose(dw, direct_backward(x, w, dy, 1, 1)[1], rtol=1e-10, atol=1e-10)
    x5, w5 = rng.standard_normal((2, 3, 7, 6)), rng.standard_normal((4, 3, 5, 5))
    dy5 = rng.standard_normal((2, 4, 7, 6))
    dw5 = np.zeros_like(w5)
    assert winograd.WinogradConvolution((2, 2), kernel=5).backward(x5, dy5, w5, dw5, need_bottom=False) is None
    np.testing.assert_allclose(dw5, direct_backward(x5, w5, dy5, 2, 1)[1], rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("kernel,pad", [(3, 1), (5, 2)])
def test_float32_error_is_small(kernel, pad):
    """float32 results within 1e-5 of the largest output; the bottom and weight diffs as close."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((4, 16, 13, 13)).astype(np.float32)
    w = (rng.standard_normal((8, 16, kernel, kernel)) / (4 * kernel)).astype(np.float32)
    dy = rng.standard_normal((4, 8, 13, 13)).astype(np.float32)
    x64, w64 = x.astype(np.float64), w.astype(np.float64)
    exact = (direct_conv(x64, w64, None, pad, 1),) + direct_backward(x64, w64, dy.astype(np.float64), pad, 1)[:2]
    conv_ = winograd.WinogradConvolution((pad, pad), kernel=kernel)
    dw = np.zeros_like(w)
    single = (conv_.forward(x, w), conv_.backward(x, dy, w, dw), dw)
    for got, want in zip(single, exact):
        assert got.dtype == np.float32
        assert np.abs(got - want).max() / np.abs(want).max() < 1e-5


@pytest.mark.parametrize("m,r", [(2, 3), (2, 5), (4, 3), (3, 5), (1, 4)])
def test_toom_cook_matrices_compute_the_correlation(m, r):
    """y = A^T [(G g) * (B^T d)] is the correlation of d with g, and B^T's rows are integers."""
    at, g, bt = winograd.toom_cook(m, r)
    n = m + r - 1
    assert at.shape == (m, n) and g.shape == (n, r) and bt.shape == (n, n)
    assert np.array_equal(bt, np.round(bt))
    rng = np.random.default_rng(11)
    for _ in range(5):
        d, w = rng.standard_normal(n), rng.standard_normal(r)
        np.testing.assert_allclose(at @ ((g @ w) * (bt @ d)), [d[i:i + r] @ w for i in range(m)], atol=1e-12)


@pytest.mark.parametrize("kernel,stride,dilation,pad,expected", [
    ((3, 3), (1, 1), (1, 1), (1, 1), True),
    ((3, 3), (1, 1), (1, 1), (0, 2), True),
    ((3, 3), (2, 2), (1, 1), (1, 1), False),
    ((5, 5), (1, 1), (1, 1), (2, 2), True),
    ((5, 5), (1, 1), (1, 1), (0, 4), True),
    ((5, 5), (1, 1), (1, 1), (5, 5), False),
    ((5, 3), (1, 1), (1, 1), (1, 1), False),
    ((7, 7), (1, 1), (1, 1), (3, 3), False),
    ((3, 3), (1, 1), (2, 2), (2, 2), False),
    ((3, 3), (1, 1), (1, 1), (3, 3), False),
    ((3, 3, 3), (1, 1, 1), (1, 1, 1), (1, 1, 1), False),
])
def test_supported_geometry(kernel, stride, dilation, pad, expected):
    assert winograd.supported(kernel, stride, dilation, pad) is expected


def test_policy_never_and_unsupported_geometry_stay_on_im2col(monkeypatch):
    x = np.zeros((1, 2, 6, 6))
    monkeypatch.setattr(conv, "WINOGRAD", "always")
    for params in ("kernel_size: 3 stride: 2", "kernel_size: 7 pad: 3", "kernel_size: 3 dilation: 2"):
        layer, _, _ = build_layer(f'type: "Convolution" convolution_param {{ num_output: 2 {params} }}', [x])
        assert not layer._use_winograd(np)
    layer, _, _ = build_layer(_text(2, 1, 1), [x])
    assert layer._use_winograd(np)
    monkeypatch.setattr(conv, "WINOGRAD", "never")
    assert not layer._use_winograd(np)


@pytest.mark.parametrize("channels,outputs,group,pays", [
    (32, 32, 1, True), (32, 64, 1, True), (20, 50, 1, True), (16, 32, 1, True), (3, 32, 1, False), (8, 32, 1, False),
    (32, 96, 1, False), (96, 256, 2, False)])
def test_5x5_takes_winograd_on_the_cpu_where_it_pays(channels, outputs, group, pays):
    """3x3 always; 5x5 with one group, 16 or more input channels and at most 64 outputs."""
    x = np.zeros((1, channels, 8, 8))
    text = f'type: "Convolution" convolution_param {{ num_output: {outputs} kernel_size: 5 pad: 2 group: {group} }}'
    assert build_layer(text, [x])[0]._use_winograd(np) is pays
    assert build_layer(text.replace("kernel_size: 5 pad: 2", "kernel_size: 3 pad: 1"), [x])[0]._use_winograd(np)


@pytest.mark.parametrize("kernel,pad,by_winograd", [(3, 0, True), (3, 1, True), (5, 2, True), (5, 1, False),
                                                    (5, 0, False)])
def test_bottom_diff_of_5x5_without_same_padding_goes_by_im2col(monkeypatch, kernel, pad, by_winograd):
    """The forward and weight diff stay Winograd's; the bottom diff takes im2col's route where Winograd's would
    tile a larger map than the forward's, with the same numbers."""
    rng = np.random.default_rng(8)
    x = rng.standard_normal((2, 3, 7, 6))
    dy = rng.standard_normal((2, 4, 7 + 2 * pad - kernel + 1, 6 + 2 * pad - kernel + 1))
    priors = _priors(rng, 4, 3, kernel=kernel)
    calls = []
    original = conv.ConvolutionLayer._data_diff_of_part
    monkeypatch.setattr(conv.ConvolutionLayer, "_data_diff_of_part",
                        lambda self, *args: calls.append(1) or original(self, *args))
    used, tops, bottoms, params = _run(monkeypatch, "always", _text(4, pad, 1, kernel=kernel), [x], [dy], priors)
    assert used and bool(calls) is not by_winograd
    w, b = priors["data"]
    dx, dw, _ = direct_backward(x, w, dy, pad, 1)
    np.testing.assert_allclose(bottoms[0], dx, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(params[0], priors["diff"][0] + dw, rtol=1e-10, atol=1e-10)


@pytest.mark.gpu
@pytest.mark.parametrize("kernel", [3, 5])
def test_cupy_winograd_matches_numpy(monkeypatch, kernel):
    """The same body on CuPy (taken there only with WINOGRAD = "always")."""
    import cupy

    from engine import backend

    rng = np.random.default_rng(8)
    x, w = rng.standard_normal((2, 4, 7, 6)), rng.standard_normal((6, 2, kernel, kernel))
    b, dy = rng.standard_normal(6), rng.standard_normal((2, 6, 7, 6))
    backend.set_mode_gpu()
    results = []
    for xp in (np, cupy):
        conv_ = winograd.WinogradConvolution((kernel // 2, kernel // 2), group=2, kernel=kernel)
        y = conv_.forward(xp.asarray(x), xp.asarray(w), xp.asarray(b))
        dw, db = xp.zeros_like(xp.asarray(w)), xp.zeros(6)
        dx = conv_.backward(xp.asarray(x), xp.asarray(dy), xp.asarray(w), dw, db)
        results.append([cupy.asnumpy(a) if xp is cupy else a for a in (y, dx, dw, db)])
    for a, b_ in zip(*results):
        np.testing.assert_allclose(b_, a, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("params,shape", [
    ("num_output: 4 kernel_size: 5 pad: 2", (2, 6, 7, 6)),
    ("num_output: 4 kernel_size: 5 pad: 2 group: 2", (2, 4, 8, 9)),
    ("num_output: 2 kernel_size: 3 pad: 2 dilation: 2", (2, 3, 7, 7)),
    ("num_output: 2 kernel_h: 3 kernel_w: 1 pad_h: 2", (1, 3, 5, 4)),
    ("num_output: 2 kernel_size: 3 pad: 1", (2, 3, 7)),                     # 1-D
    ("num_output: 2 kernel_size: 2 kernel_size: 3 kernel_size: 2 pad: 1", (1, 3, 3, 4, 3)),  # 3-D
])
def test_bottom_diff_by_correlation_matches_col2im(monkeypatch, params, shape):
    """Stride-1 layers off the Winograd path take dx as a correlation of dy; col2im gives the same."""
    monkeypatch.setattr(conv, "WINOGRAD", "never")
    rng = np.random.default_rng(9)
    x = rng.standard_normal(shape)
    text = f'type: "Convolution" convolution_param {{ {params} weight_filler {{ type: "gaussian" }} }}'
    results = []
    for correlate in (True, False):
        layer, bottom, top = build_layer(text, [x], phase=caffe_pb2.TRAIN)
        assert layer._correlate_backward_data()
        layer.blobs[0].data[...] = np.linspace(-1, 1, layer.blobs[0].count).reshape(layer.blobs[0].shape)
        if not correlate:
            monkeypatch.setattr(layer, "_correlate_backward_data", lambda: False)
        layer.forward(bottom, top)
        top[0].diff[...] = np.random.default_rng(10).standard_normal(top[0].shape)
        layer.backward(top, [True], bottom)
        results.append((bottom[0].diff.copy(), layer.blobs[0].diff.copy()))
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("params,shape,correlate", [
    ("num_output: 16 kernel_size: 3 pad: 1", (1, 16, 2, 2), False),   # 2,304 weights, 576 column values
    ("num_output: 16 kernel_size: 3 pad: 1", (4, 16, 4, 4), True),    # 2,304 weights, 9,216 column values
    ("num_output: 64 kernel_size: 1", (1, 64, 2, 2), True),           # 1 x 1: the rotated weights are a view
])
def test_bottom_diff_route_weighs_the_rotated_weights_copy(monkeypatch, params, shape, correlate):
    """A correlation copies the rotated weights: where they outnumber the top diff's columns, col2im serves."""
    monkeypatch.setattr(conv, "WINOGRAD", "never")
    x = np.random.default_rng(11).standard_normal(shape)
    layer, bottom, top = build_layer(f'type: "Convolution" convolution_param {{ {params} }}', [x],
                                     phase=caffe_pb2.TRAIN)
    assert layer._correlate_backward_data() is correlate


@pytest.mark.parametrize("kernels_on", [False, True])
def test_filter_transforms_are_kron_g_and_its_adjoint(kernels_on):
    """U = G w G^T and dw = G^T dU G, as the (16, 9) matrix kron(G, G) gives them, on both CPU paths."""
    from engine import cpu

    g = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]])
    kron = np.kron(g, g)
    rng = np.random.default_rng(5)
    w, du = rng.standard_normal((5, 3, 3, 3)), rng.standard_normal((16, 5, 3))
    previous = cpu.set_enabled(kernels_on)
    try:
        u = winograd.filter_transform(w)
        dw = winograd.filter_transform_adjoint(du)
        into = np.ones_like(w)
        assert winograd.filter_transform_adjoint(du, out=into) is into
    finally:
        cpu.set_enabled(previous)
    np.testing.assert_allclose(u, (kron @ w.reshape(-1, 9).T).reshape(16, 5, 3), rtol=0, atol=1e-14)
    np.testing.assert_allclose(dw, (du.reshape(16, -1).T @ kron).reshape(5, 3, 3, 3), rtol=0, atol=1e-14)
    np.testing.assert_allclose(into, 1 + dw, rtol=0, atol=1e-14)
