"""Runs the BVLC Caffe reference cases in tests/caffe-reference as its README says."""

import json
import shutil
from pathlib import Path

import numpy as np

import engine

from paths import REFERENCE  # noqa: E402


def scratch_copy(folder, tmp_path):
    """A copy of a reference case folder to read from: opening a LevelDB writes into
    its folder, and the shipped reference must stay as Caffe wrote it."""
    return Path(shutil.copytree(folder, tmp_path / Path(folder).name))


def cases(group):
    folder = REFERENCE / group
    return sorted(p for p in folder.iterdir() if (p / "case.json").exists())


def formula_weights(net):
    """The README's deterministic parameter formula for large nets."""
    for blobs in net.params.values():
        for i, blob in enumerate(blobs):
            idx = np.arange(blob.count, dtype=np.int64)
            u = ((idx * 7919 + 104729 * (i + 1)) % 2003) / 2003 - 0.5
            if blob.num_axes > 1:
                fan_in = max(1, blob.count // blob.shape[0])
                scale = np.sqrt(6 / fan_in)
            else:
                scale = 0.2
            blob.data = (u * scale).reshape(blob.shape).astype(np.float32)


def run_case(folder):
    """Build, load, forward, backward; return a list of mismatch descriptions."""
    folder = Path(folder)
    meta = json.loads((folder / "case.json").read_text())
    arrays = np.load(folder / "data.npz")
    phase = engine.TRAIN if meta["phase"] == "TRAIN" else engine.TEST
    net = engine.Net(str(folder / "net.prototxt"), phase)
    if meta.get("formula_weights"):
        formula_weights(net)
    elif (folder / "weights.caffemodel").exists():
        net.copy_from(str(folder / "weights.caffemodel"))
    for key in arrays.files:
        if key.startswith("input/"):
            net.blobs[key[len("input/"):]].data = arrays[key]
    net.forward()
    if meta.get("backward", True):
        for key in arrays.files:
            if key.startswith("topdiff/"):
                net.blobs[key[len("topdiff/"):]].diff = arrays[key]
        net.backward()
    rtol, atol = meta["rtol"], meta["atol"]
    problems = []
    for key in arrays.files:
        kind, _, name = key.partition("/")
        if kind in ("input", "topdiff"):
            continue
        if kind in ("data", "diff"):
            if name not in net.blobs:
                problems.append(f"{key}: no blob '{name}' in our net")
                continue
            blob = net.blobs[name]
            ours = blob.data if kind == "data" else blob.diff
        else:
            layer, _, index = name.rpartition("/")
            params = net.params.get(layer)
            if params is None or int(index) >= len(params):
                problems.append(f"{key}: no parameter {index} in layer '{layer}'")
                continue
            ours = params[int(index)].data if kind == "param" else params[int(index)].diff
        theirs = arrays[key]
        ours = np.asarray(engine.backend.to_host(ours))
        if ours.shape != theirs.shape:
            problems.append(f"{key}: shape {ours.shape}, Caffe {theirs.shape}")
        elif not np.allclose(ours, theirs, rtol=rtol, atol=atol):
            err = np.abs(ours - theirs).max()
            problems.append(f"{key}: max abs error {err:.3g} (rtol {rtol}, atol {atol})")
    return problems
