"""convert_annoset: VOC XML and images to AnnotatedDatum records laid out as SSD's tool
writes them (fields, groups, instance ids, normalization, keys), byte for byte against
records built by hand from SSD's io.cpp rules."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from engine import caffe_pb2  # noqa: E402
from engine.data.db import open_db  # noqa: E402
from engine.data.image import encode_image, resize_linear  # noqa: E402

TOOLS = ROOT / "tools"
LABELMAP = """item { name: "none_of_the_above" label: 0 display_name: "background" }
item { name: "cat" label: 1 display_name: "Cat" }
item { name: "dog" label: 2 display_name: "Dog" }
"""


def run(tool, *args, cwd):
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    return subprocess.run([str(TOOLS / tool), *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def xml(width, height, objects):
    parts = [f"<annotation><size><width>{width}</width><height>{height}</height><depth>3</depth></size>"]
    for name, difficult, box in objects:
        parts.append(f"<object><name>{name}</name><difficult>{difficult}</difficult><bndbox>"
                     f"<xmin>{box[0]}</xmin><ymin>{box[1]}</ymin><xmax>{box[2]}</xmax><ymax>{box[3]}</ymax>"
                     f"</bndbox></object>")
    return "".join(parts) + "</annotation>"


OBJECTS = [("dog", 0, (1, 2, 10, 8)), ("cat", 1, (0, 0, 5, 5)), ("dog", 0, (3, 3, 20, 12))]


@pytest.fixture
def voc(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    (tmp_path / "img").mkdir()
    (tmp_path / "ann").mkdir()
    images = {}
    for name, size in (("a", (12, 20)), ("b", (9, 7))):
        pixels = rng.integers(0, 256, size + (3,), dtype=np.uint8)
        Image.fromarray(pixels[..., ::-1]).save(tmp_path / "img" / f"{name}.png")
        images[name] = pixels
    (tmp_path / "ann" / "a.xml").write_text(xml(20, 12, OBJECTS))
    (tmp_path / "ann" / "b.xml").write_text(xml(7, 9, []))
    (tmp_path / "list.txt").write_text("img/a.png ann/a.xml\nimg/b.png ann/missing.xml\n")
    (tmp_path / "labelmap.prototxt").write_text(LABELMAP)
    return tmp_path, images


def read_records(path):
    database = open_db(str(path), "lmdb")
    try:
        return database.cursor().read(len(database))
    finally:
        database.close()


def expected_a(pixels, data, encoded):
    """Image a's record as SSD builds it: groups by first appearance, ids counting up per group."""
    anno = caffe_pb2.AnnotatedDatum()
    datum = anno.datum
    datum.channels, datum.height, datum.width = 3, 12, 20
    datum.data = data
    datum.label = -1
    datum.encoded = encoded
    anno.type = caffe_pb2.AnnotatedDatum.BBOX
    dog = anno.annotation_group.add()
    dog.group_label = 2
    cat = anno.annotation_group.add()
    cat.group_label = 1
    for group, instance, difficult, (x0, y0, x1, y1) in ((dog, 0, False, (1, 2, 10, 8)), (cat, 0, True, (0, 0, 5, 5)),
                                                           (dog, 1, False, (3, 3, 20, 12))):
        item = group.annotation.add()
        item.instance_id = instance
        item.bbox.xmin, item.bbox.ymin = np.float32(x0) / np.float32(20), np.float32(y0) / np.float32(12)
        item.bbox.xmax, item.bbox.ymax = np.float32(x1) / np.float32(20), np.float32(y1) / np.float32(12)
        item.bbox.difficult = difficult
    return anno


@pytest.mark.parametrize("encoded", [False, True])
def test_detection_records_match_ssd_layout(voc, encoded):
    root, images = voc
    flags = ["--encoded", "--encode_type=png"] if encoded else []
    result = run("convert_annoset", "--anno_type=detection", "--label_type=xml",
                 f"--label_map_file={root / 'labelmap.prototxt'}", "--check_label", *flags,
                 f"{root}/", root / "list.txt", root / "db", cwd=root)
    assert result.returncode == 0, result.stderr
    assert "Processed 2 files." in result.stderr
    records = read_records(root / "db")
    assert [key for key, _ in records] == [b"00000000_img/a.png", b"00000001_img/b.png"]
    pixels = images["a"]
    data = (root / "img/a.png").read_bytes() if encoded else pixels.transpose(2, 0, 1).tobytes()
    assert records[0][1] == expected_a(pixels, data, encoded).SerializeToString()
    # A missing annotation file gives an image with type BBOX and no groups.
    b = caffe_pb2.AnnotatedDatum.FromString(records[1][1])
    assert b.HasField("type") and len(b.annotation_group) == 0 and b.datum.height == 9


def test_resize_keeps_normalized_boxes_and_reencodes(voc):
    root, images = voc
    result = run("convert_annoset", "--anno_type=detection", f"--label_map_file={root / 'labelmap.prototxt'}",
                 "--encode_type=png", "--resize_width=10", "--resize_height=6",
                 f"{root}/", root / "list.txt", root / "db", cwd=root)
    assert result.returncode == 0, result.stderr
    anno = caffe_pb2.AnnotatedDatum.FromString(read_records(root / "db")[0][1])
    assert (anno.datum.width, anno.datum.height, anno.datum.encoded) == (10, 6, True)
    assert anno.datum.data == encode_image(resize_linear(images["a"], 10, 6), "png")
    assert anno.annotation_group[0].annotation[0].bbox.xmin == pytest.approx(1 / 20)


def test_min_dim_scales_keeping_aspect(voc):
    root, _ = voc
    result = run("convert_annoset", "--anno_type=detection", f"--label_map_file={root / 'labelmap.prototxt'}",
                 "--min_dim=24", f"{root}/", root / "list.txt", root / "db", cwd=root)
    assert result.returncode == 0, result.stderr
    first, second = (caffe_pb2.AnnotatedDatum.FromString(v).datum for _, v in read_records(root / "db"))
    assert (first.height, first.width) == (24, 40) and (second.height, second.width) == (31, 24)


def test_classification_records(voc):
    root, images = voc
    (root / "cls.txt").write_text("img/a.png 3\nimg/b.png 5\n")
    result = run("convert_annoset", f"{root}/", root / "cls.txt", root / "db", cwd=root)
    assert result.returncode == 0, result.stderr
    records = [caffe_pb2.AnnotatedDatum.FromString(v) for _, v in read_records(root / "db")]
    assert [r.datum.label for r in records] == [3, 5]
    assert not records[0].HasField("type") and not records[0].annotation_group


@pytest.mark.parametrize("change, message", [
    (lambda root: (root / "ann/a.xml").write_text(xml(20, 12, [("bird", 0, (1, 1, 2, 2))])), "Unknown name: bird"),
    (lambda root: (root / "labelmap.prototxt").write_text(LABELMAP + 'item { name: "cat" label: 3 }'),
     "duplicates of name: cat"),
    (lambda root: (root / "list.txt").write_text("img/a.png\n"), "list.txt:1"),
    (lambda root: (root / "ann/a.xml").write_text("<annotation><size><width>x</width>"), "not an XML file"),
])
def test_mistakes_are_one_line_errors(voc, change, message):
    root, _ = voc
    change(root)
    result = run("convert_annoset", "--anno_type=detection", f"--label_map_file={root / 'labelmap.prototxt'}",
                 "--check_label", f"{root}/", root / "list.txt", root / "db", cwd=root)
    assert result.returncode == 1 and message in result.stderr
    assert "Traceback" not in result.stderr


def test_unreadable_image_is_skipped(voc):
    root, _ = voc
    (root / "list.txt").write_text("img/none.png ann/a.xml\nimg/b.png ann/b.xml\n")
    result = run("convert_annoset", "--anno_type=detection", f"--label_map_file={root / 'labelmap.prototxt'}",
                 f"{root}/", root / "list.txt", root / "db", cwd=root)
    assert result.returncode == 0 and "Failed to read img/none.png" in result.stderr
    assert [k for k, _ in read_records(root / "db")] == [b"00000001_img/b.png"]
