"""Box geometry and coding against prior boxes, as SSD's bbox_util does them.

Every function works on whole arrays of boxes (NumPy or CuPy), in the boxes'
own dtype, so float32 inputs round as SSD's float arithmetic does.
"""

from ..backend import get_array_module

# PriorBoxParameter.CodeType
CORNER, CENTER_SIZE, CORNER_SIZE = 1, 2, 3
CODE_TYPES = {CORNER: "CORNER", CENTER_SIZE: "CENTER_SIZE", CORNER_SIZE: "CORNER_SIZE"}


def _split(boxes):
    return boxes[..., 0], boxes[..., 1], boxes[..., 2], boxes[..., 3]


def _stack(xp, xmin, ymin, xmax, ymax):
    return xp.stack([xmin, ymin, xmax, ymax], axis=-1)


def bbox_size(boxes, normalized=True):
    """Areas; 0 for a box with xmax < xmin or ymax < ymin. Pixel boxes (not
    normalized) count both end pixels: (w + 1) * (h + 1)."""
    xp = get_array_module(boxes)
    xmin, ymin, xmax, ymax = _split(boxes)
    width, height = xmax - xmin, ymax - ymin
    if not normalized:
        width, height = width + 1, height + 1
    return xp.where((xmax < xmin) | (ymax < ymin), xp.zeros_like(width), width * height)


def jaccard_overlap(boxes1, boxes2, normalized=True, sizes1=None, sizes2=None):
    """Intersection over union of every box in `boxes1` (N, 4) with every box
    in `boxes2` (M, 4): an (N, M) array; 0 where they do not intersect.

    `sizes1`/`sizes2` stand for the boxes' own areas where SSD carries them
    (NormalizedBBox.size) rather than computing them."""
    xp = get_array_module(boxes1)
    a = boxes1[:, None, :]
    b = boxes2[None, :, :]
    axmin, aymin, axmax, aymax = _split(a)
    bxmin, bymin, bxmax, bymax = _split(b)
    disjoint = (bxmin > axmax) | (bxmax < axmin) | (bymin > aymax) | (bymax < aymin)
    width = xp.minimum(axmax, bxmax) - xp.maximum(axmin, bxmin)
    height = xp.minimum(aymax, bymax) - xp.maximum(aymin, bymin)
    if not normalized:
        width, height = width + 1, height + 1
    positive = ~disjoint & (width > 0) & (height > 0)
    inter = width * height
    size1 = bbox_size(boxes1, normalized) if sizes1 is None else sizes1
    size2 = bbox_size(boxes2, normalized) if sizes2 is None else sizes2
    union = size1[:, None] + size2[None, :] - inter
    return xp.where(positive, inter / xp.where(positive, union, xp.ones_like(union)), xp.zeros_like(inter))


def is_cross_boundary(boxes):
    """True for boxes with a coordinate outside [0, 1]."""
    return ((boxes < 0) | (boxes > 1)).any(axis=-1)


def clip_bboxes(boxes, height=1.0, width=1.0):
    """Coordinates clipped to [0, width] (x) and [0, height] (y)."""
    xp = get_array_module(boxes)
    xmin, ymin, xmax, ymax = _split(boxes)
    return _stack(xp, xp.clip(xmin, 0, width), xp.clip(ymin, 0, height),
                  xp.clip(xmax, 0, width), xp.clip(ymax, 0, height))


def _prior_geometry(priors, what):
    xmin, ymin, xmax, ymax = _split(priors)
    width, height = xmax - xmin, ymax - ymin
    if bool((width <= 0).any()) or bool((height <= 0).any()):
        raise ValueError(f"{what}: a prior box has no width or height")
    return xmin, ymin, xmax, ymax, width, height


def encode_bboxes(priors, variances, code_type, variance_encoded_in_target, boxes):
    """Regression targets of `boxes` against `priors` (row by row, both (..., 4)).

    With `variance_encoded_in_target` the offsets are not divided by the
    prior variances (the prediction is expected to carry them)."""
    xp = get_array_module(boxes)
    var = variances if not variance_encoded_in_target else xp.ones_like(variances)
    v0, v1, v2, v3 = _split(var)
    xmin, ymin, xmax, ymax = _split(boxes)
    if code_type == CORNER:
        pxmin, pymin, pxmax, pymax = _split(priors)
        return _stack(xp, (xmin - pxmin) / v0, (ymin - pymin) / v1, (xmax - pxmax) / v2, (ymax - pymax) / v3)
    pxmin, pymin, pxmax, pymax, pw, ph = _prior_geometry(priors, "encoding")
    if code_type == CORNER_SIZE:
        return _stack(xp, (xmin - pxmin) / pw / v0, (ymin - pymin) / ph / v1,
                      (xmax - pxmax) / pw / v2, (ymax - pymax) / ph / v3)
    if code_type != CENTER_SIZE:
        raise ValueError(f"unknown code_type {code_type}")
    width, height = xmax - xmin, ymax - ymin
    if bool((width <= 0).any()) or bool((height <= 0).any()):
        raise ValueError("CENTER_SIZE encoding: a ground-truth box has no width or height")
    pcx, pcy = (pxmin + pxmax) / 2, (pymin + pymax) / 2
    cx, cy = (xmin + xmax) / 2, (ymin + ymax) / 2
    return _stack(xp, (cx - pcx) / pw / v0, (cy - pcy) / ph / v1,
                  xp.log(width / pw) / v2, xp.log(height / ph) / v3)


def decode_bboxes(priors, variances, code_type, variance_encoded_in_target, loc, clip=False):
    """Boxes from predicted offsets `loc` (..., P, 4) against `priors` (P, 4)
    with their `variances` (P, 4): SSD's DecodeBBox over all boxes at once."""
    xp = get_array_module(loc)
    var = variances if not variance_encoded_in_target else xp.ones_like(variances)
    v0, v1, v2, v3 = _split(var)
    l0, l1, l2, l3 = _split(loc)
    if code_type == CORNER:
        pxmin, pymin, pxmax, pymax = _split(priors)
        out = _stack(xp, pxmin + v0 * l0, pymin + v1 * l1, pxmax + v2 * l2, pymax + v3 * l3)
    else:
        pxmin, pymin, pxmax, pymax, pw, ph = _prior_geometry(priors, "decoding")
        if code_type == CORNER_SIZE:
            out = _stack(xp, pxmin + v0 * l0 * pw, pymin + v1 * l1 * ph, pxmax + v2 * l2 * pw, pymax + v3 * l3 * ph)
        elif code_type == CENTER_SIZE:
            cx = v0 * l0 * pw + (pxmin + pxmax) / 2
            cy = v1 * l1 * ph + (pymin + pymax) / 2
            half_w = xp.exp(v2 * l2) * pw / 2
            half_h = xp.exp(v3 * l3) * ph / 2
            out = _stack(xp, cx - half_w, cy - half_h, cx + half_w, cy + half_h)
        else:
            raise ValueError(f"unknown code_type {code_type}")
    return clip_bboxes(out) if clip else out


def _project(source, boxes, xp):
    """SSD's ProjectBBox of `boxes` into the frame of `source`, clipped; boxes
    that miss `source` come back unchanged (ProjectBBox leaves its output alone)."""
    sxmin, symin, sxmax, symax = source
    xmin, ymin, xmax, ymax = _split(boxes)
    miss = (xmin >= sxmax) | (xmax <= sxmin) | (ymin >= symax) | (ymax <= symin)
    sw, sh = sxmax - sxmin, symax - symin
    projected = clip_bboxes(_stack(xp, (xmin - sxmin) / sw, (ymin - symin) / sh,
                                   (xmax - sxmin) / sw, (ymax - symin) / sh))
    return xp.where(miss[..., None], boxes, projected)


def output_bboxes(boxes, height, width, resize_param=None):
    """Normalized boxes mapped to pixels of an original image of `height` x
    `width`, undoing `resize_param` as SSD's OutputBBox does.

    Returns (boxes, sizes): the sizes SSD records with them, pixel sizes
    ((w + 1) * (h + 1)) except after FIT_SMALL_SIZE with scales, whose final
    clip records plain areas."""
    xp = get_array_module(boxes)
    dtype = boxes.dtype
    mode = resize_param.resize_mode if resize_param is not None else 0
    scale_h, scale_w = height, width
    if mode == 3:  # FIT_LARGE_SIZE_AND_PAD
        rh, rw = float(resize_param.height), float(resize_param.width)
        if rh <= 0 or rw <= 0:
            raise ValueError("resize_param needs a positive height and width")
        aspect = float(xp.float32(width) / xp.float32(height))
        if aspect > rw / rh:
            pad = (rh - rw / aspect) / 2
            source = (0.0, pad / rh, 1.0, 1.0 - pad / rh)
        else:
            pad = (rw - rh * aspect) / 2
            source = (pad / rw, 0.0, 1.0 - pad / rw, 1.0)
        boxes = clip_bboxes(_project(tuple(dtype.type(v) for v in source), boxes, xp))
    elif mode == 2 and resize_param.height_scale and resize_param.width_scale:  # FIT_SMALL_SIZE
        hs, ws = resize_param.height_scale, resize_param.width_scale
        xmin, ymin, xmax, ymax = _split(boxes)
        scaled = clip_bboxes(_stack(xp, xmin * ws, ymin * hs, xmax * ws, ymax * hs), height, width)
        scaled = scaled.astype(dtype, copy=False)
        return scaled, bbox_size(scaled)
    else:  # no resize, WARP, or FIT_SMALL_SIZE without scales
        boxes = clip_bboxes(boxes)
    xmin, ymin, xmax, ymax = _split(boxes)
    out = _stack(xp, xmin * scale_w, ymin * scale_h, xmax * scale_w, ymax * scale_h).astype(dtype, copy=False)
    return out, bbox_size(out, normalized=not (width > 1 or height > 1))
