"""Momentum SGD's whole per-parameter update in one pass, in chunks of elements per thread.

Normalize, Regularize, ComputeUpdateValue and Net::Update with the float
operations of the NumPy pipeline (engine/solvers/sgd.py), in its order and
with scalars of the parameter's precision, so that the numbers are the same
bit for bit (and the same as the CUDA kernel's, engine/cuda/sgd.py).
"""

from numba import njit, prange

from . import OPTIONS
from .threads import light

NO_DECAY, L2, L1 = 0, 1, 2
CHUNK = 1 << 13


@light
@njit(**OPTIONS)
def update(diff, data, history, scale, decay, regularization, rate, momentum, normalize, subtract):
    """In place on flat arrays; scalars come as the arrays' dtype."""
    size = diff.size
    zero = diff.dtype.type(0)
    for chunk in prange((size + CHUNK - 1) // CHUNK):
        start = chunk * CHUNK
        stop = min(size, start + CHUNK)
        # Views from index 0: no wraparound checks, so the loop vectorizes.
        grads, weights, moments = diff[start:stop], data[start:stop], history[start:stop]
        for k in range(stop - start):
            g = grads[k]
            if normalize:
                g = g * scale
            w = weights[k]
            if regularization == 1:
                g = g + w * decay
            elif regularization == 2:
                sign = zero
                if w > zero:
                    sign = diff.dtype.type(1)
                elif w < zero:
                    sign = diff.dtype.type(-1)
                g = g + sign * decay
            h = moments[k] * momentum
            g = g * rate
            h = h + g
            moments[k] = h
            grads[k] = h
            if subtract:
                weights[k] = w - h
