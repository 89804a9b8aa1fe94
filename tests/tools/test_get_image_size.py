"""get_image_size: SSD's name-size file (name, height, width per listed image)."""

import os
import subprocess
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]


def run(*args, cwd):
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    return subprocess.run([str(ROOT / "tools" / "get_image_size"), *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def test_name_size_file_and_name_ids(tmp_path):
    from PIL import Image

    (tmp_path / "img").mkdir()
    for name, (h, w) in (("x1", (5, 9)), ("y2", (11, 4))):
        Image.fromarray(np.zeros((h, w, 3), np.uint8)).save(tmp_path / "img" / f"{name}.jpg")
    (tmp_path / "list.txt").write_text("img/x1.jpg ann/x1.xml\nimg/y2.jpg ann/y2.xml\n")
    result = run(f"{tmp_path}/", tmp_path / "list.txt", tmp_path / "out.txt", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out.txt").read_text() == "x1 5 9\ny2 11 4\n"
    (tmp_path / "ids.txt").write_text("y2 7\nx1 3\n")
    result = run("--name_id_file", tmp_path / "ids.txt", f"{tmp_path}/", tmp_path / "list.txt",
                 tmp_path / "out.txt", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out.txt").read_text() == "3 5 9\n7 11 4\n"
    (tmp_path / "list.txt").write_text("img/none.jpg ann/none.xml\n")
    result = run(f"{tmp_path}/", tmp_path / "list.txt", tmp_path / "out.txt", cwd=tmp_path)
    assert result.returncode == 1 and "none.jpg" in result.stderr and "Traceback" not in result.stderr
