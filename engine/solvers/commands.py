"""Caffe's command-line actions (tools/caffe.cpp): train and test here, time and
device_query in timing.py, and what they share (flags, device choice, `run`).

The scripts in tools/ parse flags and call these; every user mistake surfaces
as a CaffeError, which `run` turns into one line on stderr and exit status 1.
"""

import importlib
import logging
import sys
from pathlib import Path

import numpy as np

from .. import backend, caffe_pb2
from ..errors import CaffeError, SolverError
from ..log import Progress, at, glog_handler, number, remove, setup
from ..net import Net
from .. import gflags
from . import signals, solver_class
from .netsetup import read_solver_param

log = logging.getLogger("engine.caffe")

F = gflags.Flag
FLAGS = {
    "gpu": F("gpu", "", "Optional; run in GPU mode on given device IDs separated by ','. Use '-gpu all' to run "
                        "on all available GPUs."),
    "solver": F("solver", "", "The solver definition protocol buffer text file."),
    "model": F("model", "", "The model definition protocol buffer text file."),
    "phase": F("phase", "", "Optional; network phase (TRAIN or TEST). Only used for 'time'."),
    "level": F("level", 0, "Optional; network level.", int),
    "stage": F("stage", "", "Optional; network stages (not to be confused with phase), separated by ','."),
    "snapshot": F("snapshot", "", "Optional; the snapshot solver state to resume training."),
    "weights": F("weights", "", "Optional; the pretrained weights to initialize finetuning, separated by ','. "
                                "Cannot be set simultaneously with snapshot."),
    "iterations": F("iterations", 50, "The number of iterations to run.", int),
    "sigint_effect": F("sigint_effect", "stop", "Optional; action to take when a SIGINT signal is received: "
                                                "snapshot, stop or none."),
    "sighup_effect": F("sighup_effect", "snapshot", "Optional; action to take when a SIGHUP signal is "
                                                    "received: snapshot, stop or none."),
    "oversample": F("oversample", False, "Optional; score ten crops per image (the four corners, the centre and "
                                         "their mirror images) and average them, as the AlexNet paper.", bool),
}


def _stages(values):
    return [s for s in values["stage"].split(",") if s]


def _device_count():
    if backend.gpu_unavailable_reason():
        return 0
    return importlib.import_module("cupy").cuda.runtime.getDeviceCount()


def _gpu_list(text):
    if not text:
        return []
    if text == "all":
        # With no usable GPU, ask for device 0 so that set_mode says why it falls back to the CPU.
        return list(range(_device_count())) or [0]
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise CaffeError(f"--gpu must be device IDs separated by ',' or 'all', got '{text}'") from None


def set_mode(gpus, explicit=True):
    """GPU mode on the one device asked for.

    A `--gpu` flag with no usable GPU is an error naming the cause; a solver's
    `solver_mode: GPU` (explicit=False) falls back to the CPU with one warning line.
    """
    if gpus:
        reason = backend.gpu_unavailable_reason()
        if reason and explicit:
            raise CaffeError(f"--gpu {','.join(map(str, gpus))} asked for, but {reason}")
        if reason:
            log.warning("GPU %s requested but %s; running on the CPU instead", ",".join(map(str, gpus)), reason,
                        extra=at("caffe.cpp:212"))
            gpus = []
        count = _device_count()
        missing = [g for g in gpus if not 0 <= g < count]
        if missing:
            raise CaffeError(f"no GPU with ID {missing[0]}: this machine has {count} (IDs 0..{count - 1})")
    if len(gpus) > 1:
        raise CaffeError(f"training on several GPUs at once ({','.join(map(str, gpus))}) is not supported; "
                         "give one device ID with --gpu")
    if not gpus:
        log.info("Use CPU.", extra=at("caffe.cpp:219"))
        backend.set_mode_cpu()
        return None
    log.info("Using GPUs %d", gpus[0], extra=at("caffe.cpp:229"))
    backend.set_device(gpus[0])
    backend.set_mode_gpu()
    props = importlib.import_module("cupy").cuda.runtime.getDeviceProperties(gpus[0])
    name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
    log.info("GPU %d: %s", gpus[0], name, extra=at("caffe.cpp:234"))
    return gpus[0]


# -- train ---------------------------------------------------------------------------------
def train(values, max_iter=None):
    """`caffe train`: build the solver, optionally finetune or resume, then Solve."""
    if not values["solver"]:
        raise CaffeError("Need a solver definition to train.")
    if values["snapshot"] and values["weights"]:
        raise CaffeError("Give a snapshot to resume training or weights to finetune but not both.")
    param = read_solver_param(values["solver"])
    param.train_state.level = values["level"]
    param.train_state.stage.extend(_stages(values))
    solver_class(param.type)  # an unknown type fails before anything else happens
    gpu_flag, explicit = values["gpu"], True
    if not gpu_flag and param.HasField("solver_mode") and param.solver_mode == caffe_pb2.SolverParameter.GPU:
        gpu_flag, explicit = str(param.device_id), False
    set_mode(_gpu_list(gpu_flag), explicit and gpu_flag != "all")
    handler = signals.SignalHandler(values["sigint_effect"], values["sighup_effect"])
    if values["snapshot"]:
        param.ClearField("weights")
        if not Path(values["snapshot"]).is_file():
            raise SolverError(f"solver state not found: {values['snapshot']}")
    elif values["weights"]:
        param.ClearField("weights")
        param.weights.append(values["weights"])
    if max_iter is not None:
        param.max_iter = max_iter
    folder = Path(param.snapshot_prefix).parent
    if param.snapshot_prefix and not folder.exists():
        log.info("Creating snapshot folder %s", folder, extra=at("caffe.cpp:240"))
        folder.mkdir(parents=True, exist_ok=True)
    with handler:
        solver = solver_class(param.type)(param)
        solver.set_action_function(handler.action)
        if values["snapshot"]:
            log.info("Resuming from %s", values["snapshot"], extra=at("caffe.cpp:244"))
            solver.restore(values["snapshot"])
        log.info("Starting Optimization", extra=at("caffe.cpp:248"))
        solver.progress = Progress(solver.iter, param.max_iter, _images_per_iter(solver))
        try:
            solver.solve()
        finally:
            solver.progress.close()
    log.info("Optimization Done.", extra=at("caffe.cpp:259"))
    return solver


def _images_per_iter(solver):
    blobs = list(solver.net.blobs.values())
    if not blobs or not blobs[0].shape:
        return 0
    return blobs[0].shape[0] * solver.param.iter_size


def _positive_iterations(values):
    if values["iterations"] <= 0:
        raise CaffeError(f"--iterations must be positive (got {values['iterations']})")
    return values["iterations"]


# -- test ----------------------------------------------------------------------------------
def _scoring_net(values, what):
    if not values["model"]:
        raise CaffeError(f"Need a model definition to {what}.")
    if not Path(values["model"]).is_file():
        raise CaffeError(f"model definition not found: {values['model']}")
    return values["model"]


def test(values):
    """`caffe test`: score a trained model over --iterations batches; returns {output: mean}."""
    model = _scoring_net(values, "score")
    if not values["weights"]:
        raise CaffeError("Need model weights to score.")
    set_mode(_gpu_list(values["gpu"]), explicit=values["gpu"] != "all")
    if values.get("oversample"):
        net = _ten_crop_net(model, values)
    else:
        net = Net(model, caffe_pb2.TEST, level=values["level"], stages=_stages(values))
    for path in values["weights"].split(","):
        net.copy_from(path.strip())
    iterations = _positive_iterations(values)
    log.info("Running for %d iterations.", iterations, extra=at("caffe.cpp:290"))
    scores, loss = None, np.float32(0)
    for i in range(iterations):
        loss += np.float32(net.forward_from_to())
        batch = [(name, np.asarray(backend.to_host(net.blobs[name].data), np.float32).ravel())
                 for name in net.outputs]
        for name, data in batch:
            for value in data:
                log.info("Batch %d, %s = %s", i, name, number(value), extra=at("caffe.cpp:313"))
        flat = np.concatenate([data for _, data in batch]) if batch else np.zeros(0, np.float32)
        scores = flat if scores is None else scores + flat
    loss = loss / np.float32(max(iterations, 1))
    log.info("Loss: %s", number(loss), extra=at("caffe.cpp:318"))
    results, index = {}, 0
    weights = net.blob_loss_weights
    for name in net.outputs:
        count = net.blobs[name].count
        for k in range(count):
            mean = np.float32(scores[index] if scores is not None else 0) / np.float32(max(iterations, 1))
            weight = np.float32(weights[name])
            suffix = f" (* {number(weight)} = {number(weight * mean)} loss)" if weight else ""
            log.info("%s = %s%s", name, number(mean), suffix, extra=at("caffe.cpp:330"))
            results.setdefault(name, []).append(float(mean))
            index += 1
    return {name: v[0] if len(v) == 1 else v for name, v in results.items()}


def _ten_crop_net(model, values):
    """The TEST net rewritten by engine.solvers.oversample to score and average ten crops per image."""
    from .. import formats
    from .oversample import ten_crop_net

    state = caffe_pb2.NetState(phase=caffe_pb2.TEST, level=values["level"], stage=_stages(values))
    param, crops, averaged = ten_crop_net(formats.read_net(model), state)
    for layer, crop in crops:
        log.info("Oversampling %s: ten %d x %d crops per image (corners, centre, mirrored)", layer, crop, crop)
    for blob, how in averaged:
        log.info("Averaging the ten crops at %s (%s)", blob,
                 "softmax probabilities" if how == "softmax" else "values")
    return Net(param, caffe_pb2.TEST, level=values["level"], stages=_stages(values), source=model)


# -- running a tool ------------------------------------------------------------------------
def run(program, action, *args):
    """Call `action(*args)` with glog output; a CaffeError or OSError becomes one line and status 1."""
    existing = glog_handler()
    handler = setup(stream=sys.stderr)
    try:
        action(*args)
    except CaffeError as exc:
        print(f"{program}: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"{program}: {exc.strerror or exc}{': ' + str(exc.filename) if exc.filename else ''}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{program}: interrupted", file=sys.stderr)
        return 130
    finally:
        if existing is None:
            remove(handler)
    return 0
