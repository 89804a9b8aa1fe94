"""Exact resume: the reader positions and random states a snapshot needs for a resumed run to
end with the same weights, bit for bit, as one that was never stopped.

Caffe's `.solverstate` holds the iteration, the lr schedule and the update
history; a resumed Caffe run starts its data readers and random generators
over. Beside each `.solverstate` (or `.solverstate.h5`) the solver writes
`<state>.resume`, a small JSON file Caffe never opens: the engine's random
generator, and for every data layer of the train and test nets where its
reader stands after the batches the net has taken (cursor and offset, list
order, file and row order) with the random state of its transforms. It is
written before the state file, so a state on disk always has its own; a
state without one (Caffe's, or an older run's) resumes as in Caffe, from the
start of the data, and so does a data-parallel run (only rank 0 snapshots, and it
writes no sidecar: its readers are not the other workers').
"""

import json
import logging
import os

from .. import backend, formats
from ..errors import SolverError

log = logging.getLogger("engine.solver")

SUFFIX = ".resume"
FORMAT = "caffe-engine exact resume 1"


def sidecar(state_path):
    return f"{state_path}{SUFFIX}"


def _nets(solver):
    yield "train", solver.net
    for index, net in enumerate(solver.test_nets):
        yield f"test{index}", net


def collect(solver):
    """The solver's reader positions and random states, as plain JSON values."""
    readers = {}
    for tag, net in _nets(solver):
        for name, layer in net.layer_dict.items():
            state = layer.resume_state() if hasattr(layer, "resume_state") else None
            if state is not None:
                readers[f"{tag}/{name}"] = state
    return {"format": FORMAT, "iter": int(solver.iter), "rng": backend.rng().bit_generator.state,
            "readers": readers}


def write(solver, state_path):
    formats.atomic_write(sidecar(state_path), json.dumps(collect(solver), sort_keys=True))


def discard(state_path):
    """Remove a sidecar left by an earlier run under the same name, so it is never taken for this state's."""
    try:
        os.remove(sidecar(state_path))
    except FileNotFoundError:
        pass


def load(solver, state_path, iteration):
    """The checked contents of `state_path`'s sidecar for a state of `iteration`, or None when it has
    none (Caffe's own snapshots); nothing is changed yet, so a bad file leaves the solver as it was."""
    path = sidecar(state_path)
    if backend.solver_count() > 1:
        # Only rank 0 writes snapshots, and its random states are not the other workers': every
        # worker starts its readers over, together, as Caffe's data-parallel resume does.
        log.info("Data-parallel resume: the data readers and random generators start over, as in Caffe")
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            saved = json.load(handle)
    except FileNotFoundError:
        log.warning("%s has no %s beside it: the data readers and random generators start over, as in "
                    "Caffe", state_path, SUFFIX)
        return None
    except (OSError, ValueError) as exc:
        raise SolverError(f"cannot read {path}: {exc} (truncated or garbled? delete it to resume as Caffe "
                          "does, from the start of the data)") from None
    if not isinstance(saved, dict) or saved.get("format") != FORMAT:
        raise SolverError(f"{path}: not an exact-resume file of this engine")
    if saved.get("iter") != iteration:
        raise SolverError(f"{path} is for iteration {saved.get('iter')}, but its solver state is for "
                          f"iteration {iteration}")
    readers = saved.get("readers")
    if not isinstance(readers, dict) or "rng" not in saved:
        raise SolverError(f"{path}: garbled (no reader states or random state)")
    layers = _layers(solver)
    missing = [key for key in readers if not hasattr(layers.get(key), "restore_resume_state")]
    for key in missing:
        if key.startswith("train/"):
            raise SolverError(f"{path}: the train net has no data layer '{key.split('/', 1)[1]}' (a snapshot "
                              "of a different net?)")
        # Test nets changed since the snapshot: their scores only, not the weights.
        log.warning("%s: no data layer %s in this solver's test nets; its reader position is ignored", path, key)
    saved["path"] = path
    saved["readers"] = {key: state for key, state in readers.items() if key not in missing}
    return saved


def apply(solver, saved):
    """Put the readers and random generators back where `saved` (from load) says."""
    layers = _layers(solver)
    try:
        for key, state in saved["readers"].items():
            layers[key].restore_resume_state(state)
        backend.rng().bit_generator.state = saved["rng"]
    except (KeyError, TypeError, ValueError) as exc:
        raise SolverError(f"{saved['path']}: garbled reader state ({type(exc).__name__}: {exc})") from None
    log.info("Restored the data readers' positions and the random states from %s", saved["path"])


def _layers(solver):
    return {f"{tag}/{name}": layer for tag, net in _nets(solver) for name, layer in net.layer_dict.items()}
