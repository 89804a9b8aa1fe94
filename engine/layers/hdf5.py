"""HDF5Data and HDF5Output: arrays in HDF5 files in, and out.

HDF5Data reads the files listed (whitespace-separated) in `source`, each
path used as written, i.e. relative to the current directory, as Caffe
opens them. Every top is filled from the dataset of the same name; a file's
datasets must agree on the number of rows. Rows are served in order, file
after file, wrapping around to the first file; with `shuffle` the file order
is shuffled at set-up and at each wrap, and the row order each time a file
is loaded (Caffe's HDF5DataLayer). The current file is held in memory.
In data-parallel TRAIN runs, worker r of n keeps only the rows whose running
offset (rows walked past since set-up, across files and wraps) is r modulo n,
as Caffe 1.0's Skip(); with one worker every row is kept, in whole slices.

HDF5Output writes its two bottoms as datasets "data" and "label" (4-axis,
as Caffe's legacy shape) to `file_name`, created empty at set-up.
"""

import logging
from pathlib import Path

import numpy as np

from .. import backend, caffe_pb2, formats
from ..errors import DataError
from .base import Layer, register_layer

log = logging.getLogger("engine")


def read_source_list(layer, source):
    """The whitespace-separated names in a list file (Caffe reads it with `>>`)."""
    try:
        names = Path(source).read_text().split()
    except OSError as exc:
        raise DataError(f"layer '{layer.name}' ({layer.type}): Failed to open source file: {source} "
                        f"({exc.strerror or exc})") from None
    return names


@register_layer
class HDF5DataLayer(Layer):
    type = "HDF5Data"
    exact_num_bottom_blobs = 0
    min_top_blobs = 1

    def setup(self, bottom, top):
        p = self.param.hdf5_data_param
        self.check(p.HasField("source") and p.source, "hdf5_data_param.source is required")
        self.check(p.batch_size > 0, "hdf5_data_param.batch_size must be positive")
        self.batch_size = int(p.batch_size)
        self.shuffle = bool(p.shuffle)
        self.files = read_source_list(self, p.source)
        if not self.files:
            raise DataError(f"layer '{self.name}' (HDF5Data): Must have at least 1 HDF5 filename listed "
                            f"in {p.source}")
        log.info("Number of HDF5 files: %d", len(self.files))
        self.names = list(self.param.top)
        self.file_order = np.arange(len(self.files))
        if self.shuffle:
            backend.rng().shuffle(self.file_order)
        self.current_file = 0
        self.offset = 0  # rows walked past so far, kept or skipped (Caffe's offset_)
        self._load(self.files[self.file_order[0]])
        self.row_shapes = [array.shape[1:] for array in self.arrays]
        for blob, shape in zip(top, self.row_shapes):
            blob.reshape((self.batch_size,) + shape)

    def _load(self, path):
        """Read every top's dataset from `path`; shuffle the row order when asked."""
        import h5py

        if not Path(path).is_file():
            raise DataError(f"layer '{self.name}' (HDF5Data): Failed opening HDF5 file: {path}")
        arrays = []
        try:
            with h5py.File(path, "r") as handle:
                for name in self.names:
                    dataset = handle.get(name)
                    if not isinstance(dataset, h5py.Dataset):
                        raise DataError(f"layer '{self.name}' (HDF5Data): Failed to find HDF5 dataset "
                                        f"{name} in {path}")
                    if dataset.ndim < 1:
                        raise DataError(f"layer '{self.name}' (HDF5Data): dataset {name} in {path} is a "
                                        "scalar; it needs at least 1 axis (rows)")
                    if dataset.dtype.kind not in "fiub":
                        raise DataError(f"layer '{self.name}' (HDF5Data): dataset {name} in {path} has "
                                        f"unsupported type {dataset.dtype}")
                    arrays.append(np.asarray(dataset, dtype=np.float32))
        except formats.HDF5_READ_ERRORS as exc:
            raise DataError(f"layer '{self.name}' (HDF5Data): Failed reading HDF5 file: {path} (truncated or "
                            f"garbled? {exc})") from None
        rows = arrays[0].shape[0]
        for name, array in zip(self.names, arrays):
            if array.shape[0] != rows:
                raise DataError(f"layer '{self.name}' (HDF5Data): {path}: dataset {name} has "
                                f"{array.shape[0]} rows but {self.names[0]} has {rows}")
            if hasattr(self, "row_shapes") and array.shape[1:] != self.row_shapes[self.names.index(name)]:
                raise DataError(f"layer '{self.name}' (HDF5Data): {path}: dataset {name} rows have shape "
                                f"{array.shape[1:]}, but the first file's have "
                                f"{self.row_shapes[self.names.index(name)]}")
        if rows == 0:
            raise DataError(f"layer '{self.name}' (HDF5Data): {path}: the datasets have no rows")
        self.arrays = arrays
        self.rows = rows
        self.row_order = np.arange(rows)
        if self.shuffle:
            backend.rng().shuffle(self.row_order)
        self.current_row = 0
        log.debug("Successfully loaded %d rows from %s", rows, path)

    def resume_state(self):
        """Where the reader stands: the file and row orders and positions (the shuffles draw from the
        engine's random generator, which the solver's snapshot records)."""
        return {"file_order": self.file_order.tolist(), "current_file": self.current_file,
                "row_order": self.row_order.tolist(), "current_row": self.current_row, "offset": self.offset}

    def restore_resume_state(self, state):
        file_order = np.asarray(state["file_order"], dtype=np.int64)
        if sorted(file_order.tolist()) != list(range(len(self.files))):
            raise DataError(f"layer '{self.name}' (HDF5Data): the snapshot's file order does not fit the "
                            f"{len(self.files)} files listed (the list changed since the snapshot?)")
        current = int(state["current_file"])
        if self.files[file_order[current]] != self.files[self.file_order[self.current_file]]:
            self._load(self.files[file_order[current]])
        row_order = np.asarray(state["row_order"], dtype=np.int64)
        if len(row_order) != self.rows:
            raise DataError(f"layer '{self.name}' (HDF5Data): the snapshot's row order has {len(row_order)} "
                            f"rows, the file {self.rows} (the data changed since the snapshot?)")
        self.file_order, self.current_file = file_order, current
        self.row_order, self.current_row = row_order, int(state["current_row"])
        self.offset = int(state["offset"])

    def _advance_file(self):
        """Caffe's Next() at the end of a file: the next file, or the first after the last."""
        if len(self.files) > 1:
            self.current_file += 1
            if self.current_file == len(self.files):
                self.current_file = 0
                if self.shuffle:
                    backend.rng().shuffle(self.file_order)
            self._load(self.files[self.file_order[self.current_file]])
        else:
            self.current_row = 0
            if self.shuffle:
                backend.rng().shuffle(self.row_order)

    def reshape(self, bottom, top):
        """Shapes are fixed at set-up."""

    def forward(self, bottom, top):
        batches = [np.empty((self.batch_size,) + shape, dtype=np.float32) for shape in self.row_shapes]
        if backend.solver_count() > 1 and self.phase != caffe_pb2.TEST:
            self._fill_skipping(batches)
        else:
            self._fill_in_slices(batches)
        for blob, batch in zip(top, batches):
            blob.data[...] = backend.to_device(batch, blob.xp)

    def _fill_in_slices(self, batches):
        """Every row is this worker's: copy runs of consecutive rows at once."""
        filled = 0
        while filled < self.batch_size:
            take = min(self.batch_size - filled, self.rows - self.current_row)
            rows = self.row_order[self.current_row:self.current_row + take]
            for batch, array in zip(batches, self.arrays):
                batch[filled:filled + take] = array[rows]
            filled += take
            self.current_row += take
            self.offset += take
            if self.current_row == self.rows:
                self._advance_file()

    def _fill_skipping(self, batches):
        """Row by row, passing over the rows of the other workers (Caffe's Skip/Next loop)."""
        for item in range(self.batch_size):
            while not backend.keeps_record(self.offset, False):
                self._next_row()
            row = self.row_order[self.current_row]
            for batch, array in zip(batches, self.arrays):
                batch[item] = array[row]
            self._next_row()

    def _next_row(self):
        self.current_row += 1
        self.offset += 1
        if self.current_row == self.rows:
            self._advance_file()


@register_layer
class HDF5OutputLayer(Layer):
    type = "HDF5Output"
    exact_num_bottom_blobs = 2
    exact_num_top_blobs = 0

    def setup(self, bottom, top):
        import h5py

        self.file_name = self.param.hdf5_output_param.file_name
        self.check(bool(self.file_name), "hdf5_output_param.file_name is required")
        try:
            h5py.File(self.file_name, "w").close()
        except OSError as exc:
            raise self.error(f"Failed to open HDF5 file {self.file_name} ({exc})") from None
        self.saved = False

    def reshape(self, bottom, top):
        """No tops."""

    @staticmethod
    def _legacy(blob):
        return (blob.num, blob.channels, blob.height, blob.width)

    def forward(self, bottom, top):
        import h5py

        self.check(bottom[0].num == bottom[1].num,
                   f"data blob and label blob must have the same batch size "
                   f"({bottom[0].num} vs {bottom[1].num})")
        if self.saved:
            # Caffe's layer creates the datasets on every forward and fails the second time.
            raise self.error(f"datasets 'data' and 'label' already saved to {self.file_name}; "
                             "HDF5Output writes one batch per file")
        data = backend.to_host(bottom[0].data).astype(np.float32).reshape(self._legacy(bottom[0]))
        label = backend.to_host(bottom[1].data).astype(np.float32).reshape(self._legacy(bottom[1]))
        log.info("Saving HDF5 file %s", self.file_name)
        with h5py.File(self.file_name, "a") as handle:
            handle.create_dataset("data", data=data)
            handle.create_dataset("label", data=label)
        self.saved = True
        log.info("Successfully saved %d rows", data.shape[0])
