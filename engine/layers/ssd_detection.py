"""SSD's (weiliu89/caffe, branch ssd) inference-side detection layers:
DetectionOutput (decode, per-class NMS, keep_top_k) and DetectionEvaluate
(true/false positives per detection, from which the solver computes mAP).

Decoding is one array operation over the batch; NMS and the evaluation run per
image on the host, as SSD runs them on the CPU.
"""

import numpy as np

from ..backend import to_device, to_host
from ..detection import apply_nms_fast, decode_bboxes, jaccard_overlap, output_bboxes
from ..detection.bbox import CODE_TYPES
from ..data.annoset import read_name_size_file
from ..detection.save_output import DetectionSaver
from ..errors import CaffeError
from .base import Layer, register_layer

FLT_MAX = float(np.finfo(np.float32).max)


def prior_arrays(layer, blob, num_priors):
    """Prior boxes (P, 4) and variances (P, 4) of a PriorBox top (1, 2, P * 4), on the host."""
    data = to_host(blob.data).reshape(-1)
    layer.check(data.size >= num_priors * 8, f"the prior blob {blob.shape} holds no variances")
    return data[:num_priors * 4].reshape(num_priors, 4), data[num_priors * 4:num_priors * 8].reshape(num_priors, 4)


def legacy_dim(blob, index):
    """Caffe's LegacyShape: axes past the blob's count as 1."""
    return blob.shape[index] if index < blob.num_axes else 1


@register_layer
class DetectionOutputLayer(Layer):
    """Detections (1, 1, N, 7): rows [image, label, score, xmin, ymin, xmax, ymax],
    per image by label then score; one row [i, -1, ...] per image when nothing
    is detected in the whole batch."""

    type = "DetectionOutput"
    min_bottom_blobs = 3
    max_bottom_blobs = 4
    exact_num_top_blobs = 1

    def setup(self, bottom, top):
        p = self.param.detection_output_param
        self.check(p.HasField("num_classes"), "Must specify num_classes")
        self.num_classes = p.num_classes
        self.loc_classes = 1 if p.share_location else self.num_classes
        self.check(p.code_type in CODE_TYPES, f"unknown code_type {p.code_type}")
        self.confidence_threshold = p.confidence_threshold if p.HasField("confidence_threshold") else -FLT_MAX
        nms = p.nms_param
        self.check(nms.nms_threshold >= 0, "nms_threshold must be non negative.")
        self.check(0 < nms.eta <= 1, f"eta must lie in (0, 1], not {nms.eta}")
        self.top_k = nms.top_k if nms.HasField("top_k") else -1
        self.saver = None
        if DetectionSaver.wanted(p.save_output_param):
            try:
                self.saver = DetectionSaver(p.save_output_param, p.background_label_id)
            except CaffeError as exc:
                raise self.error(str(exc)) from None
        self.check(not p.visualize, "visualize is not supported (it needs a display)")

    def reshape(self, bottom, top):
        self.check(bottom[0].shape[0] == bottom[1].shape[0],
                   f"loc and conf differ in batch size ({bottom[0].shape} vs {bottom[1].shape})")
        self.num_priors = legacy_dim(bottom[2], 2) // 4
        self.check(self.num_priors * self.loc_classes * 4 == bottom[0].count_range(1),
                   f"Number of priors must match number of location predictions ({self.num_priors} priors, "
                   f"loc {bottom[0].shape})")
        self.check(self.num_priors * self.num_classes == bottom[1].count_range(1),
                   f"Number of priors must match number of confidence predictions ({self.num_priors} priors, "
                   f"{self.num_classes} classes, conf {bottom[1].shape})")
        top[0].reshape(1, 1, 1, 7)
        if self.saver is not None:
            self.saver.begin()

    def forward(self, bottom, top):
        p = self.param.detection_output_param
        num = bottom[0].shape[0]
        loc = to_host(bottom[0].data).reshape(num, self.num_priors, self.loc_classes, 4)
        conf = to_host(bottom[1].data).reshape(num, self.num_priors, self.num_classes)
        priors, variances = prior_arrays(self, bottom[2], self.num_priors)
        try:
            boxes = decode_bboxes(priors, variances, p.code_type, p.variance_encoded_in_target,
                                  loc.transpose(0, 2, 1, 3))
        except ValueError as exc:
            raise self.error(str(exc)) from None
        rows = []
        for image in range(num):
            kept = self._detect(boxes[image], conf[image])
            first = len(rows)
            for label in sorted(kept):
                box_set = boxes[image, 0 if p.share_location else label]
                for index in kept[label]:
                    rows.append([image, label, conf[image, index, label], *box_set[index]])
            if self.saver is not None:
                mine = np.array(rows[first:], dtype=np.float32).reshape(-1, 7)
                try:
                    self.saver.add_image(mine[:, 1], mine[:, 2], mine[:, 3:])
                except CaffeError as exc:
                    raise self.error(str(exc)) from None
        if rows:
            out = np.array(rows, dtype=np.float64)
        else:
            out = np.full((num, 7), -1.0)
            out[:, 0] = np.arange(num)
        top[0].reshape(1, 1, len(out), 7)
        top[0].data[...] = to_device(out.reshape(top[0].shape).astype(top[0].dtype), top[0].xp)

    def _detect(self, boxes, conf):
        """{label: kept prior indices} for one image: per-class NMS, then keep_top_k over all classes."""
        p = self.param.detection_output_param
        nms = p.nms_param
        kept = {}
        for label in range(self.num_classes):
            if label == p.background_label_id:
                continue
            box_set = boxes[0 if p.share_location else label]
            kept[label] = apply_nms_fast(box_set, conf[:, label], self.confidence_threshold,
                                         nms.nms_threshold, nms.eta, self.top_k)
        total = sum(len(v) for v in kept.values())
        if p.keep_top_k > -1 and total > p.keep_top_k:
            pairs = [(label, index) for label in sorted(kept) for index in kept[label]]
            scores = np.array([conf[index, label] for label, index in pairs], dtype=np.float64)
            order = np.argsort(-scores, kind="stable")[:p.keep_top_k]
            kept = {}
            for position in order:
                label, index = pairs[position]
                kept.setdefault(label, []).append(index)
        return kept


@register_layer
class DetectionEvaluateLayer(Layer):
    """Rows (1, 1, K, 5): first [-1, class, number of ground-truth boxes, -1, -1]
    per class, then [image, label, score, tp, fp] per detection (by image, label,
    and score where the image has ground truth of that label)."""

    type = "DetectionEvaluate"
    exact_num_bottom_blobs = 2
    exact_num_top_blobs = 1

    def setup(self, bottom, top):
        p = self.param.detection_evaluate_param
        self.check(p.HasField("num_classes"), "Must provide num_classes.")
        self.check(p.overlap_threshold > 0, "overlap_threshold must be non negative.")
        self.sizes = []
        if p.HasField("name_size_file"):
            try:
                self.sizes = [(height, width) for _, height, width in read_name_size_file(p.name_size_file)]
            except CaffeError as exc:
                raise self.error(str(exc)) from None
        self.count = 0
        self.resize_param = p.resize_param if p.HasField("resize_param") else None

    def reshape(self, bottom, top):
        p = self.param.detection_evaluate_param
        for blob, width, what in ((bottom[0], 7, "detections"), (bottom[1], 8, "ground truth")):
            self.check(legacy_dim(blob, 0) == 1 and legacy_dim(blob, 1) == 1 and legacy_dim(blob, 3) == width,
                       f"{what} must be shaped (1, 1, N, {width}), not {blob.shape}")
        det = to_host(bottom[0].data).reshape(-1, 7)
        positive_classes = p.num_classes if p.background_label_id == -1 else p.num_classes - 1
        top[0].reshape(1, 1, positive_classes + int((det[:, 1] != -1).sum()), 5)

    def _read(self, bottom):
        background = self.param.detection_evaluate_param.background_label_id
        detections = {}
        for row in to_host(bottom[0].data).reshape(-1, 7):
            image, label = int(row[0]), int(row[1])
            if image == -1:
                continue
            if label == background:
                raise self.error("Found background label in the detection results.")
            detections.setdefault(image, {}).setdefault(label, []).append(row[2:7])
        truths = {}
        for row in to_host(bottom[1].data).reshape(-1, 8):
            image, label = int(row[0]), int(row[1])
            if image == -1:
                break
            if label == background:
                raise self.error("Found background label in the dataset.")
            truths.setdefault(image, {}).setdefault(label, []).append(np.append(row[3:7], row[7] != 0))
        return detections, truths

    def forward(self, bottom, top):
        p = self.param.detection_evaluate_param
        detections, truths = self._read(bottom)
        out = np.zeros((top[0].count // 5, 5))
        num_pos = {}
        for labels in truths.values():
            for label, boxes in labels.items():
                boxes = np.array(boxes)
                counted = len(boxes) if p.evaluate_difficult_gt else int((boxes[:, 4] == 0).sum())
                num_pos[label] = num_pos.get(label, 0) + counted
        row = 0
        for label in range(p.num_classes):
            if label == p.background_label_id:
                continue
            out[row] = [-1, label, num_pos.get(label, 0), -1, -1]
            row += 1
        for image in sorted(detections):
            for label in sorted(detections[image]):
                if label == -1:
                    continue
                found = np.array(detections[image][label])
                gt = truths.get(image, {}).get(label)
                if gt is None:
                    for det in found:
                        out[row] = [image, label, det[0], 0, 1]
                        row += 1
                    continue
                found = found[np.argsort(-found[:, 0], kind="stable")]
                flags = self._flags(np.array(gt), found)
                out[row:row + len(found), 0] = image
                out[row:row + len(found), 1] = label
                out[row:row + len(found), 2] = found[:, 0]
                out[row:row + len(found), 3:5] = flags
                row += len(found)
            if self.sizes:
                self.count = (self.count + 1) % len(self.sizes)
        top[0].data[...] = to_device(out.reshape(top[0].shape).astype(top[0].dtype), top[0].xp)

    def _flags(self, gt, found):
        """(tp, fp) per detection (best first) against one image's boxes of its label."""
        p = self.param.detection_evaluate_param
        gt_boxes = gt[:, :4].astype(np.float32)
        det_boxes = found[:, 1:5].astype(np.float32)
        normalized = not self.sizes
        if normalized:
            table = jaccard_overlap(det_boxes, gt_boxes)
        else:
            self.check(self.count < len(self.sizes), "more images than lines in name_size_file")
            height, width = self.sizes[self.count]
            gt_boxes, gt_sizes = output_bboxes(gt_boxes, height, width, self.resize_param)
            det_boxes, det_sizes = output_bboxes(det_boxes, height, width, self.resize_param)
            table = jaccard_overlap(det_boxes, gt_boxes, normalized=False, sizes1=det_sizes, sizes2=gt_sizes)
        difficult = gt[:, 4] != 0
        visited = np.zeros(len(gt), dtype=bool)
        flags = np.zeros((len(found), 2))
        threshold = np.float32(p.overlap_threshold)
        for i, overlaps in enumerate(table):
            best = int(np.argmax(overlaps))
            if overlaps[best] < threshold:
                flags[i] = (0, 1)
            elif p.evaluate_difficult_gt or not difficult[best]:
                flags[i] = (0, 1) if visited[best] else (1, 0)
                visited[best] = True
        return flags
