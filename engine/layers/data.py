"""Data: batches of Datum records from an LMDB or LevelDB database.

As Caffe's DataLayer: records are read in key order and the reading wraps
around at the end; the first record shapes the data top at set-up (and the
first record of each batch shapes that batch); each record is decoded and
transformed by transform_param; the label top, when present, is
(batch_size,) and holds each record's label. A background thread keeps
data_param.prefetch batches ready.

Data-parallel training (engine.parallel) shares one database between the
workers as Caffe 1.0 does: the layer counts every record it walks past (a
running offset that never resets) and, in TRAIN, worker r of n keeps only
the records whose offset is r modulo n (backend.keeps_record). One worker
(the default) keeps everything, so single-process reading is unchanged; the
rank must be set before the net is built, as the prefetch thread starts then.
"""

import logging
import threading

import numpy as np

from .. import backend, caffe_pb2
from ..data.datum import datum_to_array, parse_datum
from ..data.db import open_db
from ..data.prefetch import Prefetcher
from ..data.transform import DataTransformer
from ..errors import DataError
from .base import Layer, register_layer

log = logging.getLogger("engine")


class PrefetchingDataLayer(Layer):
    """Base of data layers whose batches a background thread prepares.

    Subclasses implement `load_batch()` -> (data, labels or None) as NumPy
    arrays; `forward` copies the next one into the tops. Those that also
    implement `reader_state()` and `set_reader_state(state)` (plain values:
    where the reader stands and its random state) resume exactly: a snapshot
    records the state after the last batch the net took, and restoring it
    drops the batches read ahead and reads them again from there.
    """

    exact_num_bottom_blobs = 0
    min_top_blobs = 1
    max_top_blobs = 2
    prefetcher = None

    def start_prefetch(self, count):
        self._prefetch_count = count
        exact = hasattr(self, "reader_state")
        self._start_state = self.reader_state() if exact else None
        self.prefetcher = Prefetcher(self.load_batch, count, name=f"prefetch '{self.name}'",
                                     reader_state=self.reader_state if exact else None)

    def resume_state(self):
        """Where the reader stands after the batches the net has taken; None if it cannot say."""
        if self.prefetcher is None or not hasattr(self, "reader_state"):
            return None
        consumed = self.prefetcher.consumed_state
        return consumed if consumed is not None else self._start_state

    def restore_resume_state(self, state):
        """Go back to `state` (from resume_state): the read-ahead batches are dropped and read again."""
        self.prefetcher.stop()
        if self.prefetcher.running:
            raise DataError(f"layer '{self.name}' ({self.type}): the prefetch thread did not stop; cannot "
                            "move the reader")
        try:
            self.set_reader_state(state)
        finally:  # the prefetch thread runs again even when the state does not fit
            self.start_prefetch(self._prefetch_count)

    def reshape(self, bottom, top):
        """Each batch reshapes the data top in forward, as Caffe's prefetching layers."""

    def forward(self, bottom, top):
        data, labels = self.prefetcher.get()
        top[0].reshape(data.shape)
        top[0].data[...] = backend.to_device(data, top[0].xp)
        if len(top) > 1:
            top[1].reshape(labels.shape)
            top[1].data[...] = backend.to_device(labels, top[1].xp)

    def stop(self):
        """End the prefetch thread (also done when the layer is collected)."""
        if self.prefetcher is not None:
            self.prefetcher.stop()

    def __del__(self):
        self.stop()


class ListedReader:
    """Exact resume for layers that read a list file in order, reshuffling it at each wrap.

    The layer keeps `lines` (the list in its present order), `_listed` (as
    read from the file), `order` (present order as indices into `_listed`),
    `position`, `rng` (its shuffles and draws) and `transformer`; its reader
    state is the position, the order and both random states.
    """

    def start_list(self, lines, shuffle, rand_skip, where, items="images"):
        """Take the list file's `lines`: shuffled when asked, the first `rand_skip` draw skipped
        (as ImageData in Caffe), the layer's own generator seeded from the engine's."""
        if not lines:
            raise DataError(f"{where}: File is empty: {self.source}")
        self.lines = self._listed = lines
        self.shuffle = bool(shuffle)
        self.rng = np.random.default_rng(int(backend.rng().integers(2**63)))
        self.order = np.arange(len(lines))  # the list's order now, as indices into the file's
        if self.shuffle:
            self._shuffle()
        log.info("A total of %d %s.", len(lines), items)
        self.position = 0
        if rand_skip:
            skip = int(backend.rng().integers(rand_skip))
            log.info("Skipping first %d data points.", skip)
            if skip >= len(lines):
                raise DataError(f"{where}: Not enough points to skip")
            self.position = skip

    def advance(self):
        """Past the line just read; at the list's end back to its start, reshuffled when asked
        (after that line's own draws, as Caffe's readers do)."""
        self.position += 1
        if self.position >= len(self.lines):
            log.debug("Restarting data prefetching from start.")
            self.position = 0
            if self.shuffle:
                self._shuffle()

    def _shuffle(self):
        order = self.rng.permutation(len(self.lines))
        self.lines = [self.lines[i] for i in order]
        self.order = self.order[order]

    def reader_state(self):
        """The line the next batch starts at, the list's order, and both random states."""
        return {"position": self.position, "order": self.order.tolist(),
                "rng": self.rng.bit_generator.state, "transform_rng": self.transformer.rng.bit_generator.state}

    def set_reader_state(self, state):
        order = np.asarray(state["order"], dtype=np.int64)
        if sorted(order.tolist()) != list(range(len(self._listed))):
            raise DataError(f"layer '{self.name}' ({self.type}): the snapshot's list order does not fit "
                            f"{self.source} ({len(self._listed)} lines; the list changed since the snapshot?)")
        position = int(state["position"])
        if not 0 <= position < len(self._listed):
            raise DataError(f"layer '{self.name}' ({self.type}): the snapshot's list position {position} "
                            f"is outside {self.source} ({len(self._listed)} lines)")
        self.order = order
        self.lines = [self._listed[i] for i in order]
        self.position = position
        self.rng.bit_generator.state = state["rng"]
        self.transformer.rng.bit_generator.state = state["transform_rng"]


@register_layer
class DataLayer(PrefetchingDataLayer):
    type = "Data"

    def setup(self, bottom, top):
        p = self.param.data_param
        self.check(p.HasField("source") and bool(p.source), "data_param.source is required")
        self.check(p.batch_size > 0, "data_param.batch_size must be positive")
        self.batch_size = int(p.batch_size)
        self.source = p.source
        # As Caffe: the database is opened first, so a missing one is the error reported.
        try:
            self.db = open_db(p.source, p.backend)
        except DataError as exc:
            raise DataError(f"layer '{self.name}' (Data): {exc}") from None
        self.transformer = DataTransformer(self.param.transform_param, self.phase,
                                           where=f"layer '{self.name}' (Data)")
        self.cursor = self.db.cursor()
        self.offset = 0  # records walked past so far, kept or skipped (Caffe's offset_)
        # LMDB aborts the process if two threads move one cursor; only one reads at a time.
        self._read_lock = threading.Lock()
        if p.rand_skip:
            skip = int(backend.rng().integers(p.rand_skip))
            log.info("Skipping first %d data points.", skip)
            for _ in range(skip):
                self.cursor.next()
        first, _ = self._decode(self.cursor.key, self.cursor.value)
        shape = self.transformer.output_shape(first.shape)
        top[0].reshape((self.batch_size,) + shape)
        log.info("output data size: %s", ",".join(map(str, (self.batch_size,) + shape)))
        if len(top) > 1:
            top[1].reshape((self.batch_size,))
        self.start_prefetch(p.prefetch)

    def _where(self, key):
        return f"{self.source} (key {key.decode(errors='replace')})"

    def _decode(self, key, value):
        """(C, H, W) pixels and label of one record."""
        datum = parse_datum(value, self._where(key))
        tp = self.param.transform_param
        return datum_to_array(datum, tp.force_color, tp.force_gray, self._where(key)), datum.label

    def _read_records(self, count):
        """The next `count` records this worker keeps (Caffe's Skip/Next loop); caller holds the lock."""
        test = self.phase == caffe_pb2.TEST
        records = []
        while len(records) < count:
            if backend.keeps_record(self.offset, test):
                records.append((self.cursor.key, self.cursor.value))
            self.cursor.next()
            self.offset += 1
        return records

    def load_batch(self):
        with self._read_lock:
            records = self._read_records(self.batch_size)
        decoded = [self._decode(key, value) for key, value in records]
        images = [image for image, _ in decoded]
        labels = np.asarray([label for _, label in decoded], dtype=np.float32)
        sources = [self._where(key) for key, _ in records]
        data = self.transformer.transform(images, sources=sources)
        return data, labels

    def reader_state(self):
        """The record the next batch starts at (its key and the running offset, which places this
        worker among data-parallel ranks) and the transformer's random state."""
        with self._read_lock:
            return {"key": self.cursor.key.hex(), "offset": self.offset,
                    "transform_rng": self.transformer.rng.bit_generator.state}

    def set_reader_state(self, state):
        with self._read_lock:
            self.cursor.seek(bytes.fromhex(state["key"]))
            self.offset = int(state["offset"])
            self.transformer.rng.bit_generator.state = state["transform_rng"]

    def stop(self):
        super().stop()
        if self.prefetcher is not None and self.prefetcher.running:
            return  # the thread did not end in time: it keeps its cursor
        with getattr(self, "_read_lock", None) or threading.Lock():
            if getattr(self, "cursor", None) is not None:
                self.cursor.close()
                self.cursor = None
            if getattr(self, "db", None) is not None:
                self.db.close()
                self.db = None


__all__ = ["DataLayer", "ListedReader", "PrefetchingDataLayer"]
