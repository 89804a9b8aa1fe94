"""`caffe time` (per-layer forward and backward times) and `caffe device_query`.

Timings synchronise the GPU after each layer, so a layer's time is its own and
not the previous layer's queued work.
"""

import importlib
import logging
import time

import numpy as np

from .. import backend, caffe_pb2
from ..errors import CaffeError
from ..log import at, number
from ..net import Net
from .commands import _gpu_list, _positive_iterations, _scoring_net, _stages, set_mode

log = logging.getLogger("engine.caffe")


def _synchronize():
    if backend.mode() == "gpu":
        backend.array_module().cuda.runtime.deviceSynchronize()


# -- time ----------------------------------------------------------------------------------
def _phase(text):
    if not text:
        return caffe_pb2.TRAIN
    if text not in ("TRAIN", "TEST"):
        raise CaffeError(f'phase must be "TRAIN" or "TEST", got "{text}"')
    return caffe_pb2.TRAIN if text == "TRAIN" else caffe_pb2.TEST


def _ms(seconds):
    return number(seconds * 1000.0)


def time_net(values):
    """`caffe time`: per-layer forward and backward times averaged over --iterations."""
    model = _scoring_net(values, "time")
    set_mode(_gpu_list(values["gpu"]), explicit=values["gpu"] != "all")
    net = Net(model, _phase(values["phase"]), level=values["level"], stages=_stages(values))
    if values["weights"]:
        for path in values["weights"].split(","):
            net.copy_from(path.strip())
    log.info("Performing Forward", extra=at("caffe.cpp:352"))
    log.info("Initial loss: %s", number(net.forward_from_to()), extra=at("caffe.cpp:357"))
    log.info("Performing Backward", extra=at("caffe.cpp:358"))
    net.backward_from_to()
    layers = net.layers
    bottoms = [net.bottom_blobs(i) for i in range(len(layers))]
    tops = [net.top_blobs(i) for i in range(len(layers))]
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
        # CUDA 13 dropped some fields from cudaDeviceProp; the attribute API still answers.
        attributes = {"clockRate": 13, "kernelExecTimeoutEnabled": 17, "deviceOverlap": 15, "memPitch": 11,
                      "textureAlignment": 14, "totalConstMem": 9, "regsPerBlock": 12, "sharedMemPerBlock": 8}
        for key, attribute in attributes.items():
            if key not in p:
                p[key] = runtime.deviceGetAttribute(attribute, device)
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
