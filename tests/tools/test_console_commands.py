"""The installed commands (setup.cfg console_scripts): every launcher in tools/ has a command
calling the same main(), every command imports and answers --help, and a real
non-editable install runs Caffe's command line from another folder."""

import configparser
import importlib
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Caffe's tool names (BVLC's and SSD's) are installed as they are; the project's own tools as caffe-NAME.
CAFFE_NAMES = {"caffe", "convert_imageset", "convert_mnist_data", "compute_image_mean", "upgrade_net_proto_text",
               "upgrade_solver_proto_text", "draw_net", "parse_log", "plot_log", "convert_annoset",
               "get_image_size"}


def console_scripts():
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    lines = config["options.entry_points"]["console_scripts"].strip().splitlines()
    pairs = [line.split("=", 1) for line in lines if line.strip()]
    return {name.strip(): target.strip() for name, target in pairs}


def launchers():
    return sorted(p.name for p in (ROOT / "tools").iterdir()
                  if p.is_file() and not p.name.startswith((".", "_")) and "." not in p.name)


def command_name(tool):
    return tool if tool in CAFFE_NAMES else f"caffe-{tool}"


def test_every_launcher_has_a_command_calling_the_same_main():
    scripts = console_scripts()
    for tool in launchers():
        command = command_name(tool)
        assert command in scripts, f"tools/{tool} has no console command {command} in setup.cfg"
        module, function = scripts[command].split(":")
        text = (ROOT / "tools" / tool).read_text()
        assert f"from {module} import {function}" in text, f"tools/{tool} does not launch {scripts[command]}"
        assert len(text.splitlines()) < 25, f"tools/{tool} should only launch {scripts[command]}"
    assert set(scripts) == {command_name(tool) for tool in launchers()}


@pytest.mark.parametrize("command", sorted(console_scripts()))
def test_command_imports_and_answers_help(command, capsys):
    module, function = console_scripts()[command].split(":")
    main = getattr(importlib.import_module(module), function)
    try:
        status = main(["--help"])
    except SystemExit as exc:  # argparse's --help
        status = exc.code
    out, err = capsys.readouterr()
    assert status == 0, err
    assert len(out.strip().splitlines()) >= 1 and "Traceback" not in out + err



@pytest.mark.parametrize("tool", ["caffe", "train", "summary", "parse_log"])
def test_help_into_a_closed_pipe_ends_quietly(tool):
    """`caffe --help | head -1`: the reader leaves early; no traceback, SIGPIPE's status or success."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # closed before the tool writes anything: every write fails with EPIPE
    try:
        done = subprocess.run([sys.executable, str(ROOT / "tools" / tool), "--help"], stdout=write_end,
                              stderr=subprocess.PIPE, text=True, timeout=60)
    finally:
        os.close(write_end)
    assert "Traceback" not in done.stderr and done.returncode in (0, 141), done.stderr


SOLVER = """net: "net.prototxt"
base_lr: 0.1
lr_policy: "fixed"
max_iter: 3
display: 1
snapshot_prefix: "out/snap"
solver_mode: CPU
"""
NET = """name: "tiny"
layer { name: "data" type: "DummyData" top: "data" top: "label"
        dummy_data_param { shape { dim: 4 dim: 3 } shape { dim: 4 }
                           data_filler { type: "gaussian" std: 1 } data_filler { type: "constant" value: 1 } } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
        inner_product_param { num_output: 2 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
"""


DEPLOY = """name: "tiny"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 4 dim: 3 } } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" inner_product_param { num_output: 2 } }
layer { name: "prob" type: "Softmax" bottom: "ip" top: "prob" }
"""


def _stop_background_builds(site):
    """End the installed copy's background kernel compiles, which outlive the commands that started them
    (by design: a user's next run finds them done); here they would only burn the next tests' cores."""
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "engine.cpu.warmup" in command and str(site) in command:
            try:
                os.kill(int(entry.name), signal.SIGTERM)
            except OSError:
                pass


@pytest.fixture
def stop_builds_under(tmp_path):
    yield
    _stop_background_builds(tmp_path)


@pytest.mark.slow
def test_non_editable_install_runs_from_another_folder(tmp_path, stop_builds_under):
    """`pip install .` (a wheel, not -e) of a copy of the sources: the commands work from any folder."""
    source = tmp_path / "source"
    for name in ("setup.cfg", "pyproject.toml", "README.md"):
        source.mkdir(exist_ok=True)
        shutil.copy(ROOT / name, source / name)
    for package in ("engine", "caffe"):
        shutil.copytree(ROOT / package, source / package, ignore=shutil.ignore_patterns("__pycache__"))
    site = tmp_path / "site"
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
                              "--no-build-isolation", "--target", str(site), str(source)],
                             capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # The installed copy's CPU kernels are compiled afresh for its path: in the background, as a user's
    # first run does, not waited for as the tests' own process does (minutes on a busy machine).
    env = dict(os.environ, PYTHONPATH=str(site), ENGINE_CPU_COMPILE="background")

    def command(name, *args):
        return subprocess.run([str(site / "bin" / name), *args], cwd=elsewhere, env=env, capture_output=True,
                              text=True, timeout=300)

    where = subprocess.run([sys.executable, "-c", "import engine.tools; print(engine.tools.__file__)"],
                           cwd=elsewhere, env=env, capture_output=True, text=True)
    assert Path(where.stdout.strip()).is_relative_to(site), where.stdout + where.stderr
    assert sorted(p.name for p in (site / "bin").iterdir()) == sorted(console_scripts())

    result = command("caffe", "--help")
    assert result.returncode == 0 and "caffe: command line brew" in result.stdout
    result = command("convert_imageset", "--help")
    assert result.returncode == 0 and "convert_imageset" in result.stdout
    (elsewhere / "net.prototxt").write_text(NET)
    (elsewhere / "solver.prototxt").write_text(SOLVER)
    result = command("caffe", "train", "--solver", "solver.prototxt")
    assert result.returncode == 0, result.stderr
    assert "Optimization Done." in result.stderr and (elsewhere / "out" / "snap_iter_3.caffemodel").is_file()
    (elsewhere / "deploy.prototxt").write_text(DEPLOY)
    result = command("caffe-export_onnx", "--model", "deploy.prototxt", "--weights", "out/snap_iter_3.caffemodel",
                     "--output", "tiny.onnx", "--check")
    if importlib.util.find_spec("onnxruntime"):
        assert result.returncode == 0 and "output prob: max |engine - onnxruntime|" in result.stdout, result.stderr
        assert (elsewhere / "tiny.onnx").is_file()
    result = command("caffe-make_zoo", "cifar10_quick")
    assert result.returncode == 0, result.stderr
    assert (elsewhere / "nets" / "cifar10_quick" / "deploy.prototxt").read_text() == \
        (ROOT / "nets" / "cifar10_quick" / "deploy.prototxt").read_text()
    result = command("caffe-summary", "--model", "nets/cifar10_quick/deploy.prototxt")
    assert result.returncode == 0 and "Total params: 145,578" in result.stdout, result.stderr
