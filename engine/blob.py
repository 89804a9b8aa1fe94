"""Blob: an N-d array of data with a same-shaped array of gradients (diff).

As in Caffe, a blob keeps its storage when it shrinks and reallocates only
when it grows, and two blobs can share storage (parameter sharing, in-place
layers). `.data` and `.diff` are views of the current shape, in the array module
the blob was made for: NumPy on the CPU, CuPy on the GPU.

On the GPU, code outside the engine (pycaffe scripts, Python layers) reads
and writes host copies, `host_data` and `host_diff`, as Caffe's
SyncedMemory gives pycaffe its CPU pointer: handing out the host copy
downloads the device values (when the device may have changed them) and
marks the copy as the newer one; the engine's next `.data`/`.diff` access
uploads it again. Holding a host copy across engine work is as in Caffe:
it is refreshed only when asked for again.
"""

import math

import numpy as np

from . import backend, memory

_AXES_LEGACY = 4


class _Storage:
    """A flat array that several blobs may point at; reallocation is seen by all.

    For device arrays, `host` is the NumPy mirror handed to Python code and
    `host_newer` says it was handed out since the device array was last used.
    """

    __slots__ = ("array", "host", "host_newer")

    def __init__(self, array):
        self.array = array
        self.host = None
        self.host_newer = False

    def replace(self, array):
        self.array = array
        self.host = None
        self.host_newer = False

    def device_array(self):
        """The array the engine computes on, with any host writes uploaded first."""
        if self.host_newer:
            self.array.set(self.host)
            self.host_newer = False
        return self.array

    def host_array(self):
        """The NumPy mirror, current; the caller may write it (it is uploaded on the next engine use)."""
        if isinstance(self.array, np.ndarray):
            return self.array
        if not self.host_newer:
            if self.host is None or self.host.shape != self.array.shape:
                self.host = np.empty(self.array.shape, dtype=self.array.dtype)
            self.array.get(out=self.host)
            self.host_newer = True
        return self.host


def _check_shape(shape):
    shape = tuple(int(d) for d in shape)
    if any(d < 0 for d in shape):
        raise ValueError(f"blob dimensions must be non-negative, got {shape}")
    return shape


class Blob:
    def __init__(self, shape=(), dtype=np.float32, xp=None):
        self._xp = xp or backend.array_module()
        self._dtype = np.dtype(dtype)
        self._shape = _check_shape(shape)
        self._count = math.prod(self._shape)
        count = self._count
        memory.reserve(2 * count * self._dtype.itemsize, self._shape, self._xp)
        self._data = _Storage(self._xp.zeros(count, dtype=self._dtype))
        self._diff = _Storage(self._xp.zeros(count, dtype=self._dtype))

    # -- shape -------------------------------------------------------------
    @property
    def shape(self):
        return self._shape

    @property
    def count(self):
        return self._count

    @property
    def num_axes(self):
        return len(self._shape)

    @property
    def dtype(self):
        return self._dtype

    @property
    def xp(self):
        return self._xp

    def reshape(self, *shape):
        """Set a new shape; storage grows when needed, contents are kept otherwise."""
        if len(shape) == 1 and not isinstance(shape[0], (int, np.integer)):
            shape = tuple(shape[0])
        self._shape = _check_shape(shape)
        self._count = count = math.prod(self._shape)
        grow = sum(count for storage in (self._data, self._diff) if storage.array.size < count)
        if grow:
            memory.reserve(grow * self._dtype.itemsize, self._shape, self._xp)
        for storage in (self._data, self._diff):
            if storage.array.size < count:
                # Caffe keeps the values when a blob regrows only by copying them itself; neither do we.
                storage.replace(self._xp.zeros(count, dtype=self._dtype))

    def reshape_like(self, other):
        self.reshape(other.shape)

    def _legacy(self, index):
        # Caffe's num/channels/height/width accessors pad missing axes with 1.
        if self.num_axes > _AXES_LEGACY:
            raise ValueError("legacy accessors need a blob of at most 4 axes")
        padded = self._shape + (1,) * (_AXES_LEGACY - self.num_axes)
        return padded[index]

    @property
    def num(self):
        return self._legacy(0)

    @property
    def channels(self):
        return self._legacy(1)

    @property
    def height(self):
        return self._legacy(2)

    @property
    def width(self):
        return self._legacy(3)

    def canonical_axis(self, axis):
        """Caffe's CanonicalAxisIndex: negative axes count from the end."""
        n = self.num_axes
        if not -n <= axis < max(n, 1):
            raise IndexError(f"axis {axis} out of range for a {n}-axis blob {self._shape}")
        return axis + n if axis < 0 else axis

    def count_range(self, start, end=None):
        dims = self._shape[start:end]
        return int(np.prod(dims, dtype=np.int64)) if dims else 1

    # -- data and diff -----------------------------------------------------
    def _view(self, storage):
        array = storage.device_array() if storage.host_newer else storage.array
        return array[: self._count].reshape(self._shape)

    @property
    def data(self):
        return self._view(self._data)

    @data.setter
    def data(self, values):
        self.data[...] = backend.to_device(values, self._xp)

    @property
    def diff(self):
        return self._view(self._diff)

    @diff.setter
    def diff(self, values):
        self.diff[...] = backend.to_device(values, self._xp)

    @property
    def host_data(self):
        """`data` as a NumPy array, for code outside the engine (see the module docstring)."""
        return self._data.host_array()[: self._count].reshape(self._shape)

    @host_data.setter
    def host_data(self, values):
        self.host_data[...] = values

    @property
    def host_diff(self):
        return self._diff.host_array()[: self._count].reshape(self._shape)

    @host_diff.setter
    def host_diff(self, values):
        self.host_diff[...] = values

    def share_data(self, other):
        """Point this blob's data at `other`'s storage (counts must agree)."""
        if self.count != other.count:
            raise ValueError(f"cannot share data: counts differ ({self.count} vs {other.count})")
        self._data = other._data

    def share_diff(self, other):
        if self.count != other.count:
            raise ValueError(f"cannot share diff: counts differ ({self.count} vs {other.count})")
        self._diff = other._diff

    def to(self, xp):
        """Move storage to module `xp` (numpy or cupy), keeping the values."""
        if xp is self._xp:
            return
        for storage in (self._data, self._diff):
            storage.replace(backend.to_device(storage.device_array(), xp))
        self._xp = xp

    def __repr__(self):
        return f"Blob(shape={self._shape})"


class BlobVec(list):
    """A layer's parameter blobs; `add_blob` is what pycaffe's Python layers call."""

    def add_blob(self, *shape):
        blob = Blob(shape)
        self.append(blob)
        return blob


class HostBlob:
    """A blob as pycaffe shows it: `.data` and `.diff` are NumPy arrays on the GPU too."""

    __slots__ = ("_blob",)

    def __init__(self, blob):
        self._blob = blob

    @property
    def data(self):
        return self._blob.host_data

    @data.setter
    def data(self, values):
        self._blob.host_data = values

    @property
    def diff(self):
        return self._blob.host_diff

    @diff.setter
    def diff(self, values):
        self._blob.host_diff = values

    def __getattr__(self, name):
        return getattr(self._blob, name)

    def __repr__(self):
        return f"HostBlob({self._blob!r})"


def host_blobs(blobs):
    """`blobs` as Python code should see them: HostBlobs when they live on the GPU (pycaffe
    scripts and Python layers compute with NumPy)."""
    if all(blob.xp is np for blob in blobs):
        return blobs
    return [HostBlob(blob) for blob in blobs]
