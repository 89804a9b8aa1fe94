"""SSD's box arithmetic for augmentation, against values worked out by hand from
weiliu89/caffe's bbox_util.cpp, sampler.cpp and im_transforms.cpp."""

import numpy as np
import pytest

from engine import caffe_pb2, formats
from engine.data import ssd_boxes as sb
from engine.errors import DataError


def parse(text, message):
    return formats.parse_text(text, message)


def test_coverage_locate_project_and_clip():
    a, b = (0.0, 0.0, 0.5, 0.5), (0.25, 0.25, 1.0, 1.0)
    assert sb.coverage(a, b) == pytest.approx(0.0625 / 0.25)
    assert sb.coverage(b, a) == pytest.approx(0.0625 / 0.5625)
    assert sb.jaccard(a, b) == pytest.approx(0.0625 / (0.25 + 0.5625 - 0.0625))
    assert sb.locate((0.2, 0.4, 0.6, 0.8), (0.5, 0.5, 1.0, 1.0)) == pytest.approx((0.4, 0.6, 0.6, 0.8))
    # Projected into the window (0.2, 0.2)-(0.6, 0.6): scaled by 1/0.4 and clipped.
    assert sb.project((0.2, 0.2, 0.6, 0.6), (0.1, 0.3, 0.4, 0.9)) == pytest.approx((0.0, 0.25, 0.5, 1.0))
    assert sb.project((0.2, 0.2, 0.6, 0.6), (0.6, 0.3, 0.9, 0.5)) is None  # touches only the edge
    # An expansion window (negative corner) shrinks boxes into the canvas.
    assert sb.project((-1.0, -1.0, 1.0, 1.0), (0.0, 0.0, 1.0, 1.0)) == pytest.approx((0.5, 0.5, 1.0, 1.0))
    assert sb.clip((-0.1, 0.5, 1.2, 0.7)) == (0.0, 0.5, 1.0, 0.7)


def test_emit_constraints():
    center = parse("emit_type: CENTER", caffe_pb2.EmitConstraint())
    window = (0.0, 0.0, 0.5, 0.5)
    assert sb.meets_emit_constraint(window, (0.4, 0.4, 0.6, 0.6), center)  # centre on the edge
    assert not sb.meets_emit_constraint(window, (0.4, 0.4, 0.62, 0.6), center)
    overlap = parse("emit_type: MIN_OVERLAP emit_overlap: 0.3", caffe_pb2.EmitConstraint())
    # Box (0.3..0.7)^2: a quarter of it lies in the window.
    assert not sb.meets_emit_constraint(window, (0.3, 0.3, 0.7, 0.7), overlap)
    assert sb.meets_emit_constraint(window, (0.35, 0.35, 0.6, 0.6), overlap)  # 0.0225/0.0625 = 0.36


def constraint(text):
    return parse(text, caffe_pb2.SampleConstraint())


def test_sample_constraint_semantics():
    objects = [(0.0, 0.0, 0.5, 0.5), (0.5, 0.5, 1.0, 1.0)]
    sample = (0.0, 0.0, 0.6, 0.5)  # IoU 0.25/0.30 = 0.833 with the first, 0 with the second
    assert sb.satisfies(sample, objects, constraint(""))
    assert sb.satisfies(sample, objects, constraint("min_jaccard_overlap: 0.8"))
    assert not sb.satisfies(sample, objects, constraint("min_jaccard_overlap: 0.9"))
    assert sb.satisfies(sample, objects, constraint("max_jaccard_overlap: 0.1"))  # the second object
    assert not sb.satisfies(sample, [objects[0]], constraint("max_jaccard_overlap: 0.5"))
    # Sample coverage: the share of the sample an object covers (0.25 / 0.30).
    assert sb.satisfies(sample, objects, constraint("min_sample_coverage: 0.8"))
    assert not sb.satisfies(sample, objects, constraint("min_sample_coverage: 0.9"))
    # Object coverage: the share of the object inside the sample (1.0 for the first).
    assert sb.satisfies(sample, objects, constraint("min_object_coverage: 1.0"))
    # SSD's quirk: a passed jaccard test marks the sample found even when a later test
    # of the same object fails.
    assert sb.satisfies(sample, [objects[0]], constraint("min_jaccard_overlap: 0.5 min_sample_coverage: 0.9"))
    assert not sb.satisfies(sample, [objects[0]], constraint("min_jaccard_overlap: 0.9 min_sample_coverage: 0.1"))
    assert not sb.satisfies(sample, [], constraint("min_jaccard_overlap: 0.1"))


def test_sampled_boxes_respect_scale_ratio_and_trials():
    rng = np.random.default_rng(0)
    samplers = [parse("sampler { min_scale: 0.3 max_scale: 1.0 min_aspect_ratio: 0.5 max_aspect_ratio: 2.0 } "
                      "max_trials: 200", caffe_pb2.BatchSampler())]
    boxes = sb.generate_batch_samples([], samplers, rng)
    assert len(boxes) == 200
    for x0, y0, x1, y1 in boxes:
        w, h = x1 - x0, y1 - y0
        assert 0 <= x0 and x1 <= 1 + 1e-9 and 0 <= y0 and y1 <= 1 + 1e-9
        assert 0.3 - 1e-9 <= np.sqrt(w * h) <= 1 + 1e-9 and 0.5 - 1e-9 <= w / h <= 2 + 1e-9
    # max_sample stops early; use_original_image: false skips the sampler; the default
    # sampler gives the whole image.
    samplers = [parse("max_sample: 1 max_trials: 50", caffe_pb2.BatchSampler()),
                parse("use_original_image: false", caffe_pb2.BatchSampler())]
    assert sb.generate_batch_samples([], samplers, rng) == [pytest.approx((0, 0, 1, 1))]
    bad = [parse("sampler { min_scale: 0 }", caffe_pb2.BatchSampler())]
    with pytest.raises(DataError, match="min_scale"):
        sb.generate_batch_samples([], bad, rng)


def resize(text):
    return parse(text, caffe_pb2.ResizeParameter())


def test_resize_policy_sizes_and_boxes():
    warp = resize("resize_mode: WARP height: 50 width: 100")
    assert sb.infer_new_size(warp, 30, 40) == (100, 50)
    assert sb.resize_box(warp, 30, 40, (0.1, 0.2, 0.5, 0.9)) == pytest.approx((0.1, 0.2, 0.5, 0.9))
    small = resize("resize_mode: FIT_SMALL_SIZE height: 50 width: 50")
    assert sb.infer_new_size(small, 200, 100) == (100, 50)
    assert sb.infer_new_size(small, 100, 300) == (50, 150)
    # Image 200 x 100 into 100 x 100, aspect kept: 100 x 50 plus 25 rows of padding above and below.
    pad = resize("resize_mode: FIT_LARGE_SIZE_AND_PAD height: 100 width: 100")
    assert sb.infer_new_size(pad, 200, 100) == (100, 100)
    assert sb.resize_box(pad, 200, 100, (0.0, 0.0, 1.0, 1.0)) == pytest.approx((0.0, 0.25, 1.0, 0.75))
    assert sb.resize_box(pad, 100, 200, (0.5, 0.5, 1.0, 1.0)) == pytest.approx((0.5, 0.5, 0.75, 1.0))


def test_transform_annotation_mirror_emit_and_groups():
    param = parse("emit_constraint { emit_type: CENTER }", caffe_pb2.TransformationParameter())
    rows = np.array([[1, 0, 0.1, 0.1, 0.3, 0.4, 0],
                     [2, 0, 0.5, 0.5, 0.9, 0.9, 1],
                     [2, 1, 0.45, 0.0, 0.7, 0.2, 0]], np.float32)
    window = (0.0, 0.0, 0.6, 1.0)
    out = sb.transform_annotation(rows, 10, 10, window, True, param, False)
    # Row 2's centre (0.7, 0.7) is outside the window; rows 1 and 3 are projected, then mirrored.
    assert out.shape == (2, 7)
    np.testing.assert_allclose(out[0], [1, 0, 1 - 0.5, 0.1, 1 - 1 / 6, 0.4, 0], rtol=1e-6)
    np.testing.assert_allclose(out[1], [2, 1, 0.0, 0.0, 1 - 0.75, 0.2, 0], rtol=1e-6, atol=1e-7)


def test_annotation_rows_keep_stored_order():
    datum = parse("""type: BBOX
        annotation_group { group_label: 3 annotation { instance_id: 0 bbox { xmin: 0.1 ymin: 0.2 xmax: 0.3 ymax: 0.4 } } }
        annotation_group { group_label: 1
          annotation { instance_id: 0 bbox { xmin: 0.5 ymin: 0.5 xmax: 0.6 ymax: 0.7 difficult: true } }
          annotation { instance_id: 1 bbox { xmin: 0 ymin: 0 xmax: 1 ymax: 1 } } }""", caffe_pb2.AnnotatedDatum())
    rows = sb.annotation_rows(datum)
    np.testing.assert_allclose(rows, [[3, 0, 0.1, 0.2, 0.3, 0.4, 0], [1, 0, 0.5, 0.5, 0.6, 0.7, 1],
                                      [1, 1, 0, 0, 1, 1, 0]], rtol=1e-6)
    assert sb.annotation_rows(caffe_pb2.AnnotatedDatum()).shape == (0, 7)
