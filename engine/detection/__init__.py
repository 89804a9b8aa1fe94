"""Bounding-box arithmetic of SSD (weiliu89/caffe, branch ssd): coding against
prior boxes, Jaccard overlap, matching, non-maximum suppression and average
precision, shared by the detection layers and the solver's detection test.

Boxes are arrays whose last axis is (xmin, ymin, xmax, ymax).
"""

from .bbox import (CENTER_SIZE, CORNER, CORNER_SIZE, bbox_size, clip_bboxes, decode_bboxes, encode_bboxes,
                   is_cross_boundary, jaccard_overlap, output_bboxes)
from .matching import BIPARTITE, PER_PREDICTION, apply_nms, apply_nms_fast, match_bboxes
from .average_precision import compute_ap

__all__ = ["CORNER", "CENTER_SIZE", "CORNER_SIZE", "BIPARTITE", "PER_PREDICTION", "bbox_size", "clip_bboxes",
           "decode_bboxes", "encode_bboxes", "is_cross_boundary", "jaccard_overlap", "output_bboxes",
           "apply_nms", "apply_nms_fast", "match_bboxes", "compute_ap"]
