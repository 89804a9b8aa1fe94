#!/usr/bin/env python3
"""GPU training-step benchmark: our engine (CuPy) against PyTorch on the same GPU, nets and weights.

The GPU counterpart of cpu_train_step.py. For each net the parent runs one
child process per job, so that GPU memory pools never mix between
frameworks:

  prepare  writes the trainable prototxt, the weights (.npz) and the inputs
           every other child loads; CPU only (weights do not depend on the
           batch, so they are drawn on a batch-1 copy of the net).
  check    one forward/backward in both frameworks on the GPU, Dropout
           removed: loss, scores and the gradients of the first, middle and
           last learnable layers must agree within --check-rtol (TF32 on
           both sides). A miss is judged against torch in float64 by the
           CPU bench's rule (consistency.py): ours passes if it is at most
           4 times as far from it as torch's own TF32 result, or, for a
           gradient, within 2e-2 of it.
  ours     engine.set_mode_gpu(), engine.get_solver (SGD) .step(1) timed.
  torch    the torch_from_prototxt.py model on "cuda", torch.optim.SGD.

One step is forward, backward and the momentum SGD update (lr 0.01,
momentum 0.9, weight decay 5e-4, the prototxt's lr_mult/decay_mult). Inputs
stay on the GPU and fixed (no data layer). After --warmup untimed steps,
--iterations steps run as one block between two device synchronizations:
images/s = batch * iterations / seconds. CUDA events recorded between the
steps of that block give the median per-step time without extra syncs.
Peak memory: for ours, the high-water of bytes in use in CuPy's default
memory pool over one extra step with the allocator hooked; for torch,
torch.cuda.max_memory_allocated() over the timed steps. Usage:

    python3 bench/gpu_train_step.py [--nets caffenet,vgg16,resnet50,mobilenet_v1] [--json results.json]
"""

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections import namedtuple
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

from cpu_train_step import BASE_LR, MOMENTUM, WEIGHT_DECAY, peak_mb  # noqa: E402  (light: no NumPy, no GPU)

MIB = 1024.0 * 1024.0
DEFAULT_NETS = "caffenet,vgg16,resnet50,mobilenet_v1"
DEFAULT_TARGET = 0.8              # ours/torch images per second, per the issue
TARGETS = {"caffenet": 1.0}
TAIL_LINES = 40                   # of a failed child's stderr


# -- timing on a device -------------------------------------------------------------
Clock = namedtuple("Clock", "synchronize event elapsed_ms")


class _HostEvent:
    """CUDA-event stand-in for --device cpu: the host clock when recorded."""

    def record(self):
        self.seconds = time.perf_counter()


HOST_CLOCK = Clock(lambda: None, _HostEvent, lambda a, b: (b.seconds - a.seconds) * 1000.0)


def cupy_clock(cupy):
    return Clock(lambda: cupy.cuda.Device().synchronize(), cupy.cuda.Event, cupy.cuda.get_elapsed_time)


def torch_clock(torch):
    return Clock(torch.cuda.synchronize, lambda: torch.cuda.Event(enable_timing=True),
                 lambda a, b: a.elapsed_time(b))


def time_steps(step, clock, iterations, warmup):
    """Block time of `iterations` steps after `warmup`, and per-step times from events in that block.

    The host clock is read only after a synchronize, so queued GPU work is
    inside the block; the events add no synchronization between steps.
    """
    for _ in range(warmup):
        step()
    clock.synchronize()
    events = [clock.event() for _ in range(iterations + 1)]
    start = time.perf_counter()
    events[0].record()
    for index in range(iterations):
        step()
        events[index + 1].record()
    clock.synchronize()
    seconds = time.perf_counter() - start
    step_ms = [clock.elapsed_ms(events[i], events[i + 1]) for i in range(iterations)]
    return {"seconds": seconds, "step_ms": step_ms, "median_ms": statistics.median(step_ms)}


# -- shared by the workers ------------------------------------------------------------
def _setup_ours(engine, device):
    """GPU mode and TF32 for our engine, before any net exists; returns what was set, for the report."""
    import numpy

    info = {"numpy": numpy.__version__}
    if device != "cuda":
        return {**info, "ours_tf32": "n/a (CPU dry run)"}
    engine.set_mode_gpu()  # raises CaffeError with the reason when CuPy or the driver is missing
    set_tf32 = getattr(engine.backend, "set_tf32", None)
    if callable(set_tf32):
        try:
            set_tf32(True)
            info["ours_tf32"] = "on (engine.backend.set_tf32(True))"
        except Exception as exc:  # report it and measure FP32 rather than lose the run
            info["ours_tf32"] = f"off: engine.backend.set_tf32(True) raised {type(exc).__name__}: {exc}"
            print(f"warning: ours TF32 {info['ours_tf32']}", file=sys.stderr)
    else:
        info["ours_tf32"] = "off: engine.backend.set_tf32 does not exist, our GEMMs run in full FP32"
    import cupy

    props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
    name = props["name"]
    info.update(gpu=name.decode() if isinstance(name, bytes) else str(name), cupy=cupy.__version__,
                cuda_runtime=cupy.cuda.runtime.runtimeGetVersion())
    return info


def _setup_torch(device, cudnn_benchmark):
    """torch with TF32 allowed for matmul and cuDNN (the issue's precision); returns (torch, report)."""
    import torch

    info = {"torch": torch.__version__}
    if device != "cuda":
        return torch, info
    if not torch.cuda.is_available():
        raise SystemExit(f"torch {torch.__version__} (built for CUDA {torch.version.cuda}) sees no GPU: "
                         "torch.cuda.is_available() is False")
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = bool(cudnn_benchmark)
    info.update(gpu=torch.cuda.get_device_name(), torch_cuda=torch.version.cuda,
                cudnn=torch.backends.cudnn.version(), cudnn_benchmark=bool(cudnn_benchmark))
    return torch, info


def model_to(model, device, dtype=None):
    """TorchNet.to(device[, dtype]), checked: its layer closures hold the Parameter objects, so
    Module.to must convert them in place (it does unless torch.__future__ says otherwise)."""
    before = list(model.params.values())
    model = model.to(device=device, dtype=dtype) if dtype is not None else model.to(device)
    if any(a is not b for a, b in zip(before, model.params.values())):
        raise RuntimeError("Module.to replaced TorchNet's Parameter objects; its layers would still use the old ones")
    stray = [name for name, tensor in list(model.named_parameters()) + list(model.named_buffers())
             if tensor.device.type != device.type]
    if stray:
        raise RuntimeError(f"TorchNet.to({device}) left {', '.join(stray[:5])} on another device")
    return model


def _set_inputs(engine, net, inputs):
    """Copy host inputs into the net's Input blobs: CuPy refuses NumPy on the right of `[...] =`."""
    for name, values in inputs.items():
        blob = net.blobs[name]
        blob.data[...] = engine.backend.to_device(values, blob.xp)


def save_weights(net, path):
    """Every parameter blob of an engine Net into an .npz, keys "<layer>/<index>".

    Not HDF5 as in the CPU bench: the engine's HDF5 writer turns a "/" in a
    layer name (MobileNet's "conv1/bn") into nested groups, which its reader
    then miscounts.
    """
    import numpy as np

    from engine.backend import to_host

    np.savez(path, **{f"{layer}/{index}": to_host(blob.data) for layer, blobs in net.params.items()
                      for index, blob in enumerate(blobs)})


def read_weights(path):
    """layer name -> list of float32 arrays, from save_weights' file."""
    import numpy as np

    weights = {}
    with np.load(path) as stored:
        for key in stored.files:
            layer, _, index = key.rpartition("/")
            weights.setdefault(layer, {})[int(index)] = np.asarray(stored[key], dtype=np.float32)
    return {layer: [blobs[i] for i in sorted(blobs)] for layer, blobs in weights.items()}


def copy_weights(engine, net, weights):
    """Net.copy_from's job for save_weights' arrays: by layer name, shapes checked, onto the net's device."""
    params = net.params
    for layer, arrays in weights.items():
        if layer not in params:
            raise KeyError(f"weights for layer '{layer}', which the net does not have")
        if len(arrays) != len(params[layer]):
            raise ValueError(f"layer '{layer}': {len(arrays)} weight arrays for {len(params[layer])} blobs")
        for index, (values, blob) in enumerate(zip(arrays, params[layer])):
            if tuple(values.shape) != tuple(blob.shape):
                raise ValueError(f"layer '{layer}' blob {index}: weights {values.shape}, net {blob.shape}")
            blob.data[...] = engine.backend.to_device(values, blob.xp)


def _load_inputs(work):
    import numpy as np

    with np.load(work / "inputs.npz") as stored:
        return {name: stored[name] for name in stored.files}


def relative_error(values, reference):
    """||values - reference|| / ||reference||; NaN stays NaN, so that `error <= tolerance` fails on it."""
    import numpy as np

    reference = np.asarray(reference, dtype=np.float64)
    diff = np.asarray(values, dtype=np.float64) - reference
    return float(np.linalg.norm(diff) / max(float(np.linalg.norm(reference)), 1e-30))


# -- workers (each runs in its own process) -------------------------------------------
def worker_prepare(args, work):
    import numpy as np
    from google.protobuf import text_format

    import engine
    from bench_nets import GPU_NETS, init_weights, make_inputs, training_param

    param, source = training_param(args.net, args.batch, args.size, table=GPU_NETS)
    (work / "train.prototxt").write_text(text_format.MessageToString(param))
    small, _ = training_param(args.net, 1, args.size, table=GPU_NETS)
    net = engine.Net(small, engine.TRAIN)
    init_weights(net)
    save_weights(net, work / "weights.npz")
    np.savez(work / "inputs.npz", **make_inputs(net, small, batch=args.batch))
    return {"source": str(source), "layers": len(param.layer)}


def _pick_gradient_layers(net):
    """First, middle and last layer with parameters (BatchNorm's statistics are not learned):
    the check's cost stays one forward/backward plus a few downloads."""
    types = {name: layer.type for name, layer in net.layer_dict.items()}
    names = [name for name in net.params if types.get(name) != "BatchNorm"]
    picks = [names[0], names[len(names) // 2], names[-1]] if names else []
    return list(dict.fromkeys(picks))


def _our_check_values(engine, param, weights, inputs, scores, loss_top):
    import numpy as np

    from engine.backend import to_host

    net = engine.Net(param, engine.TRAIN)
    copy_weights(engine, net, weights)
    _set_inputs(engine, net, inputs)
    net.forward_from_to()
    net.backward_from_to()
    out = {"loss": np.array(to_host(net.blobs[loss_top].data)), scores: np.array(to_host(net.blobs[scores].data))}
    for layer in _pick_gradient_layers(net):
        # Weights only: a bias just before a BatchNorm has a gradient of zero up to rounding,
        # which no relative error measures.
        out[f"d{layer}/0"] = np.array(to_host(net.params[layer][0].diff))
    return out


def _torch_check_values(torch, param, weights, inputs, scores, loss_top, keys, device, double):
    import numpy as np

    from torch_from_prototxt import TorchNet

    model = model_to(TorchNet(param, weights), torch.device(device), torch.float64 if double else None)
    tensors = {name: torch.from_numpy(values.astype(np.float64) if double else values).to(device)
               for name, values in inputs.items()}
    blobs = model(tensors)
    model.loss(blobs).backward()
    out = {"loss": blobs[loss_top].detach().cpu().numpy(), scores: blobs[scores].detach().cpu().numpy()}
    params = model.caffe_params()
    for key in keys:
        if not key.startswith("d"):
            continue
        layer, _, index = key[1:].rpartition("/")
        tensors_of_layer = params.get(layer, [])
        tensor = tensors_of_layer[int(index)] if int(index) < len(tensors_of_layer) else None
        if tensor is not None and tensor.grad is not None:
            out[key] = tensor.grad.detach().cpu().numpy()
    return out


def worker_check(args, work):
    import consistency
    import engine
    from bench_nets import loss_layer, without_dropout
    from engine import formats

    info = _setup_ours(engine, args.device)
    torch, torch_info = _setup_torch(args.device, args.cudnn_benchmark)
    param = without_dropout(formats.read_net(str(work / "train.prototxt")))
    loss = loss_layer(param)
    scores, loss_top = loss.bottom[0], loss.top[0]
    inputs = _load_inputs(work)
    weights = read_weights(work / "weights.npz")
    ours = _our_check_values(engine, param, weights, inputs, scores, loss_top)
    if args.device == "cuda":
        import gc

        import cupy

        gc.collect()  # our net is garbage now, but layers may hold cycles
        cupy.get_default_memory_pool().free_all_blocks()  # leave the GPU to torch
    theirs = _torch_check_values(torch, param, weights, inputs, scores, loss_top, list(ours), args.device, False)
    report = {"errors": {}, "failures": [], "tolerance": args.check_rtol, "oracle": None, **info, **torch_info}
    misses = []
    for key, mine in ours.items():
        if key not in theirs:
            report["failures"].append(f"{key}: the torch model has no such value")
            continue
        error = relative_error(mine, theirs[key])
        report["errors"][key] = error
        if not error <= args.check_rtol:
            misses.append(key)
    if misses:
        # TF32 on both sides may differ by more than the tolerance in deep nets; float64 decides.
        if args.device == "cuda":
            torch.cuda.empty_cache()
        oracle = _torch_check_values(torch, param, weights, inputs, scores, loss_top, misses, args.device, True)
        report["oracle"] = {}
        for key in misses:
            mine, torch_error = relative_error(ours[key], oracle[key]), relative_error(theirs[key], oracle[key])
            report["oracle"][key] = (mine, torch_error)
            # The CPU bench's rule (consistency.py): as close as RATIO times torch's own error, or within
            # the gradient floor, wide because rounding flips ReLU gates and max-pooling ties.
            floor = max(args.check_rtol, consistency.GRADIENT_FLOOR if key.startswith("d") else 0.0)
            if not mine <= max(consistency.RATIO * torch_error, floor):
                report["failures"].append(
                    f"{key}: ours and torch differ by {report['errors'][key]:.2e} (relative); against torch "
                    f"float64 ours is {mine:.2e} off, torch's own result {torch_error:.2e}")
    report["ok"] = not report["failures"]
    return report


def _our_gpu_memory(cupy, net, step, synchronize):
    """MiB figures of CuPy's default pool, from one extra, instrumented step after the timed ones.

    peak_mib hooks the allocator (thread-local) for the whole of one forward,
    one backward and one solver step, and keeps the high-water of bytes in use:
    the counterpart of torch.cuda.max_memory_allocated. The used-after samples
    miss temporaries freed within a layer; pool_held_mib is what the pool keeps
    (CuPy never returns it unasked), the counterpart of max_memory_reserved.
    """
    pool = cupy.get_default_memory_pool()
    synchronize()
    high = [pool.used_bytes()]

    def tracking_malloc(size):
        pointer = pool.malloc(size)
        used = pool.used_bytes()
        if used > high[0]:
            high[0] = used
        return pointer

    using_allocator = getattr(cupy.cuda, "using_allocator", None)
    if using_allocator is None:
        high = [None]
        import contextlib

        hooked = contextlib.nullcontext()
    else:
        hooked = using_allocator(tracking_malloc)
    with hooked:
        net.forward_from_to()
        synchronize()
        after_forward = pool.used_bytes()
        net.backward_from_to()
        synchronize()
        after_backward = pool.used_bytes()
        step()
        synchronize()
    free, total = cupy.cuda.runtime.memGetInfo()
    peak = high[0] if high[0] is not None else max(after_forward, after_backward)
    return {"peak_mib": peak / MIB,
            "peak_how": "high-water of bytes in use in CuPy's default memory pool over one full step (allocator "
                        "hook)" if high[0] is not None else
                        "CuPy pool bytes in use after a forward / a backward (no cupy.cuda.using_allocator)",
            "used_after_forward_mib": after_forward / MIB, "used_after_backward_mib": after_backward / MIB,
            "pool_held_mib": pool.total_bytes() / MIB, "device_used_mib": (total - free) / MIB}


def worker_ours(args, work):
    import engine
    from cpu_train_step import _our_step

    info = _setup_ours(engine, args.device)
    cuda = args.device == "cuda"
    if cuda:
        import cupy

        clock = cupy_clock(cupy)
    else:
        clock = HOST_CLOCK
    weights = read_weights(work / "weights.npz")
    net, step, how = _our_step(engine, work, work / "train.prototxt", solver_mode="GPU" if cuda else "CPU",
                               copy_weights=lambda net: copy_weights(engine, net, weights))
    _set_inputs(engine, net, _load_inputs(work))
    result = time_steps(step, clock, args.iterations, args.warmup)
    if cuda:
        result.update(_our_gpu_memory(cupy, net, step, clock.synchronize))
    else:
        result.update(peak_mib=peak_mb(), peak_how="the child's peak RSS (ru_maxrss; CPU dry run)")
    return {**result, **info, "step_how": how}


def worker_torch(args, work):
    import numpy as np

    from engine import formats
    from torch_from_prototxt import TorchNet

    torch, info = _setup_torch(args.device, args.cudnn_benchmark)
    cuda = args.device == "cuda"
    device = torch.device(args.device)
    model = model_to(TorchNet(formats.read_net(str(work / "train.prototxt")), read_weights(work / "weights.npz")),
                     device)
    optimizer = torch.optim.SGD(model.param_groups(BASE_LR, WEIGHT_DECAY), lr=BASE_LR, momentum=MOMENTUM)
    inputs = {name: torch.from_numpy(np.ascontiguousarray(values)).to(device)
              for name, values in _load_inputs(work).items()}

    def step():
        optimizer.zero_grad()
        model.loss(model(inputs)).backward()
        optimizer.step()

    if not cuda:
        result = time_steps(step, HOST_CLOCK, args.iterations, args.warmup)
        return {**result, **info, "peak_mib": peak_mb(), "peak_how": "the child's peak RSS (ru_maxrss; CPU dry run)"}
    clock = torch_clock(torch)
    for _ in range(args.warmup):
        step()
    clock.synchronize()
    # Peaks from here on: the steady state, as our instrumented step measures it (and without
    # cudnn.benchmark's trial workspaces).
    torch.cuda.reset_peak_memory_stats()
    result = time_steps(step, clock, args.iterations, 0)
    free, total = torch.cuda.mem_get_info()
    result.update(peak_mib=torch.cuda.max_memory_allocated() / MIB,
                  peak_how="torch.cuda.max_memory_allocated() over the timed steps",
                  reserved_mib=torch.cuda.max_memory_reserved() / MIB, device_used_mib=(total - free) / MIB,
                  optimizer="torch.optim.SGD(momentum=0.9), default (foreach) implementation")
    return {**result, **info}


WORKERS = {"prepare": worker_prepare, "check": worker_check, "ours": worker_ours, "torch": worker_torch}


# -- the parent ---------------------------------------------------------------------
class WorkerFailed(Exception):
    """A child exited non-zero or timed out; the message carries the tail of its stderr."""


def run_child(kind, args, net, work):
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", kind, "--net", net["name"],
               "--batch", str(net["batch"]), "--size", str(net["size"]), "--workdir", str(work),
               "--iterations", str(args.iterations), "--warmup", str(args.warmup), "--device", args.device,
               "--check-rtol", repr(args.check_rtol)]
    if args.cudnn_benchmark:
        command.append("--cudnn-benchmark")
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=args.timeout)
    except subprocess.TimeoutExpired as exc:
        tail = (exc.stderr or b"")[-4000:]
        tail = tail.decode(errors="replace") if isinstance(tail, bytes) else tail
        raise WorkerFailed(f"{kind} worker for {net['name']} ran past --timeout {args.timeout} s and was "
                           f"killed{(':' + chr(10) + tail) if tail.strip() else ''}") from None
    if done.returncode != 0:
        tail = "\n".join(done.stderr.rstrip().splitlines()[-TAIL_LINES:])
        hint = ("\n(out of GPU memory: --batch-scale 0.5 halves every batch)"
                if "OutOfMemory" in tail or "out of memory" in tail else "")
        raise WorkerFailed(f"{kind} worker for {net['name']} (batch {net['batch']}) failed "
                           f"(exit {done.returncode}); the end of its stderr:\n{tail}{hint}")
    return json.loads((work / f"{kind}.json").read_text())


def time_both(args, net, work, record):
    """Alternate ours/torch children `--rounds` times; keep each framework's best images/s.

    A failure of one framework's child is recorded and the other still runs.
    """
    best = {}
    for _ in range(args.rounds):
        for kind in ("ours", "torch"):
            if record.get(f"{kind}_error"):
                continue
            try:
                result = run_child(kind, args, net, work)
            except WorkerFailed as exc:
                record[f"{kind}_error"] = str(exc)
                print(f"{net['name']}: {exc}", file=sys.stderr, flush=True)
                continue
            result["images_per_s"] = net["batch"] * args.iterations / result["seconds"]
            if kind in best and best[kind]["images_per_s"] >= result["images_per_s"]:
                best[kind]["peak_mib"] = max(best[kind]["peak_mib"], result["peak_mib"])
                continue
            if kind in best:
                result["peak_mib"] = max(result["peak_mib"], best[kind]["peak_mib"])
            best[kind] = result
    record.update(best)


def target_of(name):
    return TARGETS.get(name, DEFAULT_TARGET)


def markdown_table(head, rows):
    lines = [tuple(head)] + [tuple(row) for row in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    out = ["| " + " | ".join(cell.ljust(w) for cell, w in zip(line, widths)) + " |" for line in lines]
    out.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(out)


def _fmt(record, kind, key, spec):
    value = (record.get(kind) or {}).get(key)
    if value is None:
        if record.get("check_failed"):
            return "not timed"
        return "failed" if record.get(f"{kind}_error") or record.get("prepare_error") else "-"
    return format(value, spec)


def summary_rows(records):
    rows, memory_rows = [], []
    for name, record in records.items():
        ours, theirs = record.get("ours"), record.get("torch")
        ratio = ours["images_per_s"] / theirs["images_per_s"] if ours and theirs else None
        record["ratio"], record["target"] = ratio, target_of(name)
        record["verdict"] = None if ratio is None else ("PASS" if ratio >= record["target"] else "MISS")
        rows.append((name, str(record["batch"]), _fmt(record, "ours", "images_per_s", ".1f"),
                     _fmt(record, "torch", "images_per_s", ".1f"), "-" if ratio is None else f"{ratio:.2f}",
                     f">= {record['target']:.1f}", record["verdict"] or "-",
                     _fmt(record, "ours", "median_ms", ".1f"), _fmt(record, "torch", "median_ms", ".1f"),
                     _fmt(record, "ours", "peak_mib", ".0f"), _fmt(record, "torch", "peak_mib", ".0f")))
        memory_rows.append((name, _fmt(record, "ours", "used_after_forward_mib", ".0f"),
                            _fmt(record, "ours", "used_after_backward_mib", ".0f"),
                            _fmt(record, "ours", "pool_held_mib", ".0f"), _fmt(record, "torch", "reserved_mib", ".0f"),
                            _fmt(record, "ours", "device_used_mib", ".0f"),
                            _fmt(record, "torch", "device_used_mib", ".0f")))
    return rows, memory_rows


def environment(records):
    """GPU name and versions, as the workers saw them (the parent never touches the GPU)."""
    env = {"python": platform.python_version()}
    for record in records.values():
        for kind in ("torch", "ours", "check"):
            for key in ("gpu", "torch", "torch_cuda", "cudnn", "cupy", "cuda_runtime", "numpy", "ours_tf32"):
                value = (record.get(kind) or {}).get(key)
                if value is not None:
                    env.setdefault(key, value)
    return env


def print_report(args, records, env):
    dry = args.device != "cuda"
    print()
    if dry:
        print("DRY RUN on the CPU (--device cpu): the pipeline works; these numbers are not the benchmark.")
    print(f"GPU: {env.get('gpu', '?')}; torch {env.get('torch', '?')} (CUDA {env.get('torch_cuda', '?')}, "
          f"cuDNN {env.get('cudnn', '?')}); cupy {env.get('cupy', '?')} (CUDA runtime "
          f"{env.get('cuda_runtime', '?')}); numpy {env.get('numpy', '?')}; Python {env['python']}")
    if not dry:
        print(f"precision: FP32 with TF32 allowed; ours TF32: {env.get('ours_tf32', '?')}; torch: "
              f"matmul.allow_tf32 and cudnn.allow_tf32 True, cudnn.benchmark "
              f"{'on' if args.cudnn_benchmark else 'off'}")
    print(f"one step = forward + backward + momentum SGD (lr {BASE_LR}, momentum {MOMENTUM}, weight decay "
          f"{WEIGHT_DECAY}); {args.iterations} steps timed as one synchronized block after {args.warmup} warm-up, "
          f"best of {args.rounds} round(s); img/s = batch * steps / seconds; ms = median step "
          f"{'(host clock)' if dry else 'from CUDA events'}; ratio = ours/torch img/s; target per the issue")
    rows, memory_rows = summary_rows(records)
    print(markdown_table(("net", "batch", "ours img/s", "torch img/s", "ours/torch", "target", "verdict",
                          "ours ms", "torch ms", "ours peak MiB", "torch peak MiB"), rows))
    how = {kind: next((r[kind]["peak_how"] for r in records.values() if r.get(kind)), "-")
           for kind in ("ours", "torch")}
    print(f"peak MiB: ours = {how['ours']}; torch = {how['torch']}")
    if dry:
        return
    print(markdown_table(("net", "ours used after fwd", "ours used after bwd", "ours pool held",
                          "torch max reserved", "ours device used", "torch device used"), memory_rows))
    print("MiB. 'used after' = CuPy pool bytes in use sampled after a forward / a backward (temporaries "
          "freed inside a layer are not in it); 'pool held' = cupy pool total_bytes() (what CuPy keeps), "
          "the counterpart of torch's max reserved; 'device used' = total - free from cudaMemGetInfo "
          "(includes the CUDA context and library workspaces) after the run.")


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Batches (before --batch-scale): " + ", ".join(
            f"{name} {batch} at {size}x{size}" for name, (batch, size, _) in _gpu_nets().items())
        + f". Targets: ours/torch >= {DEFAULT_TARGET} (caffenet >= {TARGETS['caffenet']}); a miss is printed, "
          "never an exit status. Exit status: 0 when every child worked, 1 when a child failed or the "
          "check found a mismatch, 2 on a usage error or when no GPU can be used.")
    parser.add_argument("--nets", default=DEFAULT_NETS, help=f"comma-separated (default: {DEFAULT_NETS})")
    parser.add_argument("--iterations", type=int, default=20, help="timed steps, run as one block (default 20)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first (default 5)")
    parser.add_argument("--batch-scale", type=float, default=1.0,
                        help="multiply every batch by this (rounded, at least 1), for quick smoke runs")
    parser.add_argument("--skip-check", action="store_true",
                        help="time without first checking that both frameworks compute the same thing")
    parser.add_argument("--check-rtol", type=float, default=1e-2,
                        help="relative tolerance of the check, ours against torch, both TF32 (default 1e-2)")
    parser.add_argument("--cudnn-benchmark", action="store_true",
                        help="set torch.backends.cudnn.benchmark = True on the torch side (default off)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="alternate the ours/torch children this many times, keeping the best images/s")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds before a child is killed (default 1800)")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                        help="cpu: a dry run of the whole script on NumPy and torch's CPU, for testing it "
                             "without a GPU; its numbers mean nothing (default cuda)")
    parser.add_argument("--json", help="also write every result to this file")
    parser.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    parser.add_argument("--net", help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.iterations < 1 or args.warmup < 0 or args.rounds < 1 or args.timeout < 1:
        parser.error("--iterations, --rounds and --timeout must be positive, --warmup non-negative")
    if not args.batch_scale > 0 or not args.check_rtol > 0:
        parser.error("--batch-scale and --check-rtol must be positive")
    return args


def _gpu_nets():
    from bench_nets import GPU_NETS

    return GPU_NETS


def gpu_problem(device):
    """Why the benchmark cannot run here, or None: checked before any child starts."""
    if device != "cuda":
        return None
    import importlib.util

    from engine import backend

    reason = backend.gpu_unavailable_reason()
    if reason:
        return f"no usable GPU for our engine: {reason}"
    if importlib.util.find_spec("torch") is None:
        return "PyTorch is not installed; the benchmark compares against it (pip install torch)"
    return None


def check_summary(check):
    """One line: loss, scores and the largest gradient difference, and how misses were judged."""
    errors = check["errors"]
    gradients = {key: value for key, value in errors.items() if key.startswith("d")}
    worst = max(gradients, key=lambda k: gradients[k] if gradients[k] == gradients[k] else float("inf"),
                default=None)
    parts = [f"{key} {errors[key]:.1e}" for key in errors if not key.startswith("d")]
    if worst is not None:
        parts.append(f"gradients ({len(gradients)} blobs) up to {gradients[worst]:.1e} ({worst})")
    line = (f"check, ours against torch (relative difference; tolerance {check['tolerance']:.0e}): "
            + ", ".join(parts))
    if check.get("oracle"):
        line += ("; beyond tolerance, distance to torch float64, ours / torch: " + ", ".join(
            f"{key} {mine:.1e} / {theirs:.1e}" for key, (mine, theirs) in check["oracle"].items()))
    return line + (": ok" if check["ok"] else ": FAILED")


def run_net(args, net, work):
    """Prepare, check, then time one net; returns its record (errors included, never raises)."""
    name = net["name"]
    record = {"batch": net["batch"], "size": net["size"]}
    try:
        prepared = run_child("prepare", args, net, work)
    except WorkerFailed as exc:
        record["prepare_error"] = str(exc)
        print(f"{name}: {exc}", file=sys.stderr, flush=True)
        return record
    record["source"] = prepared["source"]
    print(f"{name}: batch {net['batch']} at {net['size']}x{net['size']}, built from {prepared['source']}",
          flush=True)
    if not args.skip_check:
        try:
            check = run_child("check", args, net, work)
        except WorkerFailed as exc:
            # Time anyway: the failing side's timing child will say the same, the other's numbers stand.
            record["check_error"] = str(exc)
            print(f"{name}: {exc}\n{name}: timing anyway", file=sys.stderr, flush=True)
        else:
            record["check"] = check
            print(f"{name}: {check_summary(check)}", flush=True)
            if not check["ok"]:
                record["check_failed"] = True
                print(f"{name}: the torch model does not compute what ours does; not timed (--skip-check times "
                      "anyway):\n  " + "\n  ".join(check["failures"]), file=sys.stderr, flush=True)
                return record
    time_both(args, net, work, record)
    numbers = [f"{kind} {record[kind]['images_per_s']:.1f} img/s" for kind in ("ours", "torch") if kind in record]
    if numbers:
        print(f"{name}: " + ", ".join(numbers), flush=True)
    return record


def failed(record):
    return any(key.endswith("_error") for key in record) or record.get("check_failed", False)


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        work = Path(args.workdir)
        result = WORKERS[args.worker](args, work)
        (work / f"{args.worker}.json").write_text(json.dumps(result))
        return 0
    table = _gpu_nets()
    names = [n.strip() for n in args.nets.split(",") if n.strip()]
    unknown = [n for n in names if n not in table]
    if unknown or not names:
        print(f"unknown net(s): {', '.join(unknown) or '(none given)'} (known: {', '.join(table)})", file=sys.stderr)
        return 2
    problem = gpu_problem(args.device)
    if problem:
        print(f"cannot run the GPU benchmark: {problem}. (--device cpu runs the script as a dry run.)",
              file=sys.stderr)
        return 2
    records = {}
    for name in names:
        batch, size, _ = table[name]
        net = {"name": name, "batch": max(1, int(round(batch * args.batch_scale))), "size": size}
        with tempfile.TemporaryDirectory(prefix=f"gpu-bench-{name}-") as tmp:
            records[name] = run_net(args, net, Path(tmp))
    env = environment(records)
    print_report(args, records, env)
    any_failed = any(failed(record) for record in records.values())
    if args.json:
        settings = {key: getattr(args, key) for key in ("nets", "iterations", "warmup", "batch_scale", "skip_check",
                                                         "check_rtol", "cudnn_benchmark", "rounds", "device")}
        Path(args.json).write_text(json.dumps({"environment": env, "settings": settings, "nets": records,
                                               "failed": any_failed}, indent=2))
    if any_failed:
        print("\nfailed: " + ", ".join(name for name, record in records.items() if failed(record))
              + " (messages above)", file=sys.stderr)
    return 1 if any_failed else 0


if __name__ == "__main__":
    sys.exit(main())
