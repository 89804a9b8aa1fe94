"""Stopping a run whose loss or weights stop being finite, before it writes a poisoned snapshot.

Caffe trains on through NaN and snapshots it. Here the solver checks the
loss every iteration (a number it already has on the host) and the weights
before each snapshot; when either is NaN or infinite it stops with one line
naming the iteration and the first layer whose output went bad, found by
running the net's layers again one at a time over the batch that failed.
"""

import numpy as np

from .. import backend
from ..errors import DivergedError


def _finite(array):
    xp = backend.get_array_module(array)
    with np.errstate(all="ignore"):
        return bool(xp.isfinite(xp.sum(array, dtype=xp.float64))) if array.size else True


def first_bad_params(net):
    """(layer name, parameter index) of the first learned parameter holding NaN or inf, or None."""
    for name, blobs in net.params.items():
        for index, blob in enumerate(blobs):
            if not _finite(blob.data):
                return name, index
    return None


def first_bad_output(net):
    """(layer index, top name) of the first layer whose output is not finite, re-running every layer
    that has bottoms (data layers keep the batch they produced), or None."""
    tops = list(net.top_names.values())
    with np.errstate(all="ignore"):
        for i, layer in enumerate(net.layers):
            bottom = net.bottom_blobs(i)
            if bottom:
                layer.run_forward(bottom, net.top_blobs(i))
            for name, blob in zip(tops[i], net.top_blobs(i)):
                if not _finite(blob.data):
                    return i, name
    return None


def _layer_text(net, index):
    return f"layer '{list(net.layer_dict)[index]}' ({net.layers[index].type})"


def check_loss(solver, loss):
    """Raise DivergedError when the iteration's loss is NaN or infinite."""
    if np.isfinite(loss):
        return
    net = solver.net
    params = first_bad_params(net)
    where = first_bad_output(net)
    parts = [f"iteration {solver.iter}: the loss is {float(loss)}"]
    if where is not None:
        parts.append(f"the first layer whose output is not finite is {_layer_text(net, where[0])} "
                     f"(top '{where[1]}')")
    if params is not None:
        parts.append(f"the weights of layer '{params[0]}' (param {params[1]}) are not finite")
    raise DivergedError("; ".join(parts) + "; stopped without writing a snapshot (lower base_lr, "
                        "or set clip_gradients?)")


def check_params(solver):
    """Raise DivergedError when a learned parameter is NaN or infinite (before a snapshot)."""
    params = first_bad_params(solver.net)
    if params is not None:
        raise DivergedError(f"iteration {solver.iter}: the weights of layer '{params[0]}' (param {params[1]}) "
                            "are not finite; stopped without writing a snapshot (lower base_lr, or set "
                            "clip_gradients?)")
