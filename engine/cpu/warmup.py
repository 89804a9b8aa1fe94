"""Compile every kernel for one dtype, with the argument types the layers pass: `python -m engine.cpu.warmup float32`.

engine.cpu runs this in a background process the first time a dtype is
asked for, while the layers keep to the NumPy path; numba writes the
compiled code to its disk cache, and the engine switches to the kernels
once this process has finished (loading them from the cache takes
milliseconds). Each call here runs on a few elements only.
"""

import os
import sys
from pathlib import Path

import numpy as np

try:
    import fcntl
except ImportError:  # not on Windows: no lock, concurrent builds only repeat work
    fcntl = None


def warm(dtype):
    """Call each kernel once on tiny arrays of `dtype` (and the layouts the engine uses)."""
    from . import kernels

    dtype = np.dtype(dtype)
    kind = dtype.type

    def a(*shape):
        return np.zeros(shape, dtype=dtype)

    im2col = kernels("im2col")
    im2col.pad(a(1, 1, 2, 2), 1, 1, a(1, 1, 4, 4))
    im2col.im2col(a(1, 1, 4, 4), 3, 3, 1, 1, 1, 1, a(9, 1, 2, 2))
    im2col.im2col(a(1, 1, 4, 4), 3, 3, 1, 1, 1, 1, a(1, 9, 2, 2).transpose(1, 0, 2, 3))
    im2col.col2im(a(9, 1, 2, 2), 3, 3, 0, 0, 1, 1, 1, 1, a(1, 1, 4, 4))

    pooling = kernels("pooling")
    mask = np.zeros((1, 1, 2, 2), dtype=np.int32)
    pooling.max_forward(a(1, 1, 4, 4), 2, 2, 2, 2, 0, 0, a(1, 1, 2, 2), mask)
    pooling.max_backward(a(1, 1, 2, 2), mask, a(1, 1, 4, 4))
    divisor = np.ones((2, 2), dtype=dtype)
    pooling.ave_forward(a(1, 1, 4, 4), divisor, 2, 2, 2, 2, 0, 0, a(1, 1, 2, 2))
    pooling.ave_backward(a(1, 1, 2, 2), divisor, 2, 2, 2, 2, 0, 0, a(1, 1, 4, 4))

    neuron = kernels("neuron")
    neuron.relu_forward(a(4), 0.0, a(4))
    neuron.relu_backward(a(4), a(4), 0.0, a(4))

    lrn = kernels("lrn")
    ones = np.ones((1, 3, 4), dtype=dtype)
    lrn.forward(a(1, 3, 4), 3, 1e-4 / 3, 0.75, 1.0, a(1, 3, 4), a(1, 3, 4))
    lrn.backward(a(1, 3, 4), a(1, 3, 4), ones, a(1, 3, 4), 3, 0.75, 2e-4 * 0.75 / 3, a(1, 3, 4))

    channels = kernels("channels")
    channels.sums(a(2, 3, 4), a(2, 3, 4), False)
    channels.moments(a(2, 3, 4))
    channels.normalize(a(2, 3, 4), a(3), np.ones(3, dtype=dtype), a(2, 3, 4), a(2, 3, 4), True)
    channels.batch_norm_backward(a(2, 3, 4), a(2, 3, 4), a(3), a(3), np.ones(3, dtype=dtype), a(2, 3, 4))
    channels.scale(a(2, 3, 4), a(3), a(3), True, a(2, 3, 4), a(2, 3, 4), True)
    channels.scale_backward(a(2, 3, 4), a(2, 3, 4), a(3), True, a(2, 3, 4))

    depthwise = kernels("depthwise")
    depthwise.forward(a(1, 2, 4, 4), a(2, 3, 3), a(2), True, 1, 1, 1, 1, 1, 1, a(1, 2, 4, 4))
    depthwise.backward_data(a(1, 2, 4, 4), a(2, 3, 3), 1, 1, 1, 1, 1, 1, a(1, 2, 4, 4))
    depthwise.backward_weight(a(1, 2, 4, 4), a(1, 2, 4, 4), 1, 1, 1, 1, 1, 1, a(2, 3, 3))

    layout = kernels("layout")
    layout.rows_to_blob(a(2, 1, 4), a(2), True, a(1, 2, 4))
    layout.blob_to_rows(a(1, 2, 4), a(2, 1, 4))

    winograd = kernels("winograd")
    winograd.input_transform(a(1, 6, 6, 2), a(4, 4, 1, 2, 2, 2))
    winograd.output_transform(a(4, 4, 1, 2, 2, 2), a(1, 4, 4, 2))
    winograd.output_transform_adjoint(a(1, 4, 4, 2), a(4, 4, 1, 2, 2, 2))
    winograd.filter_transform(a(9, 6), a(16, 6))
    winograd.filter_transform_adjoint(a(16, 6), a(6, 9))
    winograd.to_column_phases(a(1, 2, 4, 4), 2, 2, a(1, 8, 2, 4, 2))
    winograd.input_transform_f2x5(a(1, 8, 2, 4, 2), 0, a(6, 6, 1, 4))
    winograd.output_transform_f2x5(a(6, 6, 1, 4), 0, a(1, 4, 2, 2, 2))
    winograd.from_column_phases(a(1, 4, 2, 2, 2), a(2), True, a(1, 2, 4, 4))
    winograd.output_transform_adjoint_f2x5(a(1, 4, 2, 2, 2), 0, a(6, 6, 1, 4))
    winograd.input_transform_f2x3(a(1, 6, 2, 3, 2), 0, a(4, 4, 1, 4))
    winograd.output_transform_f2x3(a(4, 4, 1, 4), 0, a(1, 4, 2, 2, 2))
    winograd.output_transform_adjoint_f2x3(a(1, 4, 2, 2, 2), 0, a(4, 4, 1, 4))

    kernels("softmax").forward(a(2, 3, 1), a(2, 3, 1))

    kernels("sgd").update(a(4), a(4), a(4), kind(1), kind(0), 1, kind(0.01), kind(0.9), False, True)


def main(argv=None):
    """warmup DTYPE [MARKER]: compile for DTYPE, then create the MARKER file.

    With a MARKER, one build at a time: a second process (another rank of a
    data-parallel run, another test worker) waits for the first one's lock
    and then finds the marker there instead of compiling again.
    """
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) < 2:
        warm(argv[0])
        return 0
    marker = Path(argv[1])
    with open(marker.with_suffix(".lock"), "w") as lock:
        if fcntl is not None:
            fcntl.flock(lock, fcntl.LOCK_EX)
        if not marker.exists():
            warm(argv[0])
            partial = marker.with_suffix(f".{os.getpid()}")
            partial.write_text("compiled\n")
            partial.replace(marker)
    return 0


if __name__ == "__main__":
    try:
        os.nice(10)  # in the background: the user's training comes first
    except OSError:
        pass
    sys.exit(main())
