"""make_shapes_dataset: a VOC-layout detection set whose boxes hold the shapes they name."""

import xml.etree.ElementTree as ET

from engine.data.annoset import name_to_label, read_label_map
from engine.data.image import read_image
from engine.tools.make_shapes_dataset import CLASSES, main


def test_layout_boxes_and_determinism(tmp_path):
    assert main([str(tmp_path / "a"), "--train", "6", "--test", "3", "--seed", "4"]) == 0
    out = tmp_path / "a"
    train = (out / "ImageSets/Main/train.txt").read_text().split()
    test = (out / "ImageSets/Main/test.txt").read_text().split()
    assert len(train) == 6 and len(test) == 3 and not set(train) & set(test)
    lines = (out / "train.txt").read_text().splitlines()
    assert lines[0] == f"JPEGImages/{train[0]}.jpg Annotations/{train[0]}.xml"
    labels = name_to_label(read_label_map(out / "labelmap.prototxt"), strict=True)
    assert labels == {"none_of_the_above": 0, "circle": 1, "square": 2, "triangle": 3}
    for name in train + test:
        image = read_image(out / "JPEGImages" / f"{name}.jpg")
        root = ET.parse(out / "Annotations" / f"{name}.xml").getroot()
        assert (int(root.findtext("size/height")), int(root.findtext("size/width"))) == image.shape[:2]
        objects = root.findall("object")
        assert 1 <= len(objects) <= 3
        for obj in objects:
            assert obj.findtext("name") in CLASSES
            x0, y0, x1, y1 = (int(obj.findtext(f"bndbox/{k}")) for k in ("xmin", "ymin", "xmax", "ymax"))
            assert 1 <= x0 < x1 <= image.shape[1] and 1 <= y0 < y1 <= image.shape[0]
            assert x1 - x0 == y1 - y0  # shapes are drawn in square boxes
    # The same seed writes the same files.
    main([str(tmp_path / "b"), "--train", "6", "--test", "3", "--seed", "4"])
    for path in (out / "JPEGImages").iterdir():
        assert path.read_bytes() == (tmp_path / "b" / "JPEGImages" / path.name).read_bytes()
    sizes = {read_image(out / "JPEGImages" / f"{name}.jpg").shape for name in train}
    assert len(sizes) > 1  # images of several sizes
