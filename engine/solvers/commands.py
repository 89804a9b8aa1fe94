"""Caffe's command-line actions (tools/caffe.cpp): train, test, time, device_query.

The scripts in tools/ parse flags and call these; every user mistake surfaces
as a CaffeError, which `run` turns into one line on stderr and exit status 1.
"""

import importlib
import logging
import sys
import time
from pathlib import Path

import numpy as np

from .. import backend, caffe_pb2
from ..errors import CaffeError, SolverError
from ..log import Progress, at, setup
from ..net import Net
from . import flags as gflags
from . import signals, solver_class
from .base import _g
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
        return list(range(_device_count()))
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise CaffeError(f"--gpu must be device IDs separated by ',' or 'all', got '{text}'") from None


def set_mode(gpus):
    """GPU mode on the one device asked for; the CPU, with one warning line, when no GPU is usable."""
    if gpus:
        reason = backend.gpu_unavailable_reason()
        if reason:
            log.warning("GPU %s requested but %s; running on the CPU instead",
                        ",".join(map(str, gpus)), reason, extra=at("caffe.cpp:212"))
            gpus = []
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


def _synchronize():
    if backend.mode() == "gpu":
        backend.array_module().cuda.runtime.deviceSynchronize()


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
    gpu_flag = values["gpu"]
    if not gpu_flag and param.HasField("solver_mode") and param.solver_mode == caffe_pb2.SolverParameter.GPU:
        gpu_flag = str(param.device_id)
    set_mode(_gpu_list(gpu_flag))
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
    set_mode(_gpu_list(values["gpu"]))
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
                log.info("Batch %d, %s = %s", i, name, _g(value), extra=at("caffe.cpp:313"))
        flat = np.concatenate([data for _, data in batch]) if batch else np.zeros(0, np.float32)
        scores = flat if scores is None else scores + flat
    loss = loss / np.float32(max(iterations, 1))
    log.info("Loss: %s", _g(loss), extra=at("caffe.cpp:318"))
    results, index = {}, 0
    weights = net.blob_loss_weights
    for name in net.outputs:
        count = net.blobs[name].count
        for k in range(count):
            mean = np.float32(scores[index] if scores is not None else 0) / np.float32(max(iterations, 1))
            weight = np.float32(weights[name])
            suffix = f" (* {_g(weight)} = {_g(weight * mean)} loss)" if weight else ""
            log.info("%s = %s%s", name, _g(mean), suffix, extra=at("caffe.cpp:330"))
            results.setdefault(name, []).append(float(mean))
            index += 1
    return {name: v[0] if len(v) == 1 else v for name, v in results.items()}


# -- time ----------------------------------------------------------------------------------
def _phase(text):
    if not text:
        return caffe_pb2.TRAIN
    if text not in ("TRAIN", "TEST"):
        raise CaffeError(f'phase must be "TRAIN" or "TEST", got "{text}"')
    return caffe_pb2.TRAIN if text == "TRAIN" else caffe_pb2.TEST


def _ms(seconds):
    return _g(seconds * 1000.0)


def time_net(values):
    """`caffe time`: per-layer forward and backward times averaged over --iterations."""
    model = _scoring_net(values, "time")
    set_mode(_gpu_list(values["gpu"]))
    net = Net(model, _phase(values["phase"]), level=values["level"], stages=_stages(values))
    if values["weights"]:
        for path in values["weights"].split(","):
            net.copy_from(path.strip())
    log.info("Performing Forward", extra=at("caffe.cpp:352"))
    log.info("Initial loss: %s", _g(net.forward_from_to()), extra=at("caffe.cpp:357"))
    log.info("Performing Backward", extra=at("caffe.cpp:358"))
    net.backward_from_to()
    layers = net.layers
    bottoms = [net._bottom_blobs(i) for i in range(len(layers))]
    tops = [net._top_blobs(i) for i in range(len(layers))]
    log.info("*** Benchmark begins ***", extra=at("caffe.cpp:365"))
    iterations = _positive_iterations(values)
    log.info("Testing for %d iterations.", iterations, extra=at("caffe.cpp:366"))
    forward = np.zeros(len(layers))
    backward = np.zeros(len(layers))
    forward_total = backward_total = 0.0
    _synchronize()
    total_start = time.perf_counter()
    for j in range(iterations):
        iter_start = time.perf_counter()
        for i, layer in enumerate(layers):
            start = time.perf_counter()
            layer.run_forward(bottoms[i], tops[i])
            _synchronize()
            forward[i] += time.perf_counter() - start
        middle = time.perf_counter()
        forward_total += middle - iter_start
        for i in range(len(layers) - 1, -1, -1):
            start = time.perf_counter()
            layers[i].run_backward(tops[i], net.bottom_need_backward[i], bottoms[i])
            _synchronize()
            backward[i] += time.perf_counter() - start
        backward_total += time.perf_counter() - middle
        log.info("Iteration: %d forward-backward time: %s ms.", j + 1, _ms(time.perf_counter() - iter_start),
                 extra=at("caffe.cpp:394"))
    total = time.perf_counter() - total_start
    n = max(iterations, 1)
    log.info("Average time per layer: ", extra=at("caffe.cpp:397"))
    for i, layer in enumerate(layers):
        log.info("%10s\tforward: %s ms.", layer.name, _ms(forward[i] / n), extra=at("caffe.cpp:400"))
        log.info("%10s\tbackward: %s ms.", layer.name, _ms(backward[i] / n), extra=at("caffe.cpp:403"))
    log.info("Average Forward pass: %s ms.", _ms(forward_total / n), extra=at("caffe.cpp:408"))
    log.info("Average Backward pass: %s ms.", _ms(backward_total / n), extra=at("caffe.cpp:410"))
    log.info("Average Forward-Backward: %s ms.", _ms(total / n), extra=at("caffe.cpp:412"))
    log.info("Total Time: %s ms.", _ms(total), extra=at("caffe.cpp:413"))
    log.info("*** Benchmark ends ***", extra=at("caffe.cpp:414"))
    return {"forward_ms": forward_total / n * 1000, "backward_ms": backward_total / n * 1000}


# -- device_query --------------------------------------------------------------------------
def device_query(values):
    if not values["gpu"]:
        raise CaffeError("Need a device ID to query.")
    reason = backend.gpu_unavailable_reason()
    if reason:
        raise CaffeError(f"device_query needs a GPU, but {reason}")
    runtime = importlib.import_module("cupy").cuda.runtime
    for device in _gpu_list(values["gpu"]):
        log.info("Querying GPUs %d", device, extra=at("caffe.cpp:131"))
        p = runtime.getDeviceProperties(device)
        name = p["name"].decode() if isinstance(p["name"], bytes) else p["name"]
        rows = [("Device id", device), ("Major revision number", p["major"]),
                ("Minor revision number", p["minor"]), ("Name", name),
                ("Total global memory", p["totalGlobalMem"]), ("Total shared memory per block", p["sharedMemPerBlock"]),
                ("Total registers per block", p["regsPerBlock"]), ("Warp size", p["warpSize"]),
                ("Maximum memory pitch", p["memPitch"]), ("Maximum threads per block", p["maxThreadsPerBlock"]),
                ("Maximum dimension of block", ", ".join(map(str, p["maxThreadsDim"]))),
                ("Maximum dimension of grid", ", ".join(map(str, p["maxGridSize"]))),
                ("Clock rate", p["clockRate"]), ("Total constant memory", p["totalConstMem"]),
                ("Texture alignment", p["textureAlignment"]),
                ("Concurrent copy and execution", "Yes" if p.get("deviceOverlap") else "No"),
                ("Number of multiprocessors", p["multiProcessorCount"]),
                ("Kernel execution timeout", "Yes" if p.get("kernelExecTimeoutEnabled") else "No")]
        for label, value in rows:
            log.info("%-31s%s", label + ":", value, extra=at("common.cpp:168"))


# -- running a tool ------------------------------------------------------------------------
def run(program, action, *args):
    """Call `action(*args)` with glog output; a CaffeError or OSError becomes one line and status 1."""
    setup()
    try:
        action(*args)
    except CaffeError as exc:
        print(f"{program}: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"{program}: {exc.strerror or exc}{': ' + exc.filename if exc.filename else ''}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{program}: interrupted", file=sys.stderr)
        return 130
    return 0
