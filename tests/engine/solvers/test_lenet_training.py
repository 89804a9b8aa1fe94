"""A short real training run: the shipped LeNet (nets/lenet) with the shipped solver settings
(solvers/lenet.prototxt) on a slice of Fashion-MNIST (generated class patterns when the dataset
is absent). The loss must fall and test accuracy must end well above chance."""

import gzip
from pathlib import Path

import numpy as np
import pytest

from engine import Net, TEST, formats
from engine.solvers import get_solver

ROOT = Path(__file__).resolve().parents[3]
DATASET = Path("/usr/share/datasets/fashion-mnist")
TRAIN_COUNT, TEST_COUNT, ITERS, BATCH = 4096, 500, 250, 64


def read_idx(path, count):
    with gzip.open(path, "rb") as handle:
        raw = handle.read()
    dims = raw[3]
    shape = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims)]
    shape[0] = min(shape[0], count)
    start = 4 + 4 * dims
    return np.frombuffer(raw, np.uint8, int(np.prod(shape)), start).reshape(shape)


def dataset():
    """(train images, labels, test images, labels): images scaled by 1/256 as the net's transform does."""
    if (DATASET / "train-images-idx3-ubyte.gz").exists():
        x = read_idx(DATASET / "train-images-idx3-ubyte.gz", TRAIN_COUNT)
        y = read_idx(DATASET / "train-labels-idx1-ubyte.gz", TRAIN_COUNT)
        tx = read_idx(DATASET / "t10k-images-idx3-ubyte.gz", TEST_COUNT)
        ty = read_idx(DATASET / "t10k-labels-idx1-ubyte.gz", TEST_COUNT)
    else:
        rng = np.random.default_rng(0)
        patterns = rng.random((10, 28, 28)) > 0.7

        def make(n):
            labels = rng.integers(0, 10, n)
            images = patterns[labels] * 180 + rng.integers(0, 75, (n, 28, 28))
            return images.astype(np.uint8), labels

        (x, y), (tx, ty) = make(TRAIN_COUNT), make(TEST_COUNT)
    scale = np.float32(0.00390625)
    return (x[:, None].astype(np.float32) * scale, y.astype(np.float32),
            tx[:, None].astype(np.float32) * scale, ty.astype(np.float32))


def lenet_with_inputs(batch):
    """The shipped LeNet with its Data layers replaced by an Input layer fed from memory."""
    net = formats.read_net(str(ROOT / "nets" / "lenet" / "train_test.prototxt"))
    layers = [layer for layer in net.layer if layer.type != "Data"]
    del net.layer[:]
    data = net.layer.add()
    data.name, data.type = "data", "Input"
    data.top.extend(["data", "label"])
    data.input_param.shape.add().dim.extend([batch, 1, 28, 28])
    data.input_param.shape.add().dim.extend([batch])
    net.layer.extend(layers)
    return net


@pytest.mark.slow
def test_lenet_learns(tmp_path, mode):
    x, y, tx, ty = dataset()
    param = formats.read_solver(str(ROOT / "solvers" / "lenet.prototxt"))
    for field in ("net", "test_iter", "test_interval"):
        param.ClearField(field)
    param.net_param.CopyFrom(lenet_with_inputs(BATCH))
    param.max_iter, param.display, param.snapshot, param.random_seed = ITERS, 50, 0, 1
    param.snapshot_prefix = str(tmp_path / "lenet")
    solver = get_solver(param)
    losses = []

    def next_batch():
        start = (solver.iter * BATCH) % TRAIN_COUNT
        solver.net.blobs["data"].data = x[start:start + BATCH]
        solver.net.blobs["label"].data = y[start:start + BATCH]

    solver.add_callback(next_batch, lambda: losses.append(float(solver.net.blobs["loss"].data)))
    solver.solve()
    assert solver.iter == ITERS and (tmp_path / f"lenet_iter_{ITERS}.caffemodel").is_file()
    assert np.mean(losses[-25:]) < 0.5 * np.mean(losses[:10]), (losses[:10], losses[-25:])

    test_net = Net(lenet_with_inputs(100), TEST)
    solver.share_weights(test_net)
    accuracy = []
    for start in range(0, TEST_COUNT, 100):
        out = test_net.forward(data=tx[start:start + 100], label=ty[start:start + 100])
        accuracy.append(float(out["accuracy"]))
    assert np.mean(accuracy) > 0.6, accuracy  # chance is 0.1
