"""The corpus's SSD nets (chuanqi305's MobileNet-SSD, Pelee): they parse, their
deploy nets run forward on random input (MobileNet-SSD's matching OpenCV's
dnn module), their train/test nets, with the AnnotatedData layer replaced by
inputs, run MultiBoxLoss forward and backward and DetectionEvaluate, and the
corpus's solver trains and tests the train/test nets as written, only their
data paths pointed at a converted set."""

import logging
import re

import numpy as np
import pytest
from opencv_reference import opencv_forward

from engine import caffe_pb2, formats
from engine.net import Net
from engine.solvers import get_solver
from engine.tools import convert_annoset, make_shapes_dataset

from paths import CONFIGS, needs_corpus  # noqa: E402

MOBILENET = "chuanqi305__MobileNet-SSD/voc__MobileNetSSD_{}.prototxt"
PELEE = "Robert-JunWang__Pelee/model__voc__deploy_merged.prototxt"
FILES = [MOBILENET.format(kind) for kind in ("train", "test", "deploy")] + [PELEE]


def random_weights(net, seed):
    """He-scaled random weights; BatchNorm and Scale layers left as identities."""
    rng = np.random.default_rng(seed)
    identities = {"BatchNorm": (0.0, 1.0, 1.0), "Scale": (1.0, 0.0)}
    for name, blobs in net.params.items():
        values = identities.get(net.layer_dict[name].type)
        if values:
            for blob, value in zip(blobs, values):
                blob.data[...] = value
            continue
        for blob in blobs:
            fan_in = max(1, int(np.prod(blob.data.shape[1:])))
            blob.data[...] = rng.standard_normal(blob.data.shape) * np.sqrt(2.0 / fan_in)


@needs_corpus
@pytest.mark.parametrize("name", FILES)
def test_ssd_nets_parse(name):
    net = formats.read_net(CONFIGS / name)
    assert {"PriorBox", "Permute"} <= {layer.type for layer in net.layer}


def check_detections(rows, num_classes, keep_top_k):
    assert rows.shape[:2] == (1, 1) and rows.shape[3] == 7 and 0 < rows.shape[2] <= keep_top_k
    rows = rows[0, 0]
    assert ((rows[:, 1] >= 1) & (rows[:, 1] < num_classes)).all()
    assert (np.diff(rows[:, 1]) >= 0).all()


@needs_corpus
def test_mobilenet_ssd_deploy_matches_opencv(tmp_path):
    path = CONFIGS / MOBILENET.format("deploy")
    net = Net(str(path), caffe_pb2.TEST)
    random_weights(net, 0)
    weights = tmp_path / "random.caffemodel"
    net.save(str(weights))
    x = np.random.default_rng(1).standard_normal(net.blobs["data"].shape).astype(np.float32)
    ours = net.forward(data=x)["detection_out"].copy()
    check_detections(ours, 21, 100)
    theirs = opencv_forward(path.read_text(), {"data": x}, ["detection_out"],
                            {name: [b.data for b in blobs] for name, blobs in net.params.items()})[0]
    # Same detections; OpenCV lists the ones kept by keep_top_k by score, SSD by label.
    order = lambda r: r[np.lexsort((r[:, 3], -r[:, 2], r[:, 1]))]  # noqa: E731
    np.testing.assert_allclose(order(ours[0, 0]), order(theirs[0, 0]), rtol=1e-4, atol=1e-5)


@needs_corpus
def test_pelee_deploy_runs_forward():
    # Pelee's fractional min_size (21.28...) is truncated as SSD does; OpenCV keeps
    # the fraction, so this net is not compared with it.
    net = Net(str(CONFIGS / PELEE), caffe_pb2.TEST)
    random_weights(net, 2)
    x = np.random.default_rng(3).standard_normal(net.blobs["data"].shape).astype(np.float32)
    check_detections(net.forward(data=x)["detection_out"], 21, 200)


def with_inputs(path, batch):
    """The net with its AnnotatedData layer replaced by Input layers (data, label)."""
    param = formats.read_net(path)
    for layer in param.layer:
        if layer.type == "AnnotatedData":
            resize = layer.transform_param.resize_param
            data, label = layer.top
            keep = (layer.name, list(layer.include))
            layer.Clear()
            layer.name, layer.type = keep[0], "Input"
            layer.include.extend(keep[1])
            layer.top.extend([data, label])
            layer.input_param.shape.add().dim.extend([batch, 3, resize.height, resize.width])
            layer.input_param.shape.add().dim.extend([1, 1, 3, 8])
    return param


GT_ROWS = np.array([[[[0, 15, 0, .1, .2, .5, .9, 0], [0, 7, 1, .55, .5, .95, .8, 0],
                      [1, 12, 0, .3, .3, .7, .6, 1]]]], np.float32)


@needs_corpus
def test_mobilenet_ssd_train_net_loss_and_gradients():
    param = with_inputs(CONFIGS / MOBILENET.format("train"), 2)
    net = Net(param, caffe_pb2.TRAIN)
    rng = np.random.default_rng(4)
    net.blobs["data"].data[...] = rng.standard_normal(net.blobs["data"].shape)
    net.blobs["label"].data[...] = GT_ROWS
    net.forward()
    loss = float(net.blobs["mbox_loss"].data)
    layer = net.layer_dict["mbox_loss"]
    assert np.isfinite(loss) and loss > 0 and layer.num_matches > 0
    net.backward()
    for name in ("mbox_loc", "mbox_conf"):
        diff = net.blobs[name].diff
        assert np.isfinite(diff).all() and np.abs(diff).sum() > 0, name


@needs_corpus
def test_mobilenet_ssd_test_net_evaluates_detections():
    param = with_inputs(CONFIGS / MOBILENET.format("test"), 2)
    net = Net(param, caffe_pb2.TEST)
    random_weights(net, 6)
    net.blobs["data"].data[...] = np.random.default_rng(5).standard_normal(net.blobs["data"].shape)
    net.blobs["label"].data[...] = GT_ROWS
    net.forward()
    rows = net.blobs["detection_eval"].data[0, 0]
    # 20 class rows first: ground-truth counts (the difficult box not counted), then one row per detection.
    np.testing.assert_array_equal(rows[:20, 1], np.arange(1, 21))
    assert rows[14, 2] == 1 and rows[6, 2] == 1 and rows[11, 2] == 0
    detections = net.blobs["detection_out"].data[0, 0]
    assert len(rows) == 20 + int((detections[:, 1] != -1).sum())
    assert ((rows[20:, 3] + rows[20:, 4]) <= 1).all()


def with_data_at(path, data):
    """The net as written, with only its AnnotatedData sources and label map moved into `data`."""
    param = formats.read_net(path)
    for layer in param.layer:
        if layer.type == "AnnotatedData":
            split = "train" if layer.include[0].phase == caffe_pb2.TRAIN else "test"
            layer.data_param.source = str(data / f"{split}_lmdb")
            layer.annotated_data_param.label_map_file = str(data / "labelmap.prototxt")
    return param


@needs_corpus
@pytest.mark.slow
def test_mobilenet_ssd_solver_trains_and_tests_unchanged_nets(tmp_path, caplog):
    data = tmp_path / "voc"
    assert make_shapes_dataset.main([str(data), "--train", "6", "--test", "4", "--seed", "2"]) == 0
    for split in ("train", "test"):
        assert convert_annoset.main(["--anno_type=detection", "--label_type=xml",
                                     f"--label_map_file={data / 'labelmap.prototxt'}", "--encode_type=jpg",
                                     "--encoded", f"{data}/", str(data / f"{split}.txt"),
                                     str(data / f"{split}_lmdb")]) == 0
    param = formats.read_solver(CONFIGS / "chuanqi305__MobileNet-SSD/voc__solver.prototxt")
    assert (param.type, param.eval_type) == ("RMSProp", "detection")
    param.ClearField("train_net")
    param.ClearField("test_net")
    param.train_net_param.CopyFrom(with_data_at(CONFIGS / MOBILENET.format("train"), data))
    param.test_net_param.add().CopyFrom(with_data_at(CONFIGS / MOBILENET.format("test"), data))
    # One training step (batch 24 of 300 x 300), then the final test: one batch of 8.
    param.max_iter = param.test_interval = param.test_iter[0] = 1
    param.snapshot_after_train = False
    param.snapshot_prefix = str(tmp_path / "snap")
    solver = get_solver(param)
    with caplog.at_level(logging.INFO):
        solver.solve()
    text = "\n".join(record.getMessage() for record in caplog.records)
    loss = re.findall(r"Train net output #0: mbox_loss = ([\d.e+-]+)", text)
    assert loss and np.isfinite(float(loss[0])) and float(loss[0]) > 0
    found = re.findall(r"Test net output #0: detection_eval = ([\d.e+-]+)", text)
    assert len(found) == 1 and 0 <= float(found[0]) <= 1
