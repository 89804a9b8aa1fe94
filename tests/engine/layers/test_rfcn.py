"""PSROIPooling against OpenCV's dnn importer and a transcription of the fork's kernels,
its gradient in float64, and its one-line errors."""

import numpy as np
import pytest
from layer_check import build_layer, check_gradient, forward

from engine.errors import LayerError
from engine.layers.fast_rcnn import round_half_away

cv2 = pytest.importorskip("cv2")

RNG = np.random.default_rng(3)

ROIS = np.array([[0, 1, 2, 9, 10],
                 [1, 0, 0, 15, 13],
                 [0, 5.4, 3.5, 40, 30],     # runs off the map
                 [1, 6.6, 4.2, 6.6, 4.2],   # a single point
                 [0, 9, 9, 2, 3]],          # end before start
                dtype=np.float32)


def text(scale, dim, group):
    return (f'type: "PSROIPooling" psroi_pooling_param {{ spatial_scale: {scale} '
            f'output_dim: {dim} group_size: {group} }}')


@pytest.mark.parametrize("scale, dim, group", [(0.5, 2, 2), (1.0, 1, 3), (0.25, 3, 2)])
def test_psroi_pooling_matches_opencv(tmp_path, scale, dim, group):
    channels = dim * group * group
    x = RNG.standard_normal((2, channels, 7, 8)).astype(np.float32)
    prototxt = (f'input: "data" input_shape {{ dim: 2 dim: {channels} dim: 7 dim: 8 }}\n'
                f'input: "rois" input_shape {{ dim: {len(ROIS)} dim: 5 }}\n'
                f'layer {{ name: "pool" {text(scale, dim, group)} bottom: "data" bottom: "rois" top: "out" }}\n')
    path = tmp_path / "net.prototxt"
    path.write_text(prototxt)
    net = cv2.dnn.readNetFromCaffe(str(path))
    net.enableFusion(False)
    net.setInput(x, "data")
    net.setInput(ROIS, "rois")
    expected = net.forward("pool")
    layer, bottom, top = build_layer(text(scale, dim, group), [x, ROIS], dtype=np.float32)
    (out,) = forward(layer, bottom, top)
    assert out.shape == (len(ROIS), dim, group, group)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)


def fork_psroi(x, rois, scale, dim, group):
    """The fork's PSROIPoolingForward and PSROIPoolingBackwardAtomic, one output at a time."""
    n, c, h, w = x.shape
    out = np.zeros((len(rois), dim, group, group))
    spread = []  # (image, channel, rows, cols, 1 / area) per non-empty output
    for r, roi in enumerate(rois):
        b = int(roi[0])
        x1, y1, x2, y2 = round_half_away(roi[1:])
        sw, sh, ew, eh = x1 * scale, y1 * scale, (x2 + 1) * scale, (y2 + 1) * scale
        bh, bw = max(eh - sh, 0.1) / group, max(ew - sw, 0.1) / group
        for k, i, j in np.ndindex(dim, group, group):
            hs = min(max(int(np.floor(i * bh + sh)), 0), h)
            he = min(max(int(np.ceil((i + 1) * bh + sh)), 0), h)
            ws = min(max(int(np.floor(j * bw + sw)), 0), w)
            we = min(max(int(np.ceil((j + 1) * bw + sw)), 0), w)
            channel = (k * group + i) * group + j
            if he <= hs or we <= ws:
                continue
            area = (he - hs) * (we - ws)
            out[r, k, i, j] = x[b, channel, hs:he, ws:we].sum() / area
            spread.append(((r, k, i, j), b, channel, slice(hs, he), slice(ws, we), area))
    return out, spread


def test_psroi_pooling_forward_and_backward_follow_the_fork():
    x = RNG.standard_normal((2, 8, 6, 7))
    layer, bottom, top = build_layer(text(0.5, 2, 2), [x, ROIS])
    (out,) = forward(layer, bottom, top)
    expected, spread = fork_psroi(x, ROIS, 0.5, 2, 2)
    np.testing.assert_allclose(out, expected, atol=1e-12)
    dy = RNG.standard_normal(out.shape)
    top[0].diff[...] = dy
    layer.run_backward(top, [True, False], bottom)
    want = np.zeros_like(x)
    for index, b, channel, rows, cols, area in spread:
        want[b, channel, rows, cols] += dy[index] / area
    np.testing.assert_allclose(bottom[0].diff, want, atol=1e-12)


def test_psroi_pooling_gradient():
    check_gradient(text(0.5, 2, 3), [RNG.standard_normal((2, 18, 6, 7)), ROIS], bottoms_checked=[0])


def test_psroi_pooling_errors():
    x = np.zeros((1, 8, 4, 4))
    with pytest.raises(LayerError, match="psroi_pooling_param.output_dim is required"):
        build_layer('type: "PSROIPooling" psroi_pooling_param { spatial_scale: 1 group_size: 2 }', [x, ROIS[:1]])
    with pytest.raises(LayerError, match="psroi_pooling_param.spatial_scale is required"):
        build_layer('type: "PSROIPooling"', [x, ROIS[:1]])
    with pytest.raises(LayerError, match="group_size must be > 0"):
        build_layer(text(1, 2, 0), [x, ROIS[:1]])
    with pytest.raises(LayerError, match="8 channels, output_dim \\* group_size\\^2 = 18"):
        build_layer(text(1, 2, 3), [x, ROIS[:1]])
    with pytest.raises(LayerError, match="ROI 0 has batch index 1"):
        layer, bottom, top = build_layer(text(1, 2, 2), [x, ROIS[1:2]])
        forward(layer, bottom, top)
    with pytest.raises(LayerError, match=r"^layer 'layer' \(PSROIPooling\): ROI blob must hold 5 values per ROI "
                                         r".*got shape \(2, 6\)$"):
        build_layer(text(1, 2, 2), [x, np.zeros((2, 6))])
