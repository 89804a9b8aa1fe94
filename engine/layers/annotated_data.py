"""AnnotatedData (SSD, weiliu89/caffe): batches of AnnotatedDatum records with boxes.

As SSD's AnnotatedDataLayer: records come from the data_param database
(read, wrapped, shared between data-parallel workers and prefetched as the
Data layer does); each image goes through SSD's augmentation and transform
(engine/data/ssd_transform.py) and its boxes with it. The label top holds
every kept box of the batch as one row
    [item_id, group_label, instance_id, xmin, ymin, xmax, ymax, difficult]
in a (1, 1, num_boxes, 8) blob; a batch without boxes gives one row of -1.
Records without an annotation type (and no annotated_data_param.anno_type)
give the Datum labels, (batch_size, 1, 1, 1), instead. The first record
shapes the data top; with resize_mode FIT_SMALL_SIZE (batch_size 1) each
batch takes its image's shape.

Every random draw of the augmentation and transform (distortion, expansion,
batch samples, resize interpolation, noise, crop, mirror) comes from the
SSD transformer's one generator, so the Data layer's reader state (record
key, running offset and that generator's state) resumes this layer exactly.
"""

import logging
import threading

import numpy as np
from google.protobuf import message as pb_message

from .. import backend, caffe_pb2
from ..data.datum import datum_to_array
from ..data.db import open_db
from ..data.ssd_boxes import annotation_rows
from ..data.ssd_transform import SSDTransformer
from ..errors import DataError
from .base import register_layer
from .data import DataLayer

log = logging.getLogger("engine")
_BBOX = caffe_pb2.AnnotatedDatum.BBOX


@register_layer
class AnnotatedDataLayer(DataLayer):
    type = "AnnotatedData"

    def setup(self, bottom, top):
        p = self.param.data_param
        ap = self.param.annotated_data_param
        tp = self.param.transform_param
        self.check(p.HasField("source") and bool(p.source), "data_param.source is required")
        self.check(p.batch_size > 0, "data_param.batch_size must be positive")
        self.batch_size = int(p.batch_size)
        self.source = p.source
        self.fit_small = tp.HasField("resize_param") and \
            tp.resize_param.resize_mode == caffe_pb2.ResizeParameter.FIT_SMALL_SIZE
        self.check(not self.fit_small or self.batch_size == 1,
                   "Only support batch size of 1 for FIT_SMALL_SIZE.")
        try:
            self.db = open_db(p.source, p.backend)
        except DataError as exc:
            raise DataError(f"layer '{self.name}' (AnnotatedData): {exc}") from None
        where = f"layer '{self.name}' (AnnotatedData)"
        try:
            self.transformer = SSDTransformer(tp, self.phase, ap.batch_sampler, where)
        except DataError as exc:
            raise self.error(str(exc).removeprefix(where + ": ")) from None
        self.cursor = self.db.cursor()
        self.offset = 0
        self._read_lock = threading.Lock()
        if p.rand_skip:
            skip = int(backend.rng().integers(p.rand_skip))
            log.info("Skipping first %d data points.", skip)
            for _ in range(skip):
                self.cursor.next()
        first = self._parse(self.cursor.key, self.cursor.value)
        image = self._image(first, self.cursor.key)
        shape = (self.batch_size,) + self.transformer.output_shape(image.shape)
        top[0].reshape(shape)
        self.item_shape = shape[1:]
        log.info("output data size: %s", ",".join(map(str, shape)))
        self.has_anno_type = first.HasField("type") or ap.HasField("anno_type")
        self.anno_type = ap.anno_type if ap.HasField("anno_type") else first.type
        if ap.HasField("anno_type") and first.HasField("type"):
            log.warning("type stored in AnnotatedDatum is shadowed.")
        if len(top) > 1:
            if self.has_anno_type:
                self.check(self.anno_type == _BBOX, "Unknown annotation type.")
                boxes = sum(len(g.annotation) for g in first.annotation_group)
                top[1].reshape((1, 1, max(boxes, 1), 8))
            else:
                top[1].reshape((self.batch_size, 1, 1, 1))
        self.start_prefetch(p.prefetch)

    def _parse(self, key, value):
        anno_datum = caffe_pb2.AnnotatedDatum()
        try:
            anno_datum.ParseFromString(value)
        except pb_message.DecodeError as exc:
            raise DataError(f"{self._where(key)}: not an AnnotatedDatum record ({exc})") from None
        return anno_datum

    def _image(self, anno_datum, key):
        """The record's pixels as (H, W, C) uint8 (decoded with its own channels unless forced)."""
        tp = self.param.transform_param
        chw = datum_to_array(anno_datum.datum, tp.force_color, tp.force_gray, self._where(key))
        if chw.dtype != np.uint8:
            raise DataError(f"{self._where(key)}: AnnotatedData needs uint8 pixels, not float_data")
        return np.ascontiguousarray(chw.transpose(1, 2, 0))

    def load_batch(self):
        with self._read_lock:
            records = self._read_records(self.batch_size)
        data = boxes = None
        labels = np.zeros((self.batch_size, 1, 1, 1), np.float32)
        all_rows = []
        for item, (key, value) in enumerate(records):
            anno_datum = self._parse(key, value)
            image = self._image(anno_datum, key)
            if self.has_anno_type and not self.param.annotated_data_param.HasField("anno_type"):
                if not anno_datum.HasField("type"):
                    raise DataError(f"{self._where(key)}: Some datum misses AnnotationType.")
                if anno_datum.type != self.anno_type:
                    raise DataError(f"{self._where(key)}: Different AnnotationType.")
            rows = annotation_rows(anno_datum)
            values, rows = self.transformer(image, rows)
            if data is None:
                if not self.fit_small and values.shape != self.item_shape:
                    raise DataError(f"{self._where(key)}: image transforms to {values.shape}, but the batch "
                                    f"is {self.item_shape} (use resize_param or images of one size)")
                data = np.empty((self.batch_size,) + values.shape, np.float32)
            elif values.shape != data.shape[1:]:
                raise DataError(f"{self._where(key)}: image transforms to {values.shape}, but the batch "
                                f"is {data.shape[1:]} (use resize_param or images of one size)")
            data[item] = values
            if self.has_anno_type:
                all_rows.append(np.concatenate([np.full((len(rows), 1), item, np.float32), rows], axis=1))
            else:
                labels[item] = anno_datum.datum.label
        if not self.has_anno_type:
            return data, labels
        boxes = np.concatenate(all_rows) if all_rows else np.zeros((0, 8), np.float32)
        if not len(boxes):
            return data, np.full((1, 1, 1, 8), -1, np.float32)
        return data, boxes.reshape(1, 1, -1, 8)


__all__ = ["AnnotatedDataLayer"]
