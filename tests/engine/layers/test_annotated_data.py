"""AnnotatedData: SSD's label layout, the Datum-label fallback, empty batches, decoding,
and the boxes following the pixels, on databases of hand-made AnnotatedDatum records."""

import io

import numpy as np
import pytest

from engine import caffe_pb2, formats
from engine.data.db import open_writer
from engine.data.image import resize_linear
from engine.errors import CaffeError, DataError
from engine.net import Net

TRAIN, TEST = caffe_pb2.TRAIN, caffe_pb2.TEST


def record(pixels, boxes=(), anno_type=True, encoded=False, label=-1):
    """An AnnotatedDatum of an (H, W, 3) BGR image and boxes (label, xmin, ymin, xmax, ymax, difficult)."""
    anno = caffe_pb2.AnnotatedDatum()
    datum = anno.datum
    datum.channels, datum.height, datum.width = pixels.shape[2], pixels.shape[0], pixels.shape[1]
    datum.label = label
    if encoded:
        from PIL import Image

        buffer = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(pixels[..., ::-1])).save(buffer, "PNG")
        datum.data, datum.encoded = buffer.getvalue(), True
    else:
        datum.data, datum.encoded = np.ascontiguousarray(pixels.transpose(2, 0, 1)).tobytes(), False
    if anno_type:
        anno.type = caffe_pb2.AnnotatedDatum.BBOX
    groups = {}
    for label_, *coords, difficult in boxes:
        group = groups.get(label_)
        if group is None:
            group = groups[label_] = anno.annotation_group.add()
            group.group_label = label_
        item = group.annotation.add()
        item.instance_id = len(group.annotation) - 1
        item.bbox.xmin, item.bbox.ymin, item.bbox.xmax, item.bbox.ymax = coords
        item.bbox.difficult = bool(difficult)
    return anno


def write_db(path, records):
    writer = open_writer(str(path), "lmdb")
    for index, anno in enumerate(records):
        writer.put(f"{index:08d}", anno.SerializeToString())
    writer.commit()
    writer.close()
    return str(path)


def net(source, batch=2, transform="", extra="", phase=TRAIN, tops=2):
    top = 'top: "data" top: "label"' if tops == 2 else 'top: "data"'
    text = f"""
    layer {{ name: "data" type: "AnnotatedData" {top}
      transform_param {{ {transform} }}
      data_param {{ source: "{source}" batch_size: {batch} backend: LMDB }}
      annotated_data_param {{ {extra} }} }}"""
    return Net(formats.parse_text(text, caffe_pb2.NetParameter()), phase)


def pixels(height=6, width=8, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def test_label_rows_in_ssd_layout(tmp_path):
    images = [pixels(seed=i) for i in range(3)]
    records = [record(images[0], [(2, 0.1, 0.2, 0.5, 0.6, 0), (1, 0.0, 0.0, 1.0, 0.5, 1), (2, 0.5, 0.5, 0.9, 0.9, 0)]),
               record(images[1], [(3, 0.25, 0.25, 0.75, 0.75, 0)], encoded=True),
               record(images[2])]
    n = net(write_db(tmp_path / "db", records), batch=2)
    assert n.blobs["data"].shape == (2, 3, 6, 8) and n.blobs["label"].shape == (1, 1, 3, 8)
    n.forward()
    label = n.blobs["label"].data
    expected = [[0, 2, 0, 0.1, 0.2, 0.5, 0.6, 0], [0, 2, 1, 0.5, 0.5, 0.9, 0.9, 0],
                [0, 1, 0, 0.0, 0.0, 1.0, 0.5, 1], [1, 3, 0, 0.25, 0.25, 0.75, 0.75, 0]]
    np.testing.assert_allclose(label.reshape(-1, 8), expected, rtol=1e-6)
    assert label.shape == (1, 1, 4, 8)
    data = n.blobs["data"].data
    np.testing.assert_array_equal(data[0], images[0].transpose(2, 0, 1))
    np.testing.assert_array_equal(data[1], images[1].transpose(2, 0, 1))  # PNG decodes losslessly
    # Next batch: image 2 without boxes, then wrapped to image 0.
    n.forward()
    np.testing.assert_allclose(n.blobs["label"].data.reshape(-1, 8)[:, 0], [1, 1, 1])
    np.testing.assert_array_equal(n.blobs["data"].data[0], images[2].transpose(2, 0, 1))


def test_batch_without_boxes_is_one_row_of_minus_one(tmp_path):
    n = net(write_db(tmp_path / "db", [record(pixels()), record(pixels(seed=1))]))
    assert n.blobs["label"].shape == (1, 1, 1, 8)
    n.forward()
    np.testing.assert_array_equal(n.blobs["label"].data, -np.ones((1, 1, 1, 8)))


def test_records_without_type_give_datum_labels(tmp_path):
    records = [record(pixels(seed=i), anno_type=False, label=i + 4) for i in range(3)]
    n = net(write_db(tmp_path / "db", records), batch=3)
    assert n.blobs["label"].shape == (3, 1, 1, 1)
    n.forward()
    np.testing.assert_array_equal(n.blobs["label"].data.ravel(), [4, 5, 6])
    # anno_type in the layer overrides: the records are then read for boxes (none here).
    n = net(write_db(tmp_path / "db2", records), batch=3, extra="anno_type: BBOX")
    n.forward()
    np.testing.assert_array_equal(n.blobs["label"].data, -np.ones((1, 1, 1, 8)))


def test_mirror_resize_and_mean_reach_data_and_boxes(tmp_path):
    image = pixels(12, 16)
    source = write_db(tmp_path / "db", [record(image, [(1, 0.0, 0.0, 0.25, 0.5, 0)], encoded=True)])
    n = net(source, batch=1, transform="mirror: true mean_value: 100 scale: 0.5 resize_param { height: 6 width: 8 }")
    assert n.blobs["data"].shape == (1, 3, 6, 8)
    seen = set()
    for _ in range(12):
        n.forward()
        row = n.blobs["label"].data.reshape(8)
        mirrored = row[3] > 0.5
        seen.add(bool(mirrored))
        np.testing.assert_allclose(row[3:7], [0.75, 0, 1, 0.5] if mirrored else [0, 0, 0.25, 0.5], atol=1e-6)
        resized = resize_linear(image, 8, 6)
        resized = resized[:, ::-1] if mirrored else resized
        expected = (resized.transpose(2, 0, 1).astype(np.float32) - 100) * np.float32(0.5)
        np.testing.assert_array_equal(n.blobs["data"].data[0], expected)
    assert seen == {True, False}


def test_data_only_top_and_sampling_run(tmp_path):
    records = [record(pixels(20, 30, seed=i), [(1, 0.2, 0.2, 0.6, 0.7, 0)]) for i in range(4)]
    sampler = ("batch_sampler { sampler { min_scale: 0.5 max_scale: 1 } sample_constraint { min_jaccard_overlap: 0.3 } "
               "max_trials: 20 max_sample: 1 }")
    n = net(write_db(tmp_path / "db", records), batch=4, extra=sampler, tops=1,
            transform="resize_param { height: 10 width: 10 } expand_param { prob: 0.5 max_expand_ratio: 2 } "
                      "distort_param { brightness_prob: 0.5 brightness_delta: 20 }")
    for _ in range(3):
        n.forward()
        assert n.blobs["data"].shape == (4, 3, 10, 10)


def test_errors(tmp_path):
    writer = open_writer(str(tmp_path / "plain"), "lmdb")
    writer.put("0", b"\xff\xff\xff")
    writer.commit()
    writer.close()
    with pytest.raises(DataError, match="not an AnnotatedDatum"):
        net(str(tmp_path / "plain"))
    source = write_db(tmp_path / "db", [record(pixels())])
    with pytest.raises(CaffeError, match="FIT_SMALL_SIZE"):
        net(source, batch=2, transform="resize_param { resize_mode: FIT_SMALL_SIZE height: 4 width: 4 }")
    with pytest.raises(CaffeError, match="max_expand_ratio"):
        net(source, transform="expand_param { max_expand_ratio: 0.5 }")
    mixed = write_db(tmp_path / "mixed", [record(pixels()), record(pixels(9, 8))])
    n = net(mixed, batch=2)
    with pytest.raises(DataError, match="use resize_param"):
        n.forward()
