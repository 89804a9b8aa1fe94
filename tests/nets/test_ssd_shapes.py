"""The SSD zoo entry (nets/ssd_shapes, solvers/ssd_shapes.prototxt) end to end on a tiny generated
set: make_shapes_dataset -> convert_annoset -> get_image_size -> training with the shipped nets and
solver settings. The loss must fall and the detection test must log detection_eval."""

import logging
import re
from pathlib import Path

import numpy as np
import pytest

from engine import caffe_pb2, formats
from engine.solvers import get_solver
from engine.tools import convert_annoset, get_image_size, make_shapes_dataset

ROOT = Path(__file__).resolve().parents[2]


def point_at(net, data):
    """The shipped net with its data paths moved from data/ssd_shapes to `data`."""
    for layer in net.layer:
        if layer.type == "AnnotatedData":
            layer.data_param.source = str(data / Path(layer.data_param.source).name)
            layer.data_param.batch_size = 8
            layer.annotated_data_param.label_map_file = str(data / "labelmap.prototxt")
        if layer.type == "DetectionEvaluate":
            layer.detection_evaluate_param.name_size_file = str(data / "test_name_size.txt")
    return net


@pytest.mark.slow
def test_ssd_shapes_learns_and_logs_detection_eval(tmp_path, caplog):
    data = tmp_path / "ssd_shapes"
    assert make_shapes_dataset.main([str(data), "--train", "48", "--test", "8", "--seed", "3"]) == 0
    for split in ("train", "test"):
        assert convert_annoset.main(["--anno_type=detection", "--label_type=xml", "--check_label",
                                     f"--label_map_file={data / 'labelmap.prototxt'}", "--encode_type=jpg",
                                     "--encoded", f"{data}/", str(data / f"{split}.txt"),
                                     str(data / f"{split}_lmdb")]) == 0
    assert get_image_size.main([f"{data}/", str(data / "test.txt"), str(data / "test_name_size.txt")]) == 0

    shipped = formats.read_solver(ROOT / "solvers" / "ssd_shapes.prototxt")
    assert (shipped.eval_type, shipped.train_net, shipped.test_net) == (
        "detection", "nets/ssd_shapes/train.prototxt", ["nets/ssd_shapes/test.prototxt"])
    param = caffe_pb2.SolverParameter()
    param.CopyFrom(shipped)
    param.ClearField("train_net")
    param.ClearField("test_net")
    param.train_net_param.CopyFrom(point_at(formats.read_net(ROOT / shipped.train_net), data))
    param.test_net_param.add().CopyFrom(point_at(formats.read_net(ROOT / shipped.test_net[0]), data))
    del param.test_iter[:]
    param.test_iter.append(1)
    param.max_iter = param.test_interval = 40
    param.display, param.average_loss, param.snapshot = 1, 1, 0
    param.snapshot_after_train = False
    param.snapshot_prefix = str(tmp_path / "snap")
    solver = get_solver(param)
    with caplog.at_level(logging.INFO):
        solver.solve()
    text = "\n".join(record.getMessage() for record in caplog.records)
    losses = [float(v) for v in re.findall(r"Iteration \d+ \(.*\), loss = ([-\d.e+]+)", text)]
    assert len(losses) == 40
    assert np.mean(losses[-8:]) < 0.8 * np.mean(losses[:8]), losses
    found = re.findall(r"Test net output #0: detection_eval = ([\d.e+-]+)", text)
    assert len(found) == 1 and 0 <= float(found[0]) <= 1
    assert re.search(r"class[123]: ", text)  # show_per_class_result
