"""Pooling (pooling.py) against Caffe's window-by-window rules, gradients, STOCHASTIC, errors, GPU."""

import numpy as np
import pytest
from layer_check import build_layer, check_gradient, forward

from engine import backend, caffe_pb2
from engine.errors import LayerError
from engine.layers import pooling

RNG = np.random.default_rng(9)
FLT_MAX = float(np.finfo(np.float32).max)


def distinct(shape):
    """Values at least 1e-2 apart, so that central differences never cross a max switch."""
    return (RNG.permutation(int(np.prod(shape))).reshape(shape) - 20.0) * 0.01


def windows(size, kernel, pad, stride, ceil=True):
    """Caffe's window bounds along one axis: (start, end, padded size) per output."""
    span = size + 2 * pad - kernel
    out = (-(-span // stride) if ceil else span // stride) + 1
    if pad and (out - 1) * stride >= size + pad:
        out -= 1
    result = []
    for o in range(out):
        start = o * stride - pad
        padded_end = min(start + kernel, size + pad)
        result.append((max(start, 0), min(start + kernel, size), padded_end - start))
    return result


def reference_pool(x, method, kernel, pad, stride, ceil=True):
    """Caffe's CPU pooling loops; returns (top, mask) with mask = h * W + w of the first maximum."""
    num, channels, height, width = x.shape
    rows = windows(height, kernel[0], pad[0], stride[0], ceil)
    cols = windows(width, kernel[1], pad[1], stride[1], ceil)
    top = np.zeros((num, channels, len(rows), len(cols)))
    mask = np.full(top.shape, -1.0)
    for n in range(num):
        for c in range(channels):
            for i, (h0, h1, hsize) in enumerate(rows):
                for j, (w0, w1, wsize) in enumerate(cols):
                    if method == "MAX":
                        best = -FLT_MAX
                        for h in range(h0, h1):
                            for w in range(w0, w1):
                                if x[n, c, h, w] > best:
                                    best, mask[n, c, i, j] = x[n, c, h, w], h * width + w
                        top[n, c, i, j] = best
                    else:
                        top[n, c, i, j] = x[n, c, h0:h1, w0:w1].sum() / (hsize * wsize)
    return top, mask


# (pooling_param text, kernel, pad, stride, bottom shape)
CASES = [
    ("kernel_size: 3 stride: 2", (3, 3), (0, 0), (2, 2), (2, 3, 8, 8)),
    ("kernel_size: 3 stride: 2 pad: 1", (3, 3), (1, 1), (2, 2), (2, 2, 7, 6)),
    ("kernel_h: 3 kernel_w: 2 stride_h: 2 stride_w: 2 pad_h: 1 pad_w: 1", (3, 2), (1, 1), (2, 2), (1, 3, 7, 7)),
    ("kernel_size: 2 stride: 2 pad: 1", (2, 2), (1, 1), (2, 2), (1, 2, 5, 5)),
    ("kernel_size: 2 stride: 1", (2, 2), (0, 0), (1, 1), (2, 2, 4, 5)),
    ("kernel_size: 4 stride: 3", (4, 4), (0, 0), (3, 3), (1, 2, 6, 9)),
]


@pytest.mark.parametrize("method", ["MAX", "AVE"])
@pytest.mark.parametrize("params,kernel,pad,stride,shape", CASES, ids=[c[0] for c in CASES])
def test_forward_matches_caffe_loops(method, params, kernel, pad, stride, shape):
    x = RNG.standard_normal(shape)
    layer, bottom, top = build_layer(f'type: "Pooling" pooling_param {{ pool: {method} {params} }}', [x])
    got = forward(layer, bottom, top)[0]
    expected, _ = reference_pool(x, method, kernel, pad, stride)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-12)


@pytest.mark.parametrize("params,kernel,pad,stride,shape", CASES, ids=[c[0] for c in CASES])
def test_max_mask_top_and_ties_take_the_first_in_row_major_order(params, kernel, pad, stride, shape):
    x = np.round(RNG.standard_normal(shape))  # many ties
    x[0, 0] = 0.0  # a whole channel of ties
    layer, bottom, top = build_layer(f'type: "Pooling" pooling_param {{ pool: MAX {params} }}', [x], num_tops=2)
    values, mask = forward(layer, bottom, top)
    expected, expected_mask = reference_pool(x, "MAX", kernel, pad, stride)
    np.testing.assert_array_equal(values, expected)
    np.testing.assert_array_equal(mask, expected_mask)


def test_max_with_loop_and_gather_paths_agree(monkeypatch):
    x = np.round(RNG.standard_normal((2, 3, 9, 8)))
    text = 'type: "Pooling" pooling_param { pool: MAX kernel_size: 3 stride: 2 pad: 1 }'
    layer, bottom, top = build_layer(text, [x], num_tops=2)
    loop = forward(layer, bottom, top)
    monkeypatch.setattr(pooling, "LOOP_OFFSETS", 1)
    gathered = forward(layer, bottom, top)
    for a, b in zip(loop, gathered):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("params", ["kernel_size: 3 stride: 2 pad: 1", "kernel_size: 2 stride: 3",
                                    "kernel_h: 3 kernel_w: 2 stride: 2"])
def test_ave_view_and_offset_paths_agree(monkeypatch, params):
    x = RNG.standard_normal((2, 2, 7, 8))
    text = f'type: "Pooling" pooling_param {{ pool: AVE {params} }}'
    layer, bottom, top = build_layer(text, [x])
    dy = RNG.standard_normal(forward(layer, bottom, top)[0].shape)
    results = []
    for limit in (pooling.LOOP_OFFSETS, 1):
        monkeypatch.setattr(pooling, "LOOP_OFFSETS", limit)
        y = forward(layer, bottom, top)[0]
        top[0].diff[...] = dy
        layer.backward(top, [True], bottom)
        results.append((y, bottom[0].diff.copy()))
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("method", ["MAX", "AVE"])
def test_global_pooling(method):
    x = RNG.standard_normal((2, 3, 9, 10))  # 90 offsets: the gather path for MAX
    text = f'type: "Pooling" pooling_param {{ pool: {method} global_pooling: true }}'
    layer, bottom, top = build_layer(text, [x])
    got = forward(layer, bottom, top)[0]
    reduce = np.max if method == "MAX" else np.mean
    np.testing.assert_allclose(got, reduce(x, axis=(2, 3), keepdims=True), rtol=1e-12)
    check_gradient(text, [distinct((2, 2, 9, 10))], max_checks=40)


def test_round_mode_floor():
    x = RNG.standard_normal((1, 2, 8, 8))
    layer, bottom, top = build_layer('type: "Pooling" pooling_param { pool: AVE kernel_size: 3 stride: 2 '
                                     'round_mode: FLOOR }', [x])
    got = forward(layer, bottom, top)[0]
    np.testing.assert_allclose(got, reference_pool(x, "AVE", (3, 3), (0, 0), (2, 2), ceil=False)[0])


def test_kernel_smaller_than_stride_leaves_an_empty_last_window():
    # Height 5, kernel 1, stride 3, ceil: windows start at 0, 3 and 6, the last past the bottom.
    x = RNG.standard_normal((1, 1, 5, 5))
    layer, bottom, top = build_layer('type: "Pooling" pooling_param { pool: MAX kernel_size: 1 stride: 3 }',
                                     [x], num_tops=2)
    values, mask = forward(layer, bottom, top)
    np.testing.assert_array_equal(values[0, 0, :2, :2], x[0, 0, ::3, ::3])
    np.testing.assert_array_equal(mask[0, 0], [[0, 3, -1], [15, 18, -1], [-1, -1, -1]])
    assert (values[0, 0, 2] == np.float32(-FLT_MAX)).all()
    layer, bottom, top = build_layer('type: "Pooling" pooling_param { pool: AVE kernel_size: 1 stride: 3 }', [x])
    values = forward(layer, bottom, top)[0]
    np.testing.assert_array_equal(values[0, 0, :2, :2], x[0, 0, ::3, ::3])
    assert (values[0, 0, 2] == 0).all() and (values[0, 0, :, 2] == 0).all()


@pytest.mark.parametrize("method", ["MAX", "AVE"])
@pytest.mark.parametrize("params,kernel,pad,stride,shape", CASES, ids=[c[0] for c in CASES])
def test_gradient(method, params, kernel, pad, stride, shape):
    text = f'type: "Pooling" pooling_param {{ pool: {method} {params} }}'
    check_gradient(text, [distinct(shape)], max_checks=60)


def test_max_gradient_with_mask_top_ignores_the_mask_diff():
    x = distinct((2, 2, 5, 5))
    text = 'type: "Pooling" pooling_param { pool: MAX kernel_size: 3 stride: 2 pad: 1 }'
    layer, bottom, top = build_layer(text, [x], num_tops=2)
    forward(layer, bottom, top)
    top[0].diff[...] = 1.0
    top[1].diff[...] = 123.0
    layer.backward(top, [True], bottom)
    # Every window routes exactly its top diff to one input.
    assert bottom[0].diff.sum() == pytest.approx(top[0].count)
    assert (top[1].diff == 123.0).all()


def test_stochastic_train_samples_window_members_and_routes_the_gradient():
    x = RNG.uniform(0.1, 1.0, (2, 3, 6, 6))
    text = 'type: "Pooling" pooling_param { pool: STOCHASTIC kernel_size: 3 stride: 2 }'
    layer, bottom, top = build_layer(text, [x], phase=caffe_pb2.TRAIN)
    got = forward(layer, bottom, top, seed=3)[0]
    rows = windows(6, 3, 0, 2)
    for i, (h0, h1, _) in enumerate(rows):
        for j, (w0, w1, _) in enumerate(rows):
            for n in range(2):
                for c in range(3):
                    assert got[n, c, i, j] in x[n, c, h0:h1, w0:w1]
    top[0].diff[...] = 1.0
    layer.backward(top, [True], bottom)
    assert bottom[0].diff.sum() == pytest.approx(top[0].count)
    assert np.isin(x[bottom[0].diff > 0], got).all()


def test_stochastic_train_draws_in_proportion_to_the_values():
    x = np.zeros((4000, 1, 1, 2))
    x[..., 0], x[..., 1] = 1.0, 3.0
    layer, bottom, top = build_layer('type: "Pooling" pooling_param { pool: STOCHASTIC kernel_h: 1 kernel_w: 2 }',
                                     [x], phase=caffe_pb2.TRAIN)
    got = forward(layer, bottom, top, seed=5)[0]
    assert abs((got == 3.0).mean() - 0.75) < 0.03


def test_stochastic_test_is_the_value_weighted_average():
    x = RNG.uniform(0.1, 1.0, (2, 2, 5, 5))
    text = 'type: "Pooling" pooling_param { pool: STOCHASTIC kernel_size: 2 stride: 2 }'
    layer, bottom, top = build_layer(text, [x])
    got = forward(layer, bottom, top)[0]
    for i, (h0, h1, _) in enumerate(windows(5, 2, 0, 2)):
        for j, (w0, w1, _) in enumerate(windows(5, 2, 0, 2)):
            win = x[:, :, h0:h1, w0:w1]
            np.testing.assert_allclose(got[:, :, i, j], (win ** 2).sum((2, 3)) / win.sum((2, 3)), rtol=1e-12)
    check_gradient(text, [x], max_checks=60)


@pytest.mark.parametrize("params,message", [
    ("pool: STOCHASTIC kernel_size: 2 pad: 1", "Padding implemented only for average and max pooling"),
    ("pool: MAX kernel_size: 2 pad: 2", r"pad_h \(2\) must be smaller than kernel_h \(2\)"),
    ("pool: MAX", "Filter size is required"),
    ("pool: MAX kernel_size: 9", "gives no output"),
])
def test_bad_parameters(params, message):
    with pytest.raises(LayerError, match=message):
        build_layer(f'type: "Pooling" pooling_param {{ {params} }}', [np.zeros((1, 1, 4, 4))])


def test_top_and_axis_counts():
    with pytest.raises(LayerError, match="at most 1 top"):
        build_layer('type: "Pooling" pooling_param { pool: AVE kernel_size: 2 }', [np.zeros((1, 1, 4, 4))],
                    num_tops=2)
    with pytest.raises(LayerError, match="Input must have 4 axes"):
        build_layer('type: "Pooling" pooling_param { kernel_size: 2 }', [np.zeros((1, 4, 4))])


@pytest.mark.gpu
@pytest.mark.parametrize("params,tops", [
    ("pool: MAX kernel_size: 3 stride: 2 pad: 1", 2),
    ("pool: MAX global_pooling: true", 1),
    ("pool: AVE kernel_h: 3 kernel_w: 2 stride: 2 pad: 1", 1),
    ("pool: STOCHASTIC kernel_size: 3 stride: 2", 1),
])
def test_cupy_matches_numpy(params, tops):
    import cupy

    x = distinct((2, 3, 9, 9)) + 1.0
    text = f'type: "Pooling" pooling_param {{ {params} }}'
    cpu, cpu_bottom, cpu_top = build_layer(text, [x], num_tops=tops)
    backend.set_mode_gpu()
    gpu, gpu_bottom, gpu_top = build_layer(text, [x], num_tops=tops, xp=cupy)
    for mine, theirs in zip(forward(gpu, gpu_bottom, gpu_top), forward(cpu, cpu_bottom, cpu_top)):
        np.testing.assert_allclose(cupy.asnumpy(mine), theirs, rtol=1e-12)
    dy = RNG.standard_normal(cpu_top[0].shape)
    cpu_top[0].diff[...] = dy
    gpu_top[0].diff[...] = cupy.asarray(dy)
    cpu.backward(cpu_top, [True], cpu_bottom)
    gpu.backward(gpu_top, [True], gpu_bottom)
    np.testing.assert_allclose(cupy.asnumpy(gpu_bottom[0].diff), cpu_bottom[0].diff, rtol=1e-12)


# -- ceil_mode, the forks' (BVLC pull request 3057, OpenCV) switch for round_mode ------------------
@pytest.mark.parametrize("params, kernel, pad, stride, shape", [
    ("pool: MAX kernel_size: 3 stride: 2 ceil_mode: false", (3, 3), (0, 0), (2, 2), (2, 3, 8, 9)),
    ("pool: AVE kernel_size: 3 stride: 2 pad: 1 ceil_mode: false", (3, 3), (1, 1), (2, 2), (2, 2, 8, 7)),
    ("pool: MAX kernel_size: 2 stride: 2 ceil_mode: true", (2, 2), (0, 0), (2, 2), (1, 2, 7, 7)),
])
def test_ceil_mode_matches_caffe_loops_and_opencv(params, kernel, pad, stride, shape):
    from opencv_reference import opencv_forward

    x = distinct(shape)
    ceil = "ceil_mode: false" not in params
    layer, bottom, top = build_layer(f'type: "Pooling" pooling_param {{ {params} }}', [x])
    got = forward(layer, bottom, top)[0]
    method = "MAX" if "MAX" in params else "AVE"
    np.testing.assert_allclose(got, reference_pool(x, method, kernel, pad, stride, ceil=ceil)[0], rtol=1e-12)
    header = 'input: "data" input_shape { ' + " ".join(f"dim: {d}" for d in shape) + " }\n"
    net = header + f'layer {{ name: "p" type: "Pooling" bottom: "data" top: "p" pooling_param {{ {params} }} }}'
    (reference,) = opencv_forward(net, {"data": x}, ["p"])
    np.testing.assert_allclose(got, reference, rtol=1e-5, atol=1e-6)
    check_gradient(f'type: "Pooling" pooling_param {{ {params} }}', [x], max_checks=40)


def test_ceil_mode_false_is_round_mode_floor_and_a_contradiction_is_an_error():
    x = distinct((1, 1, 9, 9))
    floor = forward(*build_layer('type: "Pooling" pooling_param { kernel_size: 2 stride: 2 round_mode: FLOOR }',
                                 [x]))[0]
    ceil_false = forward(*build_layer('type: "Pooling" pooling_param { kernel_size: 2 stride: 2 '
                                      'ceil_mode: false }', [x]))[0]
    assert floor.shape == (1, 1, 4, 4)
    np.testing.assert_array_equal(ceil_false, floor)
    both = forward(*build_layer('type: "Pooling" pooling_param { kernel_size: 2 stride: 2 ceil_mode: false '
                                'round_mode: FLOOR }', [x]))[0]
    np.testing.assert_array_equal(both, floor)
    with pytest.raises(LayerError, match="ceil_mode: false contradicts round_mode: CEIL"):
        build_layer('type: "Pooling" pooling_param { kernel_size: 2 ceil_mode: false round_mode: CEIL }', [x])
