"""Convolution through cuDNN's graph API, on CuPy memory.

NVIDIA's cuDNN frontend Python package (`pip install nvidia-cudnn-frontend`,
imported as `cudnn`) builds one execution plan per (operation, shapes,
geometry, data type, TF32 choice), cached here; running a plan passes the
CuPy arrays' device pointers. Forward, backward-data and backward-filter
are the three graphs; groups follow from the filter's shape, so grouped and
depthwise convolutions are one call each. Without the package, or for a
geometry cuDNN does not support, `plan` returns None and the layer keeps
its im2col + cuBLAS path.

With AUTOTUNE (the default), a new plan times every engine cuDNN offers on
scratch arrays of its shapes and keeps the fastest, as Caffe's cuDNN layers
and PyTorch's `cudnn.benchmark` do; otherwise cuDNN's heuristic picks.
Engines needing more than WORKSPACE_LIMIT bytes of scratch are not tried.
The environment variable ENGINE_CUDNN_AUTOTUNE=0 turns autotuning off.
"""

import logging
import os

import numpy as np

from .. import backend

log = logging.getLogger("engine.cudnn")

# Set to False to keep every convolution on im2col + cuBLAS (tests compare the two).
ENABLED = True
AUTOTUNE = os.environ.get("ENGINE_CUDNN_AUTOTUNE", "1") != "0"
WORKSPACE_LIMIT = 1 << 30

_FRONTEND = []
_HANDLES = {}
_PLANS = {}


def frontend():
    """The `cudnn` frontend module, or None when it is not installed or cannot load cuDNN."""
    if not _FRONTEND:
        try:
            import cudnn

            cudnn.backend_version()
        except Exception as exc:  # not installed, or libcudnn missing: im2col serves
            log.debug("cuDNN frontend unavailable: %s", exc)
            cudnn = None
        _FRONTEND.append(cudnn)
    return _FRONTEND[0]


def available():
    return ENABLED and frontend() is not None


def _handle():
    import cupy

    device = cupy.cuda.runtime.getDevice()
    handle = _HANDLES.get(device)
    if handle is None:
        handle = _HANDLES[device] = frontend().create_handle()
    return handle


def _packed_strides(shape):
    strides, step = [], 1
    for size in reversed(shape):
        strides.append(step)
        step *= size
    return list(reversed(strides))


class Plan:
    """One built cuDNN graph: `run(a, b, out)` computes out from the two inputs."""

    def __init__(self, graph, inputs, output, workspace_size):
        self.graph = graph
        self.inputs = inputs
        self.output = output
        self.workspace_size = workspace_size

    def run(self, a, b, out):
        import cupy

        workspace = cupy.empty(max(self.workspace_size, 1), dtype=np.uint8)
        pack = {self.inputs[0]: a.data.ptr, self.inputs[1]: b.data.ptr, self.output: out.data.ptr}
        self.graph.execute(pack, workspace.data.ptr, handle=_handle())


def _build(kind, x_shape, w_shape, y_shape, pad, stride, dilation, dtype, tf32):
    cudnn = frontend()
    kinds = {np.dtype(np.float32): cudnn.data_type.FLOAT, np.dtype(np.float64): cudnn.data_type.DOUBLE}
    data_type = kinds[np.dtype(dtype)]
    graph = cudnn.pygraph(io_data_type=data_type, intermediate_data_type=data_type,
                          compute_data_type=data_type, handle=_handle())

    def tensor(name, shape):
        return graph.tensor(name=name, dim=list(shape), stride=_packed_strides(shape), data_type=data_type)

    modes = getattr(cudnn, "convolution_mode", None) or cudnn._pybind_module.convolution_mode
    geometry = dict(padding=list(pad), stride=list(stride), dilation=list(dilation),
                    convolution_mode=modes.CROSS_CORRELATION, compute_data_type=data_type)
    if kind == "forward":
        first, second = tensor("x", x_shape), tensor("w", w_shape)
        out, out_shape = graph.conv_fprop(image=first, weight=second, **geometry), y_shape
    elif kind == "backward_data":
        first, second = tensor("dy", y_shape), tensor("w", w_shape)
        out, out_shape = graph.conv_dgrad(loss=first, filter=second, **geometry), x_shape
    else:
        first, second = tensor("x", x_shape), tensor("dy", y_shape)
        out, out_shape = graph.conv_wgrad(image=first, loss=second, **geometry), w_shape
    out.set_output(True).set_data_type(data_type).set_dim(list(out_shape)).set_stride(_packed_strides(out_shape))
    graph.validate()
    graph.build_operation_graph()
    graph.create_execution_plans([cudnn.heur_mode.A, cudnn.heur_mode.FALLBACK])
    if data_type == cudnn.data_type.FLOAT and not tf32:
        graph.deselect_numeric_notes([cudnn.numerical_note.TENSOR_CORE])
    graph.check_support()
    graph.build_plans()
    inputs, shapes = (first, second), {"forward": (x_shape, w_shape, y_shape),
                                       "backward_data": (y_shape, w_shape, x_shape),
                                       "backward_filter": (x_shape, y_shape, w_shape)}[kind]
    if AUTOTUNE:
        _autotune(cudnn, graph, inputs, out, shapes, dtype)
    return Plan(graph, inputs, out, int(graph.get_workspace_size()))


def _autotune(cudnn, graph, inputs, output, shapes, dtype):
    """Time every buildable engine on scratch arrays and pin the fastest."""
    import cupy

    try:
        graph.build_plans(cudnn.build_plan_policy.ALL)
        count = graph.get_execution_plan_count()
    except Exception as exc:
        log.debug("cuDNN autotuning skipped: %s", exc)
        return
    if count <= 1:
        return
    a, b = (cupy.random.standard_normal(shape).astype(dtype) for shape in shapes[:2])
    out = cupy.empty(shapes[2], dtype=dtype)
    pack = {inputs[0]: a.data.ptr, inputs[1]: b.data.ptr, output: out.data.ptr}
    best, best_time = None, float("inf")
    for index in range(count):
        try:
            size = int(graph.get_workspace_size_plan_at_index(index))
            if size > WORKSPACE_LIMIT:
                continue
            workspace = cupy.empty(max(size, 1), dtype=np.uint8)
            graph.execute_plan_at_index(pack, workspace.data.ptr, index=index, handle=_handle())
            start, stop = cupy.cuda.Event(), cupy.cuda.Event()
            start.record()
            for _ in range(3):
                graph.execute_plan_at_index(pack, workspace.data.ptr, index=index, handle=_handle())
            stop.record()
            stop.synchronize()
            elapsed = cupy.cuda.get_elapsed_time(start, stop)
        except Exception as exc:  # an engine that does not build or run here is simply not chosen
            log.debug("cuDNN engine %d skipped: %s", index, exc)
            continue
        if elapsed < best_time:
            best, best_time = index, elapsed
    if best is not None:
        graph.select_plan(best)
        graph.build_plans()


def plan(kind, x_shape, w_shape, y_shape, pad, stride, dilation, dtype):
    """The cached plan for `kind` ("forward", "backward_data", "backward_filter"), or None.

    Shapes are NCHW (or NCDHW) and KCRS with packed strides; None means cuDNN is
    absent or refused this geometry, and the caller falls back.
    """
    if not available() or np.dtype(dtype) not in (np.float32, np.float64):
        return None
    import cupy

    tf32 = backend.tf32()
    key = (cupy.cuda.runtime.getDevice(), kind, tuple(x_shape), tuple(w_shape), tuple(y_shape), tuple(pad),
           tuple(stride), tuple(dilation), np.dtype(dtype).str, tf32)
    if key not in _PLANS:
        try:
            _PLANS[key] = _build(kind, x_shape, w_shape, y_shape, pad, stride, dilation, dtype, tf32)
        except Exception as exc:  # cuDNN has no engine for this case: im2col + cuBLAS serves it
            log.debug("cuDNN cannot run %s for %s: %s", kind, key, exc)
            _PLANS[key] = None
    return _PLANS[key]
