"""ROIPooling against OpenCV's dnn importer, SmoothL1Loss against the forks' formulas (Fast R-CNN's, SSD's),
gradients in float64, and the one-line errors for bad settings and inputs."""

import numpy as np
import pytest
from layer_check import build_layer, check_gradient, forward

from engine.errors import LayerError
from engine.layers.fast_rcnn import round_half_away

cv2 = pytest.importorskip("cv2")

RNG = np.random.default_rng(11)

ROIS = np.array([[0, 1, 2, 9, 10],      # inside the map
                 [1, 0, 0, 13, 11],     # the whole map
                 [0, 5, 3, 40, 30],     # runs off the map
                 [1, 6.6, 4.2, 7.4, 5.0],  # smaller than a bin
                 [0, 9, 9, 2, 3]],      # end before start: pooled as 1 x 1
                dtype=np.float32)


def opencv_forward(prototxt, tmp_path, inputs, layer):
    path = tmp_path / "net.prototxt"
    path.write_text(prototxt)
    net = cv2.dnn.readNetFromCaffe(str(path))
    net.enableFusion(False)
    for name, value in inputs.items():
        net.setInput(value, name)
    return net.forward(layer)


def roi_text(ph, pw, scale):
    return (f'type: "ROIPooling" roi_pooling_param {{ pooled_h: {ph} pooled_w: {pw} '
            f'spatial_scale: {scale} }}')


@pytest.mark.parametrize("ph, pw, scale", [(2, 3, 0.5), (3, 3, 1.0), (7, 7, 0.25)])
def test_roi_pooling_matches_opencv(tmp_path, ph, pw, scale):
    x = RNG.standard_normal((2, 4, 7, 8)).astype(np.float32)
    prototxt = (f'input: "data" input_shape {{ dim: 2 dim: 4 dim: 7 dim: 8 }}\n'
                f'input: "rois" input_shape {{ dim: {len(ROIS)} dim: 5 }}\n'
                f'layer {{ name: "pool" {roi_text(ph, pw, scale)} bottom: "data" bottom: "rois" top: "out" }}\n')
    expected = opencv_forward(prototxt, tmp_path, {"data": x, "rois": ROIS}, "pool")
    layer, bottom, top = build_layer(roi_text(ph, pw, scale), [x, ROIS], dtype=np.float32)
    (out,) = forward(layer, bottom, top)
    assert out.shape == (len(ROIS), 4, ph, pw)
    np.testing.assert_array_equal(out, expected)


def fork_roi_pool(x, rois, ph, pw, scale):
    """The fork's Forward_cpu loops, transcribed: values and argmax."""
    n, c, h, w = x.shape
    out = np.zeros((len(rois), c, ph, pw))
    arg = -np.ones((len(rois), c, ph, pw), dtype=np.int64)
    for r, roi in enumerate(rois):
        b = int(roi[0])
        sw, sh, ew, eh = (int(round_half_away(v * scale)) for v in roi[1:])
        rh, rw = max(eh - sh + 1, 1), max(ew - sw + 1, 1)
        for k in range(c):
            for i in range(ph):
                for j in range(pw):
                    hs = min(max(int(np.floor(i * rh / ph)) + sh, 0), h)
                    he = min(max(int(np.ceil((i + 1) * rh / ph)) + sh, 0), h)
                    ws = min(max(int(np.floor(j * rw / pw)) + sw, 0), w)
                    we = min(max(int(np.ceil((j + 1) * rw / pw)) + sw, 0), w)
                    best = 0.0 if (he <= hs or we <= ws) else -np.inf
                    for y in range(hs, he):
                        for z in range(ws, we):
                            if x[b, k, y, z] > best:
                                best, arg[r, k, i, j] = x[b, k, y, z], y * w + z
                    out[r, k, i, j] = best
    return out, arg


def test_roi_pooling_argmax_and_backward_follow_the_fork():
    x = RNG.standard_normal((2, 3, 6, 7))
    x[0, 0, 2:4, 2:4] = 5.0  # ties: the first in row-major order wins
    layer, bottom, top = build_layer(roi_text(2, 2, 0.5), [x, ROIS])
    (out,) = forward(layer, bottom, top)
    expected, arg = fork_roi_pool(x, ROIS, 2, 2, 0.5)
    np.testing.assert_allclose(out, expected)
    np.testing.assert_array_equal(layer.argmax, arg)
    dy = RNG.standard_normal(out.shape)
    top[0].diff[...] = dy
    layer.run_backward(top, [True, False], bottom)
    want = np.zeros_like(x)
    for r, roi in enumerate(ROIS):
        if roi[3] * 0.5 < roi[1] * 0.5 or roi[4] * 0.5 < roi[2] * 0.5:
            continue  # the fork's backward skips regions that end before they start
        for k in range(3):
            for i, j in np.ndindex(2, 2):
                if arg[r, k, i, j] >= 0:
                    want[int(roi[0]), k].flat[arg[r, k, i, j]] += dy[r, k, i, j]
    np.testing.assert_allclose(bottom[0].diff, want)


def test_roi_pooling_gradient():
    x = RNG.permutation(2 * 3 * 6 * 7).reshape(2, 3, 6, 7) * 0.01  # distinct values: no ties
    check_gradient(roi_text(3, 2, 0.5), [x, ROIS[:4]], bottoms_checked=[0])


def test_roi_pooling_rounds_half_away_from_zero():
    np.testing.assert_array_equal(round_half_away(np.array([0.5, 1.5, 2.5, -0.5, -2.5, 2.4999])),
                                  [1, 2, 3, -1, -3, 2])


def test_roi_pooling_errors():
    x = np.zeros((1, 2, 4, 4))
    with pytest.raises(LayerError, match="pooled_h must be > 0"):
        build_layer('type: "ROIPooling" roi_pooling_param { pooled_w: 2 }', [x, ROIS[:1]])
    with pytest.raises(LayerError, match="pooled_w must be > 0"):
        build_layer('type: "ROIPooling" roi_pooling_param { pooled_h: 2 }', [x, ROIS[:1]])
    with pytest.raises(LayerError, match=r"5 values per ROI \(batch_index, x1, y1, x2, y2\), got shape \(2, 4\)"):
        build_layer(roi_text(2, 2, 1), [x, np.zeros((2, 4))])  # at set-up, before any forward
    with pytest.raises(LayerError, match="ROI 0 has batch index 1, outside"):
        layer, bottom, top = build_layer(roi_text(2, 2, 1), [x, ROIS[1:2]])
        forward(layer, bottom, top)


# -- SmoothL1Loss ---------------------------------------------------------------------------

def fork_smooth_l1(pred, target, inside, outside, sigma):
    """The fork's SmoothL1Forward kernel and its sums, element by element."""
    s2 = sigma * sigma
    total = 0.0
    for p, t, wi, wo in zip(pred.ravel(), target.ravel(), inside.ravel(), outside.ravel()):
        d = wi * (p - t)
        total += wo * (0.5 * d * d * s2 if abs(d) < 1.0 / s2 else abs(d) - 0.5 / s2)
    return total / pred.shape[0]


def test_smooth_l1_value_with_and_without_weights():
    pred, target = RNG.standard_normal((4, 8)) * 2, RNG.standard_normal((4, 8, 1, 1)) * 2
    inside, outside = RNG.integers(0, 2, (4, 8)).astype(float), RNG.random((4, 8))
    text = 'type: "SmoothL1Loss" smooth_l1_loss_param { sigma: 3.0 }'
    layer, bottom, top = build_layer(text, [pred, target, inside, outside])
    (loss,) = forward(layer, bottom, top)
    assert layer.loss(0) == 1.0
    np.testing.assert_allclose(loss, fork_smooth_l1(pred, target, inside, outside, 3.0))
    layer, bottom, top = build_layer('type: "SmoothL1Loss"', [pred, target])
    (loss,) = forward(layer, bottom, top)
    np.testing.assert_allclose(loss, fork_smooth_l1(pred, target, np.ones(32), np.ones(32), 1.0))


def test_smooth_l1_gradients_reach_pred_and_target():
    pred = RNG.standard_normal((3, 6))
    inside, outside = RNG.uniform(0.5, 1.5, (3, 6)), RNG.random((3, 6))
    # Every |inside * (pred - target)| away from the kinks at 0 and 1 / sigma^2.
    d = np.concatenate([RNG.uniform(0.2, 0.8, (3, 3)), RNG.uniform(1.3, 2, (3, 3))], 1) * RNG.choice([-1, 1], (3, 6))
    layer = check_gradient('type: "SmoothL1Loss"', [pred, pred - d / inside, inside, outside],
                           bottoms_checked=[0, 1])
    assert layer.allow_force_backward(1)
    check_gradient('type: "SmoothL1Loss" smooth_l1_loss_param { sigma: 0.6 }', [pred, pred - d],
                   bottoms_checked=[0, 1])


def ssd_smooth_l1(pred, target, weights):
    """SSD's SmoothL1Loss: its forward loop over d = w * (pred - target), and its backward's f'(d)."""
    d = (weights * (pred - target)).ravel()
    loss = sum(0.5 * v * v if abs(v) < 1 else abs(v) - 0.5 for v in d) / pred.shape[0]
    slope = np.array([v if abs(v) < 1 else np.sign(v) for v in d]).reshape(pred.shape) / pred.shape[0]
    return loss, slope


def test_smooth_l1_with_ssd_weights_bottom():
    pred, target = RNG.standard_normal((4, 8)) * 2, RNG.standard_normal((4, 8)) * 2
    weights = RNG.random((4, 8)) * 2
    layer, bottom, top = build_layer('type: "SmoothL1Loss"', [pred, target, weights])
    (loss,) = forward(layer, bottom, top)
    expected_loss, expected_slope = ssd_smooth_l1(pred, target, weights)
    np.testing.assert_allclose(loss, expected_loss)
    top[0].diff[...] = 1.0
    layer.backward(top, [True, True, False], bottom)
    np.testing.assert_allclose(bottom[0].diff, expected_slope)  # the fork's: not scaled by the weights
    np.testing.assert_allclose(bottom[1].diff, -expected_slope)
    # With SSD's 0/1 masks that gradient is the true one.
    d = np.concatenate([RNG.uniform(0.2, 0.8, (3, 3)), RNG.uniform(1.3, 2, (3, 3))], 1) * RNG.choice([-1, 1], (3, 6))
    pred = RNG.standard_normal((3, 6))
    check_gradient('type: "SmoothL1Loss"', [pred, pred - d, RNG.integers(0, 2, (3, 6)).astype(float)],
                   bottoms_checked=[0, 1])


def test_smooth_l1_errors():
    a = np.zeros((2, 4))
    with pytest.raises(LayerError, match=r"weights shape \(2, 3\) does not match"):
        build_layer('type: "SmoothL1Loss"', [a, a, np.zeros((2, 3))])
    with pytest.raises(LayerError, match=r"target shape \(2, 5\) does not match"):
        build_layer('type: "SmoothL1Loss"', [a, np.zeros((2, 5))])
    with pytest.raises(LayerError, match=r"outside weights shape \(2, 3\) does not match"):
        build_layer('type: "SmoothL1Loss"', [a, a, a, np.zeros((2, 3))])


def test_a_bad_roi_blob_in_a_net_is_one_line_naming_file_line_and_layer(tmp_path):
    from engine import caffe_pb2
    from engine.errors import NetError
    from engine.net import Net

    path = tmp_path / "rois.prototxt"
    path.write_text('layer { name: "in" type: "Input" top: "conv" top: "rois"\n'
                    '  input_param { shape { dim: 1 dim: 2 dim: 4 dim: 4 } shape { dim: 3 dim: 4 } } }\n'
                    'layer { name: "pool" type: "ROIPooling" bottom: "conv" bottom: "rois" top: "pooled"\n'
                    '  roi_pooling_param { pooled_h: 2 pooled_w: 2 spatial_scale: 1 } }\n')
    with pytest.raises(NetError, match=r"rois.prototxt:3: layer 'pool' \(ROIPooling\): ROI blob must hold "
                                         r"5 values per ROI .* got shape \(3, 4\)$") as info:
        Net(str(path), phase=caffe_pb2.TEST)
    assert "\n" not in str(info.value)
