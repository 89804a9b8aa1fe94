"""SSD's box arithmetic (engine/detection): cases computed by hand from
weiliu89/caffe's bbox_util rules."""

import numpy as np
import pytest

from engine import caffe_pb2
from engine.detection import (BIPARTITE, CENTER_SIZE, CORNER, CORNER_SIZE, PER_PREDICTION, apply_nms,
                              apply_nms_fast, bbox_size, compute_ap, decode_bboxes, encode_bboxes,
                              jaccard_overlap, match_bboxes, output_bboxes)

F = np.float32


def boxes(*rows):
    return np.array(rows, dtype=F)


def test_jaccard_overlap_normalized_and_pixel():
    a = boxes([0, 0, .5, .5])
    b = boxes([.25, .25, .75, .75], [.5, 0, 1, .5], [.6, .6, .4, .4])
    np.testing.assert_allclose(jaccard_overlap(a, b)[0], [.0625 / .4375, 0, 0], rtol=1e-6)
    # Pixel boxes count both end pixels; touching boxes then overlap by one column.
    p = boxes([0, 0, 9, 9])
    q = boxes([5, 5, 14, 14], [9, 0, 18, 9])
    np.testing.assert_allclose(jaccard_overlap(p, q, normalized=False)[0], [25 / 175, 10 / 190], rtol=1e-6)
    assert bbox_size(boxes([.5, .5, .4, .9]))[0] == 0


PRIOR = boxes([.1, .1, .3, .5])
GT = boxes([.15, .2, .35, .6])
VAR = boxes([.1, .1, .2, .2])


@pytest.mark.parametrize("code_type, expected", [
    (CORNER, [.5, 1, .25, .5]),
    (CENTER_SIZE, [2.5, 2.5, 0, 0]),
    (CORNER_SIZE, [2.5, 2.5, 1.25, 1.25]),
])
def test_encode_by_hand_and_decode_round_trip(code_type, expected):
    code = encode_bboxes(PRIOR, VAR, code_type, False, GT)
    np.testing.assert_allclose(code[0], expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(decode_bboxes(PRIOR, VAR, code_type, False, code), GT, rtol=1e-5, atol=1e-6)
    # Variance carried by the prediction: targets are not divided by it.
    raw = encode_bboxes(PRIOR, VAR, code_type, True, GT)
    np.testing.assert_allclose(raw[0] / VAR[0], code[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(decode_bboxes(PRIOR, VAR, code_type, True, raw), GT, rtol=1e-5, atol=1e-6)


def test_decode_batches_and_clips():
    loc = np.zeros((2, 1, 4), F)
    loc[1, 0] = [0, 0, 10, 10]  # CENTER_SIZE: width * exp(2)
    out = decode_bboxes(PRIOR, VAR, CENTER_SIZE, False, loc, clip=True)
    np.testing.assert_allclose(out[0, 0], PRIOR[0], rtol=1e-6)
    assert out[1, 0].min() == 0 and out[1, 0].max() <= 1


def test_center_size_needs_boxes_with_area():
    with pytest.raises(ValueError, match="no width or height"):
        encode_bboxes(PRIOR, VAR, CENTER_SIZE, False, boxes([.2, .2, .2, .4]))


G = boxes([0, 0, .4, .4], [.5, .5, .9, .9])
P = boxes([0, 0, .4, .4], [0, 0, .4, .2], [.5, .5, .9, .7], [.5, .5, .9, .6], [.95, .95, 1, 1])


def test_matching_bipartite_then_per_prediction():
    idx, ov = match_bboxes(G, P, PER_PREDICTION, 0.5)
    np.testing.assert_array_equal(idx, [0, 0, 1, -1, -1])
    np.testing.assert_allclose(ov, [1, .5, .5, .25, 0], rtol=1e-6)
    idx, ov = match_bboxes(G, P, BIPARTITE, 0.5)
    np.testing.assert_array_equal(idx, [0, -1, 1, -1, -1])
    np.testing.assert_allclose(ov, [1, .5, .5, .25, 0], rtol=1e-6)


def test_bipartite_records_the_matched_pairs_overlap_and_breaks_ties_by_index():
    gt = boxes([0, 0, .4, .4], [0, 0, .4, .3])
    pred = boxes([0, 0, .4, .4], [0, 0, .4, .2], [0, 0, .4, .4])
    idx, ov = match_bboxes(gt, pred, BIPARTITE, 0.5)
    # gt 0 takes prediction 0 (1.0, the lower index of two equal ones); gt 1
    # then takes the best free one, prediction 2 (0.75), whose recorded overlap
    # is that pair's, not its best (1.0 with gt 0).
    np.testing.assert_array_equal(idx, [0, -1, 1])
    np.testing.assert_allclose(ov, [1, .08 / .12, .75], rtol=1e-5)


def test_matching_ignores_cross_boundary_predictions():
    pred = boxes([-.1, 0, .4, .4], [0, 0, .4, .4])
    idx, ov = match_bboxes(G[:1], pred, PER_PREDICTION, 0.5, ignore_cross_boundary_bbox=True)
    np.testing.assert_array_equal(idx, [-2, 0])
    assert ov[0] == 0


NMS_BOXES = boxes([0, 0, 1, 1], [0, 0, 1, .6], [0, 0, .5, .5], [.6, .6, .7, .7])
NMS_SCORES = np.array([.9, .8, .7, .05], F)


def test_nms_fast_threshold_top_k_and_eta():
    assert apply_nms_fast(NMS_BOXES, NMS_SCORES, 0.1, 0.5) == [0, 2]
    assert apply_nms_fast(NMS_BOXES, NMS_SCORES, 0.1, 0.7) == [0, 1, 2]
    assert apply_nms_fast(NMS_BOXES, NMS_SCORES, 0.1, 0.7, top_k=1) == [0]
    # eta: after a kept box the threshold drops from 0.7 to 0.35, removing the 0.6 overlap.
    assert apply_nms_fast(NMS_BOXES, NMS_SCORES, 0.1, 0.7, eta=0.5) == [0, 2]
    assert apply_nms_fast(NMS_BOXES, NMS_SCORES, 0.95, 0.7) == []


def test_nms_for_mining_drops_small_boxes_and_stops_at_top_k():
    b = np.concatenate([boxes([.2, .2, .2, .2]), NMS_BOXES])
    s = np.array([1.0, .9, .8, .7, .05], F)
    assert apply_nms(b, s, 0.5) == [1, 3, 4]
    assert apply_nms(b, s, 0.5, top_k=2) == [1]
    assert apply_nms(b, s, 0.5, top_k=0) == []


TP = [(.9, 1), (.8, 0), (.7, 1)]
FP = [(.9, 0), (.8, 1), (.7, 0)]


@pytest.mark.parametrize("version, expected", [("11point", 6 / 11), ("MaxIntegral", 5 / 9), ("Integral", 5 / 9)])
def test_average_precision_by_hand(version, expected):
    prec, rec, ap = compute_ap(TP, 3, FP, version)
    np.testing.assert_allclose(prec, [1, .5, 2 / 3], rtol=1e-6)
    np.testing.assert_allclose(rec, [1 / 3, 1 / 3, 2 / 3], rtol=1e-6)
    assert ap == pytest.approx(expected, rel=1e-6)
    assert compute_ap([], 3, [], version)[2] == 0


def test_average_precision_rejects_bad_input():
    with pytest.raises(ValueError, match="complementary"):
        compute_ap(TP, 3, TP, "Integral")
    with pytest.raises(ValueError, match="Unknown ap_version"):
        compute_ap(TP, 3, FP, "VOC")


def test_output_bboxes_clip_scale_and_undo_padding():
    out, size = output_bboxes(boxes([-.1, .2, .5, 1.2]), 100, 200)
    np.testing.assert_allclose(out[0], [0, 20, 100, 100], rtol=1e-6)
    assert size[0] == 101 * 81
    resize = caffe_pb2.ResizeParameter(resize_mode=caffe_pb2.ResizeParameter.FIT_LARGE_SIZE_AND_PAD,
                                       height=300, width=300)
    out, _ = output_bboxes(boxes([.1, .25, .5, .5]), 100, 200, resize)
    np.testing.assert_allclose(out[0], [20, 0, 100, 50], rtol=1e-5, atol=1e-4)


def nms_loop(boxes, scores, score_threshold, nms_threshold, eta, top_k):
    """ApplyNMSFast written as SSD's loop, box by box."""
    order = sorted((i for i in range(len(scores)) if scores[i] > score_threshold), key=lambda i: -scores[i])
    order = order[:top_k] if top_k > -1 else order
    kept, threshold = [], nms_threshold
    for i in order:
        if all(jaccard_overlap(boxes[i:i + 1], boxes[k:k + 1])[0, 0] <= np.float32(threshold) for k in kept):
            kept.append(i)
            if eta < 1 and threshold > 0.5:
                threshold *= eta
    return kept


@pytest.mark.parametrize("eta, limit", [(1.0, 2048), (0.9, 2048), (1.0, 10), (0.9, 10)])
def test_nms_fast_paths_agree_with_ssds_loop(monkeypatch, eta, limit):
    from engine.detection import matching

    monkeypatch.setattr(matching, "_NMS_MATRIX_LIMIT", limit)
    rng = np.random.default_rng(8)
    corner = rng.uniform(0, .8, (200, 2))
    b = np.concatenate([corner, corner + rng.uniform(.05, .3, (200, 2))], axis=1).astype(F)
    s = rng.uniform(0, 1, 200).astype(F)
    assert apply_nms_fast(b, s, 0.2, 0.6, eta, 100) == nms_loop(b, s, 0.2, 0.6, eta, 100)
