"""Detection data sets in SSD's formats (weiliu89/caffe util/io.cpp): label maps
(LabelMap in text format), Pascal VOC annotation XML, and AnnotatedDatum
records as SSD's convert_annoset writes them.

Boxes are stored normalized by the image size the XML states (its
<size><width>/<height>), pixel coordinates divided as floats; objects of
one label form one AnnotationGroup, groups in order of first appearance,
instance ids counting up within a group, and <difficult> applies to the
<bndbox> that follows it, as SSD's ReadXMLToAnnotatedDatum reads them.
"""

import logging
import xml.etree.ElementTree as ET

import numpy as np
from google.protobuf import text_format

from .. import caffe_pb2
from ..errors import DataError

log = logging.getLogger("engine")


def read_label_map(path):
    """A LabelMap from a labelmap.prototxt."""
    label_map = caffe_pb2.LabelMap()
    try:
        with open(path, encoding="utf-8") as handle:
            text_format.Parse(handle.read(), label_map)
    except OSError as exc:
        raise DataError(f"Failed to read label map file {path}: {exc.strerror or exc}") from None
    except text_format.ParseError as exc:
        raise DataError(f"{path}: not a LabelMap ({exc})") from None
    return label_map


def name_to_label(label_map, strict=False, where="label map"):
    """{name: label} (MapNameToLabel); `strict` refuses a name given twice."""
    table = {}
    for item in label_map.item:
        if strict and item.name in table:
            raise DataError(f"{where}: There are many duplicates of name: {item.name}")
        table[item.name] = item.label
    return table


def label_to_display_name(label_map, strict=False, where="label map"):
    """{label: display_name} (MapLabelToDisplayName); `strict` refuses a label given twice."""
    table = {}
    for item in label_map.item:
        if strict and item.label in table:
            raise DataError(f"{where}: There are many duplicates of label: {item.label}")
        table[item.label] = item.display_name
    return table


def _int(node, tag, path):
    text = node.findtext(tag)
    if text is None:
        return 0  # SSD's pt.get(tag, 0)
    try:
        return int(text.strip())
    except ValueError:
        raise DataError(f"{path}: <{tag}> '{text.strip()}' is not an integer") from None


def read_voc_xml(path, image_height, image_width, labels, anno_datum):
    """Add the objects of a VOC annotation file to `anno_datum` (ReadXMLToAnnotatedDatum)."""
    try:
        root = ET.parse(path).getroot()
    except OSError as exc:
        raise DataError(f"Failed to read annotation {path}: {exc.strerror or exc}") from None
    except ET.ParseError as exc:
        raise DataError(f"{path}: not an XML file ({exc})") from None
    size = root.find("size")
    height = _int(size, "height", path) if size is not None else 0
    width = _int(size, "width", path) if size is not None else 0
    if size is None or size.find("height") is None or size.find("width") is None:
        log.warning("When parsing %s: no <size>; using the image's", path)
        height, width = image_height, image_width
    if height != image_height:
        log.warning("%s inconsistent image height.", path)
    if width != image_width:
        log.warning("%s inconsistent image width.", path)
    if not width or not height:
        raise DataError(f"{path}: no valid image width/height.")
    groups = {group.group_label: group for group in anno_datum.annotation_group}
    for obj in root.findall("object"):
        anno = None
        difficult = False
        for child in obj:
            if child.tag == "name":
                name = (child.text or "").strip()
                if name not in labels:
                    raise DataError(f"{path}: Unknown name: {name} (not in the label map)")
                label = labels[name]
                group = groups.get(label)
                if group is None:
                    group = groups[label] = anno_datum.annotation_group.add()
                    group.group_label = label
                instance = group.annotation[-1].instance_id + 1 if len(group.annotation) else 0
                anno = group.annotation.add()
                anno.instance_id = instance
            elif child.tag == "difficult":
                difficult = (child.text or "").strip() == "1"
            elif child.tag == "bndbox":
                if anno is None:
                    raise DataError(f"{path}: an object's <bndbox> comes before its <name>")
                xmin, ymin = _int(child, "xmin", path), _int(child, "ymin", path)
                xmax, ymax = _int(child, "xmax", path), _int(child, "ymax", path)
                if min(xmin, ymin, xmax, ymax) < 0 or max(xmin, xmax) > width or max(ymin, ymax) > height:
                    log.warning("%s bounding box exceeds image boundary.", path)
                if xmin > xmax or ymin > ymax:
                    log.warning("%s bounding box irregular.", path)
                box = anno.bbox
                box.xmin = np.float32(xmin) / np.float32(width)
                box.ymin = np.float32(ymin) / np.float32(height)
                box.xmax = np.float32(xmax) / np.float32(width)
                box.ymax = np.float32(ymax) / np.float32(height)
                box.difficult = difficult
    return anno_datum


def read_name_size_file(path):
    """get_image_size's output: [(name, height, width), ...] in file order."""
    entries = []
    try:
        with open(path, encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except OSError as exc:
        raise DataError(f"Failed to open name size file {path}: {exc.strerror or exc}") from None
    for number, line in enumerate(lines, 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 3:
            raise DataError(f"{path}:{number}: expected 'name height width', got '{line}'")
        try:
            entries.append((fields[0], int(fields[1]), int(fields[2])))
        except ValueError:
            raise DataError(f"{path}:{number}: height and width must be integers: '{line}'") from None
    return entries
