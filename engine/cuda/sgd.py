"""Momentum SGD's whole per-parameter update as one CUDA kernel.

Normalize, Regularize, ComputeUpdateValue and Net::Update in one pass over
the diff, the weights and the history, instead of one kernel launch per
step. The float operations are the CPU pipeline's, in its order, and the
kernel is compiled without fused multiply-adds, so GPU and CPU updates give
the same numbers bit for bit.
"""

from . import elementwise

NO_DECAY, L2, L1 = 0, 1, 2


def _kernel():
    return elementwise(
        "engine_sgd_update",
        "T scale, T decay, T rate, T momentum, int32 regularization, bool normalize, bool subtract",
        "T diff, T data, T history",
        """
        T g = diff;
        if (normalize) g = g * scale;
        if (regularization == 1) g = g + data * decay;
        else if (regularization == 2) g = g + (T)((data > 0) - (data < 0)) * decay;
        T h = history * momentum;
        g = g * rate;
        h = h + g;
        history = h;
        diff = h;
        if (subtract) data = data - h;
        """,
        options=("--fmad=false",))


def update(diff, data, history, scale, decay, regularization, rate, momentum, subtract):
    """In place on flat CuPy arrays; `scale` None means iter_size 1 (no Normalize)."""
    kind = diff.dtype.type
    _kernel()(kind(scale if scale is not None else 1), kind(decay), kind(rate), kind(momentum),
              regularization, scale is not None, bool(subtract), diff, data, history)
