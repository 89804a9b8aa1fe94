"""detect: input preparation, detections scaled to each image's pixels, label names,
threshold, the JSON and the drawn PNG copies; and a run of the shipped SSD deploy net."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from engine import caffe_pb2, formats
from engine.data.image import resize_linear
from engine.net import Net
from engine.tools import detect

ROOT = Path(__file__).resolve().parents[2]

LAYER = '''
import numpy as np
from engine.layers.base import Layer

ROWS = np.array([[0, 1, 0.9, 0.1, 0.2, 0.5, 0.6],
                 [0, 2, 0.3, 0.0, 0.0, 1.0, 1.0],
                 [0, 2, 0.7, -0.1, 0.5, 0.4, 1.2]], np.float32)
SEEN = []


class FixedDetections(Layer):
    def reshape(self, bottom, top):
        top[0].reshape(1, 1, len(ROWS), 7)

    def forward(self, bottom, top):
        SEEN.append(np.array(bottom[0].data))
        top[0].data[...] = ROWS
'''

DEPLOY = """
layer { name: "input" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 8 dim: 10 } }
        %s }
layer { name: "det" type: "Python" bottom: "data" top: "detection_out"
        python_param { module: "%s" layer: "FixedDetections" } }
"""
LABELMAP = 'item { name: "bg" label: 0 display_name: "background" }\nitem { name: "a" label: 1 display_name: "Apple" }\n'


@pytest.fixture
def fixed(tmp_path, monkeypatch):
    import importlib

    name = "fixed_detections_for_test"
    (tmp_path / f"{name}.py").write_text(LAYER)
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module(name)
    module.SEEN.clear()
    yield name, module
    sys.modules.pop(name, None)


def write_inputs(tmp_path, module_name, transform=""):
    from PIL import Image

    (tmp_path / "deploy.prototxt").write_text(DEPLOY % (transform, module_name))
    Net(str(tmp_path / "deploy.prototxt"), caffe_pb2.TEST).save(str(tmp_path / "w.caffemodel"))
    (tmp_path / "labelmap.prototxt").write_text(LABELMAP)
    rng = np.random.default_rng(0)
    images = []
    for name, size in (("one", (40, 60)), ("two", (25, 25))):
        pixels = rng.integers(0, 256, size + (3,), dtype=np.uint8)
        Image.fromarray(pixels[..., ::-1]).save(tmp_path / f"{name}.png")
        images.append(pixels)
    return images


def test_detections_json_and_drawings(tmp_path, fixed):
    name, module = fixed
    images = write_inputs(tmp_path, name)
    status = detect.main(["--model", str(tmp_path / "deploy.prototxt"), "--weights", str(tmp_path / "w.caffemodel"),
                          "--labelmap", str(tmp_path / "labelmap.prototxt"), "--threshold", "0.5",
                          "--output", str(tmp_path / "out"), str(tmp_path / "one.png"), str(tmp_path / "two.png")])
    assert status == 0
    results = json.loads((tmp_path / "out" / "detections.json").read_text())
    assert [r["image"] for r in results] == [str(tmp_path / "one.png"), str(tmp_path / "two.png")]
    first = results[0]
    assert (first["height"], first["width"]) == (40, 60)
    # Score 0.3 is under the threshold; boxes are clipped to the image, scaled and rounded.
    assert first["detections"] == [
        {"label": 1, "name": "Apple", "score": 0.9, "box": [6, 8, 30, 24]},
        {"label": 2, "name": "2", "score": 0.7, "box": [0, 20, 24, 40]}]
    assert results[1]["detections"][0]["box"] == [3, 5, 12, 15]  # float32 0.1 * 25 rounds up
    from PIL import Image

    drawn = np.asarray(Image.open(tmp_path / "out" / "one.png").convert("RGB"))
    assert drawn.shape == (40, 60, 3)
    assert not np.array_equal(drawn, images[0][..., ::-1])
    assert np.array_equal(drawn[30:, 40:], images[0][30:, 40:, ::-1])  # away from every box
    # The net saw each image resized to its input and mean-subtracted (SSD's defaults).
    expected = resize_linear(images[0], 10, 8).transpose(2, 0, 1).astype(np.float32)
    expected -= np.array([104, 117, 123], np.float32)[:, None, None]
    np.testing.assert_array_equal(module.SEEN[0][0], expected)



def test_images_sharing_a_name_get_their_own_drawings(tmp_path, fixed):
    name, _ = fixed
    write_inputs(tmp_path, name)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "one.png").write_bytes((tmp_path / "two.png").read_bytes())
    status = detect.main(["--model", str(tmp_path / "deploy.prototxt"), "--weights", str(tmp_path / "w.caffemodel"),
                          "--output", str(tmp_path / "out"), str(tmp_path / "one.png"),
                          str(tmp_path / "other" / "one.png")])
    assert status == 0
    results = json.loads((tmp_path / "out" / "detections.json").read_text())
    assert [Path(r["drawn"]).name for r in results] == ["one.png", "one_2.png"]
    from PIL import Image

    sizes = []
    for result in results:
        with Image.open(result["drawn"]) as drawn:
            sizes.append(drawn.size)
    assert sizes == [(60, 40), (25, 25)]  # each drawing is its own image, none overwritten


def test_mean_and_scale_from_the_deploy_net_and_flags(tmp_path, fixed, capsys, monkeypatch):
    name, module = fixed
    images = write_inputs(tmp_path, name, 'transform_param { mean_value: 1 mean_value: 2 mean_value: 3 scale: 0.5 }')
    args = ["--model", str(tmp_path / "deploy.prototxt"), "--weights", str(tmp_path / "w.caffemodel"),
            "--threshold", "0.8", str(tmp_path / "two.png")]
    monkeypatch.chdir(tmp_path)
    assert detect.main(args) == 0
    printed = json.loads(capsys.readouterr().out)
    assert [d["name"] for d in printed[0]["detections"]] == ["1"]
    # Without --output: the same JSON on stdout and in ./detections, beside the drawn copy.
    assert json.loads((tmp_path / "detections" / "detections.json").read_text()) == printed
    assert (tmp_path / "detections" / "two.png").exists()
    base = resize_linear(images[1], 10, 8).transpose(2, 0, 1).astype(np.float32)
    np.testing.assert_array_equal(module.SEEN[0][0], (base - np.array([1, 2, 3], np.float32)[:, None, None]) * 0.5)
    assert detect.main(args + ["--mean_value", "10", "--scale", "2"]) == 0
    np.testing.assert_array_equal(module.SEEN[1][0], (base - 10) * 2)


def test_mistakes(tmp_path, fixed, capsys):
    name, _ = fixed
    write_inputs(tmp_path, name)
    assert detect.main(["--model", str(tmp_path / "deploy.prototxt"), str(tmp_path / "one.png")]) == 1
    assert "--weights are required" in capsys.readouterr().err
    weights = ["--model", str(tmp_path / "deploy.prototxt"), "--weights", str(tmp_path / "w.caffemodel")]
    assert detect.main(weights + ["--output", str(tmp_path / "out"), str(tmp_path / "missing.png")]) == 1
    assert "missing.png" in capsys.readouterr().err
    (tmp_path / "taken").write_text("a file, not a folder")
    assert detect.main(weights + ["--output", str(tmp_path / "taken"), str(tmp_path / "one.png")]) == 1
    err = capsys.readouterr().err
    assert "--output" in err and "taken" in err and len(err.strip().splitlines()) == 1


def test_shipped_ssd_deploy_net_runs(tmp_path):
    """The zoo's SSD deploy net (random weights) through the tool: rows of 7, boxes inside the image."""
    from PIL import Image

    deploy = ROOT / "nets" / "ssd_shapes" / "deploy.prototxt"
    Net(str(deploy), caffe_pb2.TEST).save(str(tmp_path / "w.caffemodel"))
    Image.fromarray(np.full((70, 90, 3), 128, np.uint8)).save(tmp_path / "grey.png")
    assert detect.main(["--model", str(deploy), "--weights", str(tmp_path / "w.caffemodel"), "--threshold", "0",
                        "--output", str(tmp_path / "out"), str(tmp_path / "grey.png")]) == 0
    found = json.loads((tmp_path / "out" / "detections.json").read_text())[0]["detections"]
    for item in found:
        x0, y0, x1, y1 = item["box"]
        assert 0 <= x0 <= x1 <= 90 and 0 <= y0 <= y1 <= 70 and 1 <= item["label"] <= 3
    assert (tmp_path / "out" / "grey.png").exists()
