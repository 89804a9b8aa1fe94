"""Solver-state files: Caffe's `.solverstate` (binary SolverState) and `.solverstate.h5`.

Both hold the iteration, the learned net's file name, the lr schedule's
`current_step` and the update history (one blob per learnable parameter, two
for AdaDelta and Adam), laid out as Caffe writes them, so that Caffe's
snapshots resume here and ours resume in Caffe. Writes are atomic: a
temporary file renamed into place, never a half-written state.
"""

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import backend, caffe_pb2, formats
from ..errors import ProtoError, SolverError


@dataclass
class SolverStateData:
    iter: int = 0
    learned_net: str = ""
    current_step: int = 0
    history: list = field(default_factory=list)  # NumPy arrays in the parameters' shapes


def is_hdf5_state(path):
    """Caffe decides by the `.h5` ending; the file's signature settles names that lie."""
    return str(path).endswith(".h5") or formats.is_hdf5(path)


def write_binary(path, state):
    proto = caffe_pb2.SolverState()
    proto.iter = int(state.iter)
    proto.learned_net = state.learned_net
    proto.current_step = int(state.current_step)
    for array in state.history:
        proto.history.add().CopyFrom(formats.array_to_blobproto(array))
    formats.write_binary(path, proto)


def write_hdf5(path, state):
    import h5py

    with formats.durable_replace(path) as tmp:
        with h5py.File(tmp, "w") as handle:
            handle.create_dataset("iter", data=np.array([state.iter], dtype=np.int32))
            handle.create_dataset("learned_net", data=np.bytes_(state.learned_net.encode()))
            handle.create_dataset("current_step", data=np.array([state.current_step], dtype=np.int32))
            group = handle.create_group("history")
            for index, array in enumerate(state.history):
                group.create_dataset(str(index), data=backend.to_host(array).astype(np.float32, copy=False))


def write(path, state, hdf5=False):
    (write_hdf5 if hdf5 else write_binary)(path, state)


def _read_binary(path):
    try:
        proto = formats.read_binary(path, caffe_pb2.SolverState)
    except ProtoError as exc:
        raise SolverError(f"cannot read solver state: {exc}") from None
    try:
        history = [formats.blobproto_to_array(blob) for blob in proto.history]
    except ProtoError as exc:
        raise SolverError(f"cannot read solver state {path}: a history blob: {exc} (truncated or garbled?)") \
            from None
    learned_net = proto.learned_net
    if isinstance(learned_net, bytes):  # protobuf hands back a string field that is not UTF-8 as bytes
        raise SolverError(f"cannot read solver state {path}: its learned_net name is not UTF-8 text "
                          f"({learned_net[:60]!r}; truncated or garbled?)")
    return SolverStateData(proto.iter, learned_net, proto.current_step, history)


def _scalar(value):
    value = np.asarray(value)
    return value.reshape(-1)[0] if value.size else value


def _read_hdf5(path):
    import h5py

    try:
        with h5py.File(path, "r") as handle:
            missing = [key for key in ("iter", "current_step", "history") if key not in handle]
            if missing:
                raise SolverError(f"{path}: not a solver state (no {', '.join(missing)})")
            learned = ""
            if "learned_net" in handle:
                learned = _scalar(handle["learned_net"][()])
                learned = learned.decode() if isinstance(learned, bytes) else str(learned)
            group = handle["history"]
            history = [np.asarray(group[str(i)]) for i in range(len(group))]
            return SolverStateData(int(_scalar(handle["iter"][()])), learned.rstrip("\0"),
                                   int(_scalar(handle["current_step"][()])), history)
    except KeyError as exc:
        raise SolverError(f"cannot read solver state {path}: history blobs are not numbered 0..N-1, or the "
                          f"file is garbled ({exc})") from None
    except formats.HDF5_READ_ERRORS as exc:
        raise SolverError(f"cannot read solver state {path}: truncated or garbled? ({exc})") from None


def read(path):
    """A SolverStateData from a binary or HDF5 solver state written by us or by Caffe."""
    path = Path(path)
    if not path.is_file():
        raise SolverError(f"solver state not found: {path}")
    return _read_hdf5(path) if is_hdf5_state(path) else _read_binary(path)


def resolve_learned_net(state_path, learned_net):
    """Where the learned net is: as written (relative to the working folder, as Caffe
    opens it), else beside the state file (a snapshot folder that was moved)."""
    candidate = Path(learned_net)
    if candidate.is_file():
        return candidate
    beside = Path(state_path).parent / candidate.name
    if beside.is_file():
        return beside
    raise SolverError(f"solver state {state_path} names learned_net '{learned_net}', which was not found "
                      f"(looked in the working folder and beside the state file)")
