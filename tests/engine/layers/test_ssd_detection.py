"""SSD's DetectionOutput (against OpenCV's dnn module and by hand) and
DetectionEvaluate (cases worked out by hand from SSD's rules)."""

import numpy as np
import pytest
from layer_check import build_layer, forward
from opencv_reference import opencv_forward

from engine.errors import LayerError

RNG = np.random.default_rng(5)
FEAT = (1, 4, 3, 4)  # a 3 x 4 feature map
IMAGE = (1, 3, 60, 80)
PRIOR_PARAMS = "min_size: 20 max_size: 40 aspect_ratio: 2 flip: true clip: false " \
               "variance: 0.1 variance: 0.1 variance: 0.2 variance: 0.2"
NUM_PRIORS = 3 * 4 * 4


def priors():
    layer, bottom, top = build_layer(f'type: "PriorBox" prior_box_param {{ {PRIOR_PARAMS} }}',
                                     [np.zeros(FEAT), np.zeros(IMAGE)], dtype=np.float32)
    return forward(layer, bottom, top)[0]


def softmax(logits):
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def detection_inputs(num, classes, loc_classes):
    loc = (RNG.standard_normal((num, NUM_PRIORS * loc_classes * 4)) * 0.5).astype(np.float32)
    conf = softmax(RNG.standard_normal((num, NUM_PRIORS, classes)) * 3).reshape(num, -1).astype(np.float32)
    return loc, conf


def inputs_text(**shapes):
    return "".join(f'layer {{ name: "{name}" type: "Input" top: "{name}" '
                   f'input_param {{ shape {{ {" ".join(f"dim: {d}" for d in shape)} }} }} }}\n'
                   for name, shape in shapes.items())


def sort_rows(rows):
    return rows[np.lexsort((rows[:, 3], -rows[:, 2], rows[:, 1], rows[:, 0]))]


# OpenCV's caffe.proto has no CORNER_SIZE, it wants priors without variances for
# variance_encoded_in_target, and its share_location: false path corrupts
# memory (so do top_k or keep_top_k left at -1): those are checked by hand below.
@pytest.mark.parametrize("params, classes, loc_classes", [
    ("share_location: true background_label_id: 0 code_type: CENTER_SIZE keep_top_k: 25 "
     "confidence_threshold: 0.1 nms_param { nms_threshold: 0.45 top_k: 30 }", 4, 1),
    ("share_location: true background_label_id: 0 code_type: CORNER keep_top_k: 500 "
     "confidence_threshold: 0.3 nms_param { nms_threshold: 0.3 top_k: 200 }", 3, 1),
    ("share_location: true background_label_id: 2 code_type: CORNER "
     "keep_top_k: 40 confidence_threshold: 0.05 nms_param { nms_threshold: 0.5 top_k: 60 eta: 0.9 }", 3, 1),
])
def test_detection_output_matches_opencv(params, classes, loc_classes):
    num = 2
    loc, conf = detection_inputs(num, classes, loc_classes)
    text = f'type: "DetectionOutput" detection_output_param {{ num_classes: {classes} {params} }}'
    layer, bottom, top = build_layer(text, [loc, conf, priors()], dtype=np.float32)
    ours = forward(layer, bottom, top)[0][0, 0]
    net = inputs_text(loc=loc.shape, conf=conf.shape, feat=FEAT, data=IMAGE) + (
        f'layer {{ name: "prior" type: "PriorBox" bottom: "feat" bottom: "data" top: "prior" '
        f'prior_box_param {{ {PRIOR_PARAMS} }} }}\n'
        f'layer {{ name: "det" type: "DetectionOutput" bottom: "loc" bottom: "conf" bottom: "prior" top: "det" '
        f'{text[len(chr(34).join(["type: ", "DetectionOutput", ""])):]} }}')
    theirs = opencv_forward(net, {"loc": loc, "conf": conf, "feat": np.zeros(FEAT), "data": np.zeros(IMAGE)},
                            ["det"])[0][0, 0]
    theirs = theirs[theirs[:, 2] > 0]  # OpenCV pads its output with zero rows up to keep_top_k per image
    assert len(ours) > 5
    # OpenCV orders the rows kept by keep_top_k by score; SSD (and we) by image, label, score.
    np.testing.assert_allclose(sort_rows(ours), sort_rows(theirs), rtol=1e-5, atol=1e-6)
    for image in range(num):
        rows = ours[ours[:, 0] == image]
        assert (np.diff(rows[:, 1]) >= 0).all()
        for label in set(rows[:, 1]):
            assert (np.diff(rows[rows[:, 1] == label, 2]) <= 0).all()


def by_hand_inputs():
    """Two priors, three classes (background 0), CORNER code with zero offsets."""
    prior = np.array([[[0, 0, .5, .5, .5, .5, 1, 1], [.1] * 8]], np.float32)
    loc = np.zeros((2, 8), np.float32)
    conf = np.array([[.1, .2, .7, .1, .6, .3],   # image 0: prior 0 is class 2 (.7), prior 1 class 1 (.6)
                     [.9, .05, .05, .9, .05, .05]], np.float32)  # image 1: nothing above 0.2
    return loc, conf, prior


def test_detection_output_rows_by_label_then_score_and_keep_top_k():
    text = ('type: "DetectionOutput" detection_output_param { num_classes: 3 keep_top_k: %d '
            'confidence_threshold: 0.2 nms_param { nms_threshold: 0.5 } }')
    layer, bottom, top = build_layer(text % -1, list(by_hand_inputs()), dtype=np.float32)
    rows = forward(layer, bottom, top)[0][0, 0]
    np.testing.assert_allclose(rows, [[0, 1, .6, .5, .5, 1, 1], [0, 2, .7, 0, 0, .5, .5], [0, 2, .3, .5, .5, 1, 1]],
                               rtol=1e-6)
    layer, bottom, top = build_layer(text % 2, list(by_hand_inputs()), dtype=np.float32)
    rows = forward(layer, bottom, top)[0][0, 0]
    np.testing.assert_allclose(rows[:, :3], [[0, 1, .6], [0, 2, .7]], rtol=1e-6)


def test_detection_output_per_class_locations_corner_size():
    loc, conf, prior = by_hand_inputs()
    loc = np.zeros((2, 2 * 3 * 4), np.float32)
    loc[0, 4:8] = [1, 1, 0, 0]      # prior 0, class 1: shifted by variance * offset * size = 0.05
    loc[0, 8:12] = [0, 0, -1, -1]   # prior 0, class 2
    text = ('type: "DetectionOutput" detection_output_param { num_classes: 3 share_location: false '
            'code_type: CORNER_SIZE confidence_threshold: 0.15 nms_param { nms_threshold: 0.5 } }')
    layer, bottom, top = build_layer(text, [loc, conf, prior], dtype=np.float32)
    rows = forward(layer, bottom, top)[0][0, 0]
    np.testing.assert_allclose(rows, [[0, 1, .6, .5, .5, 1, 1], [0, 1, .2, .05, .05, .5, .5],
                                      [0, 2, .7, 0, 0, .45, .45], [0, 2, .3, .5, .5, 1, 1]], rtol=1e-6)


def test_detection_output_variance_encoded_in_target():
    loc, conf, prior = by_hand_inputs()
    loc[0, :4] = [.1, .2, .1, .2]  # added as they are, not scaled by the variances
    text = ('type: "DetectionOutput" detection_output_param { num_classes: 3 variance_encoded_in_target: true '
            'confidence_threshold: 0.5 nms_param { nms_threshold: 0.5 } }')
    layer, bottom, top = build_layer(text, [loc, conf, prior], dtype=np.float32)
    rows = forward(layer, bottom, top)[0][0, 0]
    np.testing.assert_allclose(rows, [[0, 1, .6, .5, .5, 1, 1], [0, 2, .7, .1, .2, .6, .7]], rtol=1e-6)


def test_detection_output_marks_each_image_when_nothing_is_found():
    text = 'type: "DetectionOutput" detection_output_param { num_classes: 3 confidence_threshold: 0.95 }'
    layer, bottom, top = build_layer(text, list(by_hand_inputs()), dtype=np.float32)
    rows = forward(layer, bottom, top)[0]
    np.testing.assert_array_equal(rows, [[[[0, -1, -1, -1, -1, -1, -1], [1, -1, -1, -1, -1, -1, -1]]]])


@pytest.mark.parametrize("params, message", [
    ("", "Must specify num_classes"),
    ("num_classes: 4", "Number of priors must match number of confidence predictions"),
    ("num_classes: 3 nms_param { eta: 1.5 }", "eta must lie in"),
    ("num_classes: 3 visualize: true", "visualize is not supported"),
])
def test_detection_output_errors(params, message):
    with pytest.raises(LayerError, match=message):
        build_layer(f'type: "DetectionOutput" detection_output_param {{ {params} }}', list(by_hand_inputs()))


# -- DetectionEvaluate -----------------------------------------------------------------------

A, B, C, D = [0, 0, .5, .5], [.5, .5, 1, 1], [0, .5, .5, 1], [.2, .2, .6, .6]
GT = np.array([[[[0, 1, 0, *A, 0], [0, 1, 1, *B, 1], [0, 2, 2, *C, 0], [1, 2, 0, *D, 0],
                 [-1, 1, 0, *A, 0], [3, 1, 0, *A, 0]]]])  # rows after the first item -1 are not read
DET = np.array([[[[0, 1, .6, *A], [0, 1, .9, *A], [0, 1, .5, *B], [0, 2, .7, .9, .9, 1, 1],
                  [1, 1, .8, *A], [2, 2, .3, *D], [3, -1, -1, -1, -1, -1, -1]]]])


def evaluate(params, det=DET, gt=GT):
    text = f'type: "DetectionEvaluate" detection_evaluate_param {{ num_classes: 3 {params} }}'
    layer, bottom, top = build_layer(text, [det, gt], dtype=np.float32)
    return forward(layer, bottom, top)[0][0, 0]


def test_detection_evaluate_by_hand():
    rows = evaluate("evaluate_difficult_gt: false")
    np.testing.assert_allclose(rows, [
        [-1, 1, 1, -1, -1], [-1, 2, 2, -1, -1],   # ground-truth counts (the difficult box not counted)
        [0, 1, .9, 1, 0], [0, 1, .6, 0, 1],       # best first; the second hit on the same box is false
        [0, 1, .5, 0, 0],                         # matches a difficult box: neither
        [0, 2, .7, 0, 1],                         # overlaps nothing
        [1, 1, .8, 0, 1], [2, 2, .3, 0, 1],       # no ground truth of its label / image
    ], rtol=1e-6)
    rows = evaluate("")  # evaluate_difficult_gt defaults to true
    assert rows[0, 2] == 2 and list(rows[4, 3:]) == [1, 0]


def test_detection_evaluate_in_pixels_with_name_size_file(tmp_path):
    sizes = tmp_path / "sizes.txt"
    sizes.write_text("img0 10 10\n")
    gt = np.array([[[[0, 1, 0, 0, 0, .4, .4, 0]]]])
    det = np.array([[[[0, 1, .5, .4, 0, .8, .4]]]])
    # Normalized boxes only touch; in pixels they share a column: 5 / 45 > 0.1.
    assert list(evaluate("overlap_threshold: 0.1", det, gt)[2, 3:]) == [0, 1]
    assert list(evaluate(f'overlap_threshold: 0.1 name_size_file: "{sizes}"', det, gt)[2, 3:]) == [1, 0]


def test_detection_evaluate_errors(tmp_path):
    with pytest.raises(LayerError, match="Must provide num_classes"):
        build_layer('type: "DetectionEvaluate"', [DET, GT])
    with pytest.raises(LayerError, match=r"must be shaped \(1, 1, N, 7\)"):
        evaluate("", det=np.zeros((1, 1, 2, 6)))
    with pytest.raises(LayerError, match="Failed to open name size file"):
        evaluate(f'name_size_file: "{tmp_path / "none.txt"}"')
    with pytest.raises(LayerError, match="background label in the detection results"):
        evaluate("", det=np.array([[[[0, 0, .5, *A]]]]))


# -- result files (save_output_param) ----------------------------------------------------------

LABEL_MAP = """item { name: "none_of_the_above" label: 0 display_name: "background" }
item { name: "cat" label: 1 display_name: "cat" }
item { name: "dog" label: 2 display_name: "dog" }
"""


@pytest.mark.parametrize("output_format", ["VOC", "ILSVRC", "COCO"])
def test_detection_output_writes_result_files(tmp_path, output_format):
    (tmp_path / "labelmap.prototxt").write_text(LABEL_MAP)
    (tmp_path / "sizes.txt").write_text("img0 100 200\nimg1 50 50\n")
    out = tmp_path / "results"
    text = ('type: "DetectionOutput" detection_output_param { num_classes: 3 confidence_threshold: 0.2 '
            f'nms_param {{ nms_threshold: 0.5 }} save_output_param {{ output_directory: "{out}" '
            f'output_name_prefix: "det_" output_format: "{output_format}" '
            f'label_map_file: "{tmp_path / "labelmap.prototxt"}" name_size_file: "{tmp_path / "sizes.txt"}" }} }}')
    layer, bottom, top = build_layer(text, list(by_hand_inputs()), dtype=np.float32)
    forward(layer, bottom, top)  # one batch of two images: the whole test set
    if output_format == "VOC":
        assert (out / "det_cat.txt").read_text() == "img0 0.6 100 50 200 100\n"
        assert (out / "det_dog.txt").read_text() == "img0 0.7 0 0 100 50\nimg0 0.3 100 50 200 100\n"
    elif output_format == "ILSVRC":
        assert (out / "det_.txt").read_text() == ("img0 1 0.6 100 50 200 100\nimg0 2 0.7 0 0 100 50\n"
                                                  "img0 2 0.3 100 50 200 100\n")
    else:
        import json
        rows = json.loads((out / "det_.json").read_text())
        assert [(r["image_id"], r["category_id"], r["bbox"]) for r in rows] == [
            ("img0", "cat", [100, 50, 100, 50]), ("img0", "dog", [0, 0, 100, 50]), ("img0", "dog", [100, 50, 100, 50])]
        assert [r["score"] for r in rows] == pytest.approx([.6, .7, .3])


def test_detection_output_save_errors(tmp_path):
    (tmp_path / "labelmap.prototxt").write_text(LABEL_MAP)
    text = ('type: "DetectionOutput" detection_output_param { num_classes: 3 save_output_param { '
            f'output_directory: "{tmp_path}" output_format: "VOC" label_map_file: "{tmp_path / "labelmap.prototxt"}" '
            f'name_size_file: "{tmp_path / "missing.txt"}" }} }}')
    with pytest.raises(LayerError, match="Failed to open name size file"):
        build_layer(text, list(by_hand_inputs()))


def test_detection_layers_on_both_devices(mode):
    from engine.backend import array_module, to_host

    loc, conf = detection_inputs(2, 4, 1)
    text = ('type: "DetectionOutput" detection_output_param { num_classes: 4 code_type: CENTER_SIZE '
            'keep_top_k: 20 confidence_threshold: 0.1 nms_param { nms_threshold: 0.45 top_k: 30 } }')
    rows = []
    for xp in (np, array_module()):
        layer, bottom, top = build_layer(text, [loc, conf, priors()], dtype=np.float32, xp=xp)
        det = forward(layer, bottom, top)[0]
        layer, bottom, top = build_layer('type: "DetectionEvaluate" detection_evaluate_param { num_classes: 4 }',
                                         [to_host(det), GT], dtype=np.float32, xp=xp)
        rows.append((to_host(det), to_host(forward(layer, bottom, top)[0])))
    np.testing.assert_array_equal(rows[1][0], rows[0][0])
    np.testing.assert_array_equal(rows[1][1], rows[0][1])
