"""Box arithmetic of SSD's data augmentation (weiliu89/caffe: bbox_util.cpp's
ClipBBox, LocateBBox, ProjectBBox, BBoxCoverage, MeetEmitConstraint,
ExtrapolateBBox; sampler.cpp; im_transforms.cpp's UpdateBBoxByResizePolicy
and InferNewSize).

A box is a tuple (xmin, ymin, xmax, ymax) in coordinates normalized by the
image size. An image's annotations are an (K, 7) float32 array of rows
[group_label, instance_id, xmin, ymin, xmax, ymax, difficult], in the order
SSD stores them (group by group). SSD drops a group whose boxes are all
dropped; with flat rows that is the same output.
"""

import math

import numpy as np

from .. import caffe_pb2
from ..detection.bbox import jaccard_overlap
from ..errors import DataError

UNIT = (0.0, 0.0, 1.0, 1.0)
_RESIZE = caffe_pb2.ResizeParameter
_EMIT = caffe_pb2.EmitConstraint


def box_size(box):
    """Area of a normalized box; 0 when it is inverted (BBoxSize)."""
    width, height = box[2] - box[0], box[3] - box[1]
    return 0.0 if width < 0 or height < 0 else width * height


def intersect(a, b):
    """The overlap of two boxes; (0, 0, 0, 0) when they are apart (IntersectBBox)."""
    if b[0] > a[2] or b[2] < a[0] or b[1] > a[3] or b[3] < a[1]:
        return (0.0, 0.0, 0.0, 0.0)
    return (max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3]))


def jaccard(a, b):
    """Intersection over union of two boxes (SSD's JaccardOverlap, normalized)."""
    return float(jaccard_overlap(np.asarray([a], np.float64), np.asarray([b], np.float64))[0, 0])


def coverage(a, b):
    """The share of box a that box b covers (BBoxCoverage)."""
    size = box_size(intersect(a, b))
    return size / box_size(a) if size > 0 else 0.0


def clip(box):
    return tuple(min(max(v, 0.0), 1.0) for v in box)


def locate(source, box):
    """`box`, given relative to `source`, in the coordinates `source` is given in (LocateBBox)."""
    width, height = source[2] - source[0], source[3] - source[1]
    return (source[0] + box[0] * width, source[1] + box[1] * height,
            source[0] + box[2] * width, source[1] + box[3] * height)


def project(source, box):
    """`box` relative to the window `source`, clipped; None when nothing is left (ProjectBBox)."""
    if box[0] >= source[2] or box[2] <= source[0] or box[1] >= source[3] or box[3] <= source[1]:
        return None
    width, height = source[2] - source[0], source[3] - source[1]
    projected = clip(((box[0] - source[0]) / width, (box[1] - source[1]) / height,
                      (box[2] - source[0]) / width, (box[3] - source[1]) / height))
    return projected if box_size(projected) > 0 else None


def meets_emit_constraint(source, box, emit):
    """Whether a box survives a crop to `source` (MeetEmitConstraint)."""
    if emit.emit_type == _EMIT.CENTER:
        x_center, y_center = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        return source[0] <= x_center <= source[2] and source[1] <= y_center <= source[3]
    return coverage(box, source) > emit.emit_overlap


# -- sampling (sampler.cpp) ---------------------------------------------------------


def satisfies(sample, objects, constraint):
    """SatisfySampleConstraint: some object box meets the constraint's bounds.

    Kept as SSD writes it: a box that passes one kind of test and fails a
    later one still marks the sample as found.
    """
    c = constraint
    jac = c.HasField("min_jaccard_overlap") or c.HasField("max_jaccard_overlap")
    sam = c.HasField("min_sample_coverage") or c.HasField("max_sample_coverage")
    obj = c.HasField("min_object_coverage") or c.HasField("max_object_coverage")
    if not (jac or sam or obj):
        return True
    found = False
    for box in objects:
        checks = ((jac, jaccard(sample, box), "jaccard_overlap"),
                  (sam, coverage(sample, box), "sample_coverage"),
                  (obj, coverage(box, sample), "object_coverage"))
        failed = False
        for active, value, name in checks:
            if not active:
                continue
            if c.HasField("min_" + name) and value < getattr(c, "min_" + name):
                failed = True
                break
            if c.HasField("max_" + name) and value > getattr(c, "max_" + name):
                failed = True
                break
            found = True
        if found and not failed:
            return True
    return found


def sample_box(sampler, rng, where):
    """A random box of the sampler's scale and aspect ratio inside the unit square (SampleBBox)."""
    s = sampler
    if not (0 < s.min_scale <= s.max_scale <= 1):
        raise DataError(f"{where}: sampler needs 0 < min_scale <= max_scale <= 1 "
                        f"(got {s.min_scale}, {s.max_scale})")
    if not (0 < s.min_aspect_ratio <= s.max_aspect_ratio < np.finfo(np.float32).max):
        raise DataError(f"{where}: sampler needs 0 < min_aspect_ratio <= max_aspect_ratio "
                        f"(got {s.min_aspect_ratio}, {s.max_aspect_ratio})")
    scale = rng.uniform(s.min_scale, s.max_scale)
    ratio = rng.uniform(s.min_aspect_ratio, s.max_aspect_ratio)
    ratio = min(max(ratio, scale ** 2), 1 / scale ** 2)
    width, height = scale * math.sqrt(ratio), scale / math.sqrt(ratio)
    # (1 - width) may round to a hair below 0 at scale 1: draw as low + span * u.
    w_off = (1 - width) * rng.random()
    h_off = (1 - height) * rng.random()
    return (w_off, h_off, w_off + width, h_off + height)


def generate_batch_samples(objects, batch_samplers, rng, where="batch_sampler"):
    """GenerateBatchSamples: every sampler's accepted boxes, in order."""
    samples = []
    for batch_sampler in batch_samplers:
        if not batch_sampler.use_original_image:
            continue
        found = 0
        for _ in range(batch_sampler.max_trials):
            if batch_sampler.HasField("max_sample") and found >= batch_sampler.max_sample:
                break
            sample = locate(UNIT, sample_box(batch_sampler.sampler, rng, where))
            if satisfies(sample, objects, batch_sampler.sample_constraint):
                found += 1
                samples.append(sample)
    return samples


# -- resize policy (im_transforms.cpp) ------------------------------------------------


def infer_new_size(param, width, height):
    """(width, height) of an image after the resize policy (InferNewSize)."""
    new_w, new_h = int(param.width), int(param.height)
    if param.resize_mode == _RESIZE.FIT_SMALL_SIZE:
        orig = np.float32(width) / np.float32(height)
        if orig < np.float32(new_w) / np.float32(new_h):
            new_h = int(np.float32(new_w) / orig)
        else:
            new_w = int(orig * np.float32(new_h))
    return new_w, new_h


def resize_box(param, old_w, old_h, box):
    """A box after the image is resized by the policy (UpdateBBoxByResizePolicy)."""
    new_h, new_w = float(param.height), float(param.width)
    orig, aspect = old_w / old_h, new_w / new_h
    x0, y0, x1, y1 = box[0] * old_w, box[1] * old_h, box[2] * old_w, box[3] * old_h
    mode = param.resize_mode
    if mode == _RESIZE.FIT_LARGE_SIZE_AND_PAD and orig > aspect:
        pad = (new_h - new_w / orig) / 2
        x0, x1 = max(0.0, x0 * new_w / old_w), min(new_w, x1 * new_w / old_w)
        y0 = pad + max(0.0, y0 * (new_h - 2 * pad) / old_h)
        y1 = pad + min(new_h, y1 * (new_h - 2 * pad) / old_h)
    elif mode == _RESIZE.FIT_LARGE_SIZE_AND_PAD:
        pad = (new_w - orig * new_h) / 2
        x0 = pad + max(0.0, x0 * (new_w - 2 * pad) / old_w)
        x1 = pad + min(new_w, x1 * (new_w - 2 * pad) / old_w)
        y0, y1 = max(0.0, y0 * new_h / old_h), min(new_h, y1 * new_h / old_h)
    else:
        if mode == _RESIZE.FIT_SMALL_SIZE:
            if orig < aspect:
                new_h = new_w / orig
            else:
                new_w = orig * new_h
        x0, x1 = max(0.0, x0 * new_w / old_w), min(new_w, x1 * new_w / old_w)
        y0, y1 = max(0.0, y0 * new_h / old_h), min(new_h, y1 * new_h / old_h)
    return (x0 / new_w, y0 / new_h, x1 / new_w, y1 / new_h)


def extrapolate_box(param, height, width, crop_box, box):
    """ExtrapolateBBox: FIT_SMALL_SIZE with height_scale/width_scale rescales the box."""
    if not (param.height_scale > 0 and param.width_scale > 0
            and param.resize_mode == _RESIZE.FIT_SMALL_SIZE):
        return box
    orig = width / height
    resize_h, resize_w = float(param.height), float(param.width)
    if orig < resize_w / resize_h:
        resize_h = resize_w / orig
    else:
        resize_w = resize_h * orig
    crop_h = resize_h * (crop_box[3] - crop_box[1])
    crop_w = resize_w * (crop_box[2] - crop_box[0])
    if crop_w < param.width_scale or crop_h < param.height_scale:
        raise DataError(f"resize_param: the crop ({crop_w:g} x {crop_h:g}) is smaller than "
                        f"width_scale x height_scale ({param.width_scale} x {param.height_scale})")
    fx, fy = crop_w / param.width_scale, crop_h / param.height_scale
    return (box[0] * fx, box[1] * fy, box[2] * fx, box[3] * fy)


def transform_annotation(rows, width, height, window, mirror, param, resize):
    """DataTransformer::TransformAnnotation: the rows that survive a crop to `window`.

    width, height: the image's size before the resize policy; `resize`
    applies transform_param.resize_param (the final transform does, crops
    and expansions do not); `param` is the TransformationParameter.
    """
    resize = resize and param.HasField("resize_param")
    emit = param.emit_constraint if param.HasField("emit_constraint") else None
    kept = []
    for row in rows:
        box = tuple(float(v) for v in row[2:6])
        if resize:
            box = resize_box(param.resize_param, width, height, box)
        if emit is not None and not meets_emit_constraint(window, box, emit):
            continue
        box = project(window, box)
        if box is None:
            continue
        if mirror:
            box = (1 - box[2], box[1], 1 - box[0], box[3])
        if resize:
            box = extrapolate_box(param.resize_param, height, width, window, box)
        kept.append((row[0], row[1], *box, row[6]))
    return np.asarray(kept, dtype=np.float32).reshape(-1, 7)


def annotation_rows(anno_datum):
    """An AnnotatedDatum's boxes as rows [group_label, instance_id, xmin, ymin, xmax, ymax, difficult]."""
    rows = [(group.group_label, anno.instance_id, anno.bbox.xmin, anno.bbox.ymin,
             anno.bbox.xmax, anno.bbox.ymax, float(anno.bbox.difficult))
            for group in anno_datum.annotation_group for anno in group.annotation]
    return np.asarray(rows, dtype=np.float32).reshape(-1, 7)
