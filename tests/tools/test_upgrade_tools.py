"""The upgrade_net_proto_text / upgrade_solver_proto_text command-line tools."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from google.protobuf import text_format  # noqa: E402

from engine import caffe_pb2 as pb  # noqa: E402

NET_TOOL = ROOT / "tools" / "upgrade_net_proto_text"
SOLVER_TOOL = ROOT / "tools" / "upgrade_solver_proto_text"
from paths import CONFIGS as CORPUS  # noqa: E402


def run(tool, *args, cwd):
    """Run a tool directly (by its shebang) from an unrelated directory."""
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    return subprocess.run([str(tool), *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=60)


def read_back(path, message_type):
    return text_format.Merge(Path(path).read_text(), message_type())


def test_tools_are_executable():
    for tool in (NET_TOOL, SOLVER_TOOL):
        assert os.access(tool, os.X_OK), f"{tool} is not executable"
        assert tool.read_text().startswith("#!/usr/bin/env python3\n")


V1_NET = """
name: "small"
input: "data"
input_dim: 2 input_dim: 1 input_dim: 8 input_dim: 8
layers {
  name: "conv" type: CONVOLUTION bottom: "data" top: "conv"
  blobs_lr: 1 blobs_lr: 2
  convolution_param { num_output: 3 kernel_size: 3 }
}
layers { name: "relu" type: RELU bottom: "conv" top: "conv" }
"""


def test_net_tool_upgrades_v1_file(tmp_path):
    src = tmp_path / "old.prototxt"
    dst = tmp_path / "new.prototxt"
    src.write_text(V1_NET)
    result = run(NET_TOOL, src, dst, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Upgraded" in result.stdout
    assert str(dst) in result.stdout
    net = read_back(dst, pb.NetParameter)
    assert [layer.type for layer in net.layer] == \
        ["Input", "Convolution", "ReLU"]
    assert [p.lr_mult for p in net.layer[1].param] == [1, 2]
    assert len(net.layers) == 0 and len(net.input_dim) == 0


def test_net_tool_on_current_file_says_so(tmp_path):
    src = tmp_path / "cur.prototxt"
    dst = tmp_path / "out.prototxt"
    src.write_text('name: "n" layer { name: "r" type: "ReLU" }\n')
    result = run(NET_TOOL, src, dst, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "already in latest proto format" in result.stdout
    assert read_back(dst, pb.NetParameter) == \
        read_back(src, pb.NetParameter)


def test_net_tool_relative_paths_from_other_directory(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    (work / "in.prototxt").write_text(V1_NET)
    result = run(NET_TOOL, "in.prototxt", "out.prototxt", cwd=work)
    assert result.returncode == 0, result.stderr
    assert (work / "out.prototxt").is_file()


def test_net_tool_on_corpus_v0_file(tmp_path):
    src = (CORPUS / "natanielruiz__net-archive"
           / "hash-codes__train_CIFAR10_48.prototxt")
    if not src.is_file():
        pytest.skip(f"corpus file missing: {src}")
    dst = tmp_path / "hash.prototxt"
    result = run(NET_TOOL, src, dst, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    net = read_back(dst, pb.NetParameter)
    assert len(net.layers) == 0
    assert "padding" not in {layer.type for layer in net.layer}
    convs = [layer for layer in net.layer if layer.type == "Convolution"]
    assert any(list(c.convolution_param.pad) == [2] for c in convs)


def test_net_tool_parse_error_is_one_line(tmp_path):
    src = tmp_path / "bad.prototxt"
    src.write_text('name: "x"\nlayer {\n  name: "a"\n  bogus_field: 1\n}\n')
    dst = tmp_path / "never.prototxt"
    result = run(NET_TOOL, src, dst, cwd=tmp_path)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"{src}:4:3: ")
    assert "bogus_field" in lines[0]
    assert not dst.exists()


def test_net_tool_missing_file(tmp_path):
    result = run(NET_TOOL, tmp_path / "nope", tmp_path / "out", cwd=tmp_path)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_net_tool_upgrade_error_is_one_line(tmp_path):
    src = tmp_path / "v0.prototxt"
    src.write_text('layers { layer { name: "odd" type: "mystery" } '
                   'top: "x" }\n')
    result = run(NET_TOOL, src, tmp_path / "out", cwd=tmp_path)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    line, = result.stderr.strip().splitlines()
    assert "odd" in line and "mystery" in line


def test_net_tool_usage(tmp_path):
    result = run(NET_TOOL, cwd=tmp_path)
    assert result.returncode == 1
    assert "usage" in result.stderr


def test_solver_tool_upgrades_enum(tmp_path):
    src = tmp_path / "solver.prototxt"
    dst = tmp_path / "solver_new.prototxt"
    src.write_text('net: "train.prototxt"\nbase_lr: 0.01\n'
                   'solver_type: NESTEROV\nmomentum: 0.95\n')
    result = run(SOLVER_TOOL, src, dst, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Upgraded" in result.stdout
    solver = read_back(dst, pb.SolverParameter)
    assert solver.type == "Nesterov"
    assert not solver.HasField("solver_type")
    assert solver.net == "train.prototxt"
    assert solver.momentum == pytest.approx(0.95)


def test_solver_tool_on_corpus_file(tmp_path):
    src = (CORPUS / "TimoSaemann__ENet"
           / "prototxts__enet_solver_encoder.prototxt")
    if not src.is_file():
        pytest.skip(f"corpus file missing: {src}")
    dst = tmp_path / "enet_solver.prototxt"
    result = run(SOLVER_TOOL, src, dst, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert read_back(dst, pb.SolverParameter).type == "Adam"


def test_solver_tool_current_file(tmp_path):
    src = tmp_path / "s.prototxt"
    src.write_text('type: "RMSProp"\nrms_decay: 0.98\n')
    dst = tmp_path / "o.prototxt"
    result = run(SOLVER_TOOL, src, dst, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "already in latest proto format" in result.stdout
    assert read_back(dst, pb.SolverParameter).type == "RMSProp"


def test_solver_tool_conflict_and_parse_errors(tmp_path):
    both = tmp_path / "both.prototxt"
    both.write_text('solver_type: ADAM\ntype: "Adam"\n')
    result = run(SOLVER_TOOL, both, tmp_path / "o1", cwd=tmp_path)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1

    bad = tmp_path / "bad.prototxt"
    bad.write_text('base_lr: 0.1\nsolver_type: WARP\n')
    result = run(SOLVER_TOOL, bad, tmp_path / "o2", cwd=tmp_path)
    assert result.returncode == 1
    line, = result.stderr.strip().splitlines()
    assert line.startswith(f"{bad}:2:")
