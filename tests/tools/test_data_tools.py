"""convert_mnist_data, convert_imageset, compute_image_mean: round trips and Caffe's own outputs."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from engine.data.datum import datum_to_array, parse_datum  # noqa: E402
from paths import REFERENCE  # noqa: E402
from reference import scratch_copy  # noqa: E402
from engine.data.db import open_db  # noqa: E402
from engine.data.idx import write_idx  # noqa: E402

TOOLS = ROOT / "tools"
DATA = REFERENCE / "data"
HAVE_PLYVEL = importlib.util.find_spec("plyvel") is not None
needs_plyvel = pytest.mark.skipif(not HAVE_PLYVEL, reason="plyvel (LevelDB support) is not installed")


def run(tool, *args, cwd):
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    return subprocess.run([str(TOOLS / tool), *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def records(path, backend="lmdb"):
    database = open_db(path, backend)
    try:
        return database.cursor().read(len(database))
    finally:
        database.close()


@pytest.mark.parametrize("tool", ["convert_mnist_data", "convert_imageset", "compute_image_mean"])
def test_tools_are_executable_and_have_help(tool, tmp_path):
    assert os.access(TOOLS / tool, os.X_OK)
    assert (TOOLS / tool).read_text().startswith("#!/usr/bin/env python3\n")
    result = run(tool, "--help", cwd=tmp_path)
    assert result.returncode == 0 and "Usage" in result.stdout and "-backend" in result.stdout


@pytest.mark.parametrize("backend,gz", [("lmdb", True), pytest.param("leveldb", False, marks=needs_plyvel)])
def test_convert_mnist_round_trip(tmp_path, backend, gz):
    images = np.random.default_rng(0).integers(0, 256, (12, 5, 4), dtype=np.uint8)
    labels = np.arange(12, dtype=np.uint8) % 10
    suffix = ".gz" if gz else ""
    write_idx(tmp_path / f"img{suffix}", images)
    write_idx(tmp_path / f"lab{suffix}", labels)
    result = run("convert_mnist_data", f"img{suffix}", f"lab{suffix}", "out", f"-backend={backend}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    got = records(tmp_path / "out", backend)
    assert [key for key, _ in got] == [f"{i:08d}".encode() for i in range(12)]
    for index, (_, value) in enumerate(got):
        datum = parse_datum(value)
        assert datum.label == labels[index]
        assert np.array_equal(datum_to_array(datum)[0], images[index])


def test_convert_mnist_errors_are_one_line(tmp_path):
    write_idx(tmp_path / "img", np.zeros((2, 3, 3), np.uint8))
    write_idx(tmp_path / "lab", np.zeros(3, np.uint8))
    for args, message in [(("nothing", "lab", "out"), "cannot read nothing"),
                          (("lab", "lab", "out"), "Incorrect image file magic"),
                          (("img", "img", "out"), "Incorrect label file magic"),
                          (("img", "lab", "out"), "num_items != num_labels"),
                          (("img", "lab"), "expected IMAGES LABELS DB"),
                          (("--nosuchflag", "1"), "unknown command line flag")]:
        result = run("convert_mnist_data", *args, cwd=tmp_path)
        assert result.returncode == 1
        assert message in result.stderr and "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_convert_mnist_writes_caffes_bytes(tmp_path):
    case = DATA / "mnist_idx"
    result = run("convert_mnist_data", case / "images-idx3-ubyte", case / "labels-idx1-ubyte", "db",
                 "--backend", "lmdb", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert records(tmp_path / "db") == records(case / "db")


CASES = {
    "raw_resized_meanfile": ["--resize_height=32", "--resize_width=32", "--backend=lmdb"],
    "gray_leveldb": ["--gray", "--resize_height=20", "--resize_width=20", "--backend=leveldb"],
    "encoded_png_meanvalue": ["--encoded", "--encode_type=png", "--resize_height=24", "--resize_width=26",
                              "--backend=lmdb"],
}


@pytest.mark.parametrize("case", [pytest.param(c, marks=needs_plyvel) if "leveldb" in c else c for c in sorted(CASES)])
def test_convert_imageset_reproduces_caffes_database(tmp_path, case):
    folder = scratch_copy(DATA / case, tmp_path / "caffe")
    result = run("convert_imageset", *CASES[case], f"{folder}/images/", folder / "list.txt", "db", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    backend = "leveldb" if "leveldb" in case else "lmdb"
    ours, theirs = records(tmp_path / "db", backend), records(folder / "db", backend)
    assert [k for k, _ in ours] == [k for k, _ in theirs]
    if "encoded" in case:
        # PNG bytes depend on the compressor; the pixels may not.
        for (_, mine), (_, caffes) in zip(ours, theirs):
            a, b = parse_datum(mine), parse_datum(caffes)
            assert a.encoded and a.label == b.label
            assert np.array_equal(datum_to_array(a), datum_to_array(b))
    else:
        assert ours == theirs


def test_compute_image_mean_writes_caffes_file(tmp_path):
    folder = DATA / "raw_resized_meanfile"
    result = run("compute_image_mean", folder / "db", "mean.binaryproto", "-backend", "lmdb", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "mean_value channel [2]" in result.stderr
    assert (tmp_path / "mean.binaryproto").read_bytes() == (folder / "mean.binaryproto").read_bytes()


def test_convert_imageset_encoded_keeps_file_bytes_and_skips_unreadable(tmp_path):
    from PIL import Image

    Image.fromarray(np.full((3, 4, 3), 9, np.uint8)).save(tmp_path / "a.png")
    (tmp_path / "b.png").write_bytes(b"junk")
    (tmp_path / "list.txt").write_text("a.png 1\nb.png 2\n")
    result = run("convert_imageset", "--encoded", "--shuffle=false", "./", "list.txt", "db", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "b.png" in result.stderr
    (key, value), = records(tmp_path / "db")
    assert key == b"00000000_a.png"
    assert parse_datum(value).data == (tmp_path / "a.png").read_bytes()


def test_convert_imageset_and_mean_errors(tmp_path):
    (tmp_path / "list.txt").write_text("a.png\n")
    for tool, args, message in [
            ("convert_imageset", ("./", "missing.txt", "db"), "Failed to open image list"),
            ("convert_imageset", ("./", "list.txt", "db"), "has no label"),
            ("convert_imageset", ("--backend", "rocks", "./", "list.txt", "db"), "unknown database backend"),
            ("compute_image_mean", ("nodb",), "No such file"),
            ("compute_image_mean", (), "expected INPUT_DB")]:
        result = run(tool, *args, cwd=tmp_path)
        assert result.returncode == 1, (tool, args)
        assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr


@pytest.mark.skipif(not Path("/usr/share/datasets/fashion-mnist").is_dir(),
                    reason="needs the Debian package dataset-fashion-mnist")
def test_fashion_mnist_defaults_are_idempotent_and_never_half_written(tmp_path):
    # A stale half-written database from an interrupted run is replaced, not taken as finished.
    stale = tmp_path / "data" / "fashion_mnist" / "test_lmdb.partial"
    stale.mkdir(parents=True)
    (stale / "data.mdb").write_bytes(b"junk")
    first = run("convert_mnist_data", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert not stale.exists()
    assert len(records(tmp_path / "data" / "fashion_mnist" / "test_lmdb")) == 10000
    again = run("convert_mnist_data", cwd=tmp_path)
    assert again.returncode == 0 and "already exists" in again.stderr
