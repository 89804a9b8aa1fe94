"""Ten-crop testing (tools/test --oversample) against scores computed by hand: the four corners, the
centre and their mirrors of each image, softmax probabilities averaged, accuracy and loss of the average."""

import gc

import numpy as np
import pytest

from engine import caffe_pb2, formats, gflags
from engine.data.datum import array_to_datum
from engine.data.db import open_writer
from engine.errors import CaffeError
from engine.net import Net
from engine.solvers import cli, commands

CROP, SIZE, COUNT, BATCH = 6, (9, 8), 6, 3
NET = """name: "tiny"
layer { name: "data" type: "Data" top: "data" top: "label" include { phase: TEST }
        transform_param { crop_size: %d mean_value: 100 mean_value: 120 mean_value: 140 scale: 0.01 mirror: true }
        data_param { source: "%s" backend: LMDB batch_size: %d } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
        inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.3 }
                              bias_filler { type: "gaussian" std: 0.3 } } }
%s
"""
HEADS = {
    "train_val": 'layer { name: "accuracy" type: "Accuracy" bottom: "ip" bottom: "label" top: "accuracy" }\n'
                 'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }',
    "prob": 'layer { name: "prob" type: "Softmax" bottom: "ip" top: "prob" }',
    # an in-place layer last writes the scores: the average goes after it
    "in_place": 'layer { name: "drop" type: "Dropout" bottom: "ip" top: "ip" }\n'
                'layer { name: "accuracy" type: "Accuracy" bottom: "ip" bottom: "label" top: "accuracy" }\n'
                'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }',
}


@pytest.fixture
def work(tmp_path, monkeypatch):
    rng = np.random.default_rng(4)
    images = [rng.integers(0, 256, (3, *SIZE), dtype=np.uint8) for _ in range(COUNT)]
    labels = [int(v) for v in rng.integers(0, 3, COUNT)]
    writer = open_writer(str(tmp_path / "db"), "lmdb")
    for index, (image, label) in enumerate(zip(images, labels)):
        writer.put(f"{index:08d}", array_to_datum(image, label).SerializeToString())
    writer.commit()
    writer.close()
    monkeypatch.chdir(tmp_path)
    return tmp_path, images, labels


def make_net(folder, head):
    (folder / "net.prototxt").write_text(NET % (CROP, folder / "db", BATCH, HEADS[head]))
    net = Net(weights_net(), caffe_pb2.TEST)
    net.save(str(folder / "w.caffemodel"))
    weights, bias = (np.array(b.data, np.float64) for b in net.params["ip"])
    return weights, bias


def weights_net():
    """The same InnerProduct behind an Input layer: weights made without opening the database."""
    text = NET % (CROP, "unused", BATCH, "")
    text = text[:text.index('layer { name: "data"')] + \
        f'layer {{ name: "data" type: "Input" top: "data" input_param {{ shape {{ dim: 1 dim: 3 dim: {CROP} ' \
        f'dim: {CROP} }} }} }}\n' + text[text.index('layer { name: "ip"'):]
    return formats.parse_text(text, caffe_pb2.NetParameter())


def averaged_probabilities(image, weights, bias):
    """The paper's ten-crop prediction, written out crop by crop."""
    height, width = SIZE
    x = (image.astype(np.float64) - np.array([100, 120, 140]).reshape(3, 1, 1)) * 0.01
    corners = [(0, 0), (0, width - CROP), (height - CROP, 0), (height - CROP, width - CROP),
               ((height - CROP) // 2, (width - CROP) // 2)]
    probabilities = []
    for top, left in corners:
        crop = x[:, top:top + CROP, left:left + CROP]
        for view in (crop, crop[:, :, ::-1]):
            scores = weights @ view.ravel() + bias
            e = np.exp(scores - scores.max())
            probabilities.append(e / e.sum())
    assert len(probabilities) == 10
    return np.mean(probabilities, axis=0)


def values(*argv):
    flags = [commands.FLAGS[name] for name in ("model", "weights", "iterations", "gpu", "level", "stage",
                                               "oversample")]
    return gflags.parse(list(argv), flags)[0]


@pytest.mark.parametrize("head", ["train_val", "in_place"])
def test_accuracy_and_loss_of_the_averaged_ten_crops(work, head):
    folder, images, labels = work
    weights, bias = make_net(folder, head)
    results = commands.test(values("--model", "net.prototxt", "--weights", "w.caffemodel", "--iterations", "2",
                                   "--oversample"))
    p = [averaged_probabilities(image, weights, bias) for image in images]
    correct = [float(np.argmax(p[i]) == labels[i]) for i in range(COUNT)]
    losses = [-np.log(p[i][labels[i]]) for i in range(COUNT)]
    # the mean over 2 batches of 3 of each batch's mean
    assert results["accuracy"] == pytest.approx(np.mean(correct), abs=1e-6)
    assert results["loss"] == pytest.approx(np.mean(losses), rel=1e-5)
    # the ten crops are not the centre crop: scoring without --oversample differs
    gc.collect()  # the first net's data layer lets go of the database
    plain = commands.test(values("--model", "net.prototxt", "--weights", "w.caffemodel", "--iterations", "2"))
    assert plain["loss"] != pytest.approx(results["loss"], rel=1e-3)


def test_softmax_output_is_averaged_as_it_is(work):
    folder, images, _ = work
    weights, bias = make_net(folder, "prob")
    results = commands.test(values("--model", "net.prototxt", "--weights", "w.caffemodel", "--iterations", "1",
                                   "--oversample"))
    expected = np.concatenate([averaged_probabilities(image, weights, bias) for image in images[:BATCH]])
    np.testing.assert_allclose(results["prob"], expected, rtol=1e-5, atol=1e-7)


def test_tool_flag_and_its_log(work, capsys):
    folder, _, _ = work
    make_net(folder, "train_val")
    status = cli.test_main(["--model", "net.prototxt", "--weights", "w.caffemodel", "--iterations", "1",
                            "--oversample"])
    err = capsys.readouterr().err
    assert status == 0, err
    assert "Oversampling data: ten 6 x 6 crops per image (corners, centre, mirrored)" in err
    assert "Averaging the ten crops at ip (softmax probabilities)" in err
    cli.test_main(["--help"])
    assert "--oversample" in capsys.readouterr().out


def test_needs_a_cropping_data_layer(work):
    folder, _, _ = work
    (folder / "net.prototxt").write_text((NET % (CROP, folder / "db", BATCH, HEADS["prob"])).replace("crop_size: 6 ", ""))
    Net(weights_net(), caffe_pb2.TEST).save(str(folder / "w.caffemodel"))
    with pytest.raises(CaffeError, match="^--oversample needs a data layer with transform_param crop_size"):
        commands.test(values("--model", "net.prototxt", "--weights", "w.caffemodel", "--oversample"))
