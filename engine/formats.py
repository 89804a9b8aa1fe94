"""Reading and writing Caffe's files: prototxt, binary protos, weights, means.

The only module (with upgrade.py) that touches protobuf's text and wire
formats. Files are written atomically and durably (temporary file, fsync,
rename, fsync of the folder), so an interrupted write, a crash or a full disk
never leaves a half-written snapshot behind.
"""

import contextlib
import os
import tempfile
from pathlib import Path

import numpy as np
from google.protobuf import message as pb_message
from google.protobuf import text_format

from . import backend, caffe_pb2
from .errors import ProtoError, WeightsError

# -- generic text / binary ----------------------------------------------------

# What h5py raises for a file that is truncated or garbled (HDF5's own errors surface as these).
HDF5_READ_ERRORS = (OSError, KeyError, RuntimeError, ValueError, TypeError)


def parse_text(text, message, source="<string>"):
    """Merge prototxt `text` into `message`; syntax errors name source:line:column."""
    try:
        text_format.Merge(text, message, allow_unknown_extension=False)
    except text_format.ParseError as exc:
        line, column = exc.GetLine(), exc.GetColumn()
        detail = str(exc)
        prefix = f"{line}:{column} : "
        if detail.startswith(prefix):
            detail = detail[len(prefix):]
        where = f"{source}:{line}:{column}" if line else source
        raise ProtoError(f"{where}: {detail}") from None
    return message


def decode_text(raw, source):
    """`raw` bytes as UTF-8 text; a byte that is not UTF-8 is refused with its line, column and offset."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        byte = raw[exc.start]
        what = "a binary file, not a prototxt?" if b"\0" in raw[:4096] else "a prototxt must be UTF-8 text"
        raise ProtoError(f"{source}:{line}:{column}: byte 0x{byte:02x} at offset {exc.start} is not UTF-8 "
                         f"({what})") from None


def read_text(path, message_type):
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ProtoError(f"cannot read {path}: {exc.strerror or exc}") from None
    return parse_text(decode_text(raw, str(path)), message_type(), str(path))


def read_binary(path, message_type):
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ProtoError(f"cannot read {path}: {exc.strerror or exc}") from None
    message = message_type()
    try:
        message.ParseFromString(raw)
    except pb_message.DecodeError as exc:
        raise ProtoError(f"{path}: not a binary {message_type.DESCRIPTOR.name}, or truncated or garbled "
                         f"({exc})") from None
    return message


def read_text_or_binary(path, message_type):
    """Caffe's ReadProtoFromTextFileOrDie/BinaryFile by content: try binary, then text."""
    path = Path(path)
    try:
        return read_binary(path, message_type)
    except ProtoError:
        return read_text(path, message_type)


@contextlib.contextmanager
def durable_replace(path):
    """Yield a temporary name in `path`'s folder to write; then flush it to the disk (fsync),
    rename it over `path` and flush the folder, so that after a crash or a power cut `path` is
    the old file or the new one, whole. A failed write (a full disk) removes the temporary
    file and leaves `path` as it was."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    os.close(fd)
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    sync_folder(folder)


def sync_folder(folder):
    """fsync a folder, so that a rename in it survives a crash (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path, data):
    """Write bytes (or text) to `path` durably: a temporary file, fsync, rename, fsync of the folder."""
    with durable_replace(path) as tmp:
        with open(tmp, "w" if isinstance(data, str) else "wb") as handle:
            handle.write(data)


def write_text(path, message):
    atomic_write(path, text_format.MessageToString(message))


def write_binary(path, message):
    atomic_write(path, message.SerializeToString())


# -- nets and solvers ------------------------------------------------------------


def read_net(source):
    """A NetParameter from a prototxt path (text) or message, upgraded to the current format."""
    from . import upgrade

    if isinstance(source, caffe_pb2.NetParameter):
        net = source
        name = "<NetParameter>"
    else:
        net = read_text(source, caffe_pb2.NetParameter)
        name = str(source)
    if upgrade.net_needs_upgrade(net):
        net = upgrade.upgrade_net(net, name)
    return net


def read_solver(source):
    from . import upgrade

    if isinstance(source, caffe_pb2.SolverParameter):
        solver = source
    else:
        solver = read_text(source, caffe_pb2.SolverParameter)
    if upgrade.solver_needs_upgrade(solver):
        solver = upgrade.upgrade_solver(solver)
    return solver


def locate_layer(path, name):
    """The 1-based line of `name: "<name>"` in a prototxt, or None."""
    if name is None:
        return None
    try:
        lines = Path(path).read_text(errors="replace").splitlines()
    except OSError:
        return None
    needles = (f'name: "{name}"', f"name: '{name}'", f'name:"{name}"')
    for number, line in enumerate(lines, 1):
        if any(needle in line for needle in needles):
            return number
    return None


# -- blobs --------------------------------------------------------------------

_LEGACY_FIELDS = ("num", "channels", "height", "width")


def blob_has_legacy_shape(proto):
    return any(proto.HasField(f) for f in _LEGACY_FIELDS)


def blob_shape(proto):
    """The shape a BlobProto declares: `shape.dim`, else legacy num/channels/height/width."""
    if proto.HasField("shape"):
        return tuple(int(d) for d in proto.shape.dim)
    if blob_has_legacy_shape(proto):
        return tuple(int(getattr(proto, f)) for f in _LEGACY_FIELDS)
    return (len(proto.data) or len(proto.double_data),)


def blobproto_to_array(proto, diff=False, shape=None):
    """The data (or diff) of a BlobProto as a NumPy array in its declared shape."""
    if diff:
        values = proto.double_diff if len(proto.double_diff) else proto.diff
    else:
        values = proto.double_data if len(proto.double_data) else proto.data
    dtype = np.float64 if (diff and len(proto.double_diff)) or (not diff and len(proto.double_data)) else np.float32
    array = np.asarray(values, dtype=dtype)
    shape = shape if shape is not None else blob_shape(proto)
    if array.size != int(np.prod(shape, dtype=np.int64)):
        raise ProtoError(f"blob holds {array.size} values but its shape {shape} needs {int(np.prod(shape))}")
    return array.reshape(shape)


def array_to_blobproto(array, diff=None):
    """A BlobProto with the `shape` field, float data (and diff)."""
    proto = caffe_pb2.BlobProto()
    array = backend.to_host(array)
    proto.shape.dim.extend(int(d) for d in array.shape)
    proto.data.extend(array.astype(np.float32, copy=False).ravel().tolist())
    if diff is not None:
        proto.diff.extend(backend.to_host(diff).astype(np.float32, copy=False).ravel().tolist())
    return proto


def legacy_shape_matches(proto, shape):
    """Caffe's Blob::ShapeEquals: legacy dims compare with the shape padded on the left by 1s."""
    if proto.HasField("shape") or not blob_has_legacy_shape(proto):
        return tuple(int(d) for d in proto.shape.dim) == tuple(shape)
    if len(shape) > 4:
        return False
    padded = (1,) * (4 - len(shape)) + tuple(shape)
    return padded == blob_shape(proto)


def read_mean(path):
    """A mean `.binaryproto` (BlobProto) as a float32 array of shape (C, H, W) or as stored."""
    proto = read_binary(path, caffe_pb2.BlobProto)
    try:
        array = blobproto_to_array(proto).astype(np.float32)
    except ProtoError as exc:
        raise ProtoError(f"{path}: {exc} (a truncated or garbled mean file?)") from None
    if array.ndim == 4 and array.shape[0] == 1:
        array = array[0]
    return array


# -- weights ----------------------------------------------------------------------


def is_hdf5(path):
    path = str(path)
    if path.endswith((".h5", ".hdf5")):
        return True
    try:
        with open(path, "rb") as handle:
            return handle.read(8) == b"\x89HDF\r\n\x1a\n"
    except OSError:
        return False


def read_weights(path):
    """Weights by layer name: {name: [BlobProto or array, ...]} from .caffemodel or HDF5."""
    path = Path(path)
    if not path.exists():
        raise WeightsError(f"weights file not found: {path}")
    if is_hdf5(path):
        return _read_hdf5_weights(path)
    from . import upgrade

    net = read_binary(path, caffe_pb2.NetParameter)
    if upgrade.net_needs_upgrade(net):
        net = upgrade.upgrade_net(net, str(path))
    weights = {}
    for layer in net.layer:
        if len(layer.blobs):
            weights[layer.name] = list(layer.blobs)
    return weights


def _read_hdf5_weights(path):
    import h5py

    weights = {}
    try:
        with h5py.File(path, "r") as handle:
            if "data" not in handle:
                raise WeightsError(f"{path}: HDF5 weights need a 'data' group")
            _read_hdf5_layers(handle["data"], "", weights, h5py)
    except HDF5_READ_ERRORS as exc:
        raise WeightsError(f"{path}: cannot read the HDF5 weights, truncated or garbled? ({exc})") from None
    return weights


def _read_hdf5_layers(group, prefix, weights, h5py):
    """Layer groups under `group`. A '/' in a layer name (MobileNet's "conv1/bn") makes HDF5 nest
    groups, as in Caffe's files; Caffe opens each by its path, so the nesting is read back as names."""
    for key in group:
        member = group[key]
        if not isinstance(member, h5py.Group):
            continue
        name = f"{prefix}/{key}" if prefix else key
        blobs, index = [], 0
        while str(index) in member and isinstance(member[str(index)], h5py.Dataset):
            blobs.append(np.asarray(member[str(index)], dtype=np.float32))
            index += 1
        weights[name] = blobs
        _read_hdf5_layers(member, name, weights, h5py)


def write_hdf5_weights(path, layers, write_diff=False):
    """Caffe's Net::ToHDF5 layout: /data/<layer>/<i> (and /diff/<layer>/<i>)."""
    import h5py

    with durable_replace(path) as tmp:
        with h5py.File(tmp, "w") as handle:
            data = handle.create_group("data")
            diff = handle.create_group("diff") if write_diff else None
            for name, blobs in layers:
                group = data.require_group(name)
                dgroup = diff.require_group(name) if diff is not None else None
                for i, (values, grads) in enumerate(blobs):
                    group.create_dataset(str(i), data=backend.to_host(values).astype(np.float32, copy=False))
                    if dgroup is not None:
                        dgroup.create_dataset(str(i), data=backend.to_host(grads).astype(np.float32, copy=False))
