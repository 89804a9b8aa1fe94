"""LMDB and LevelDB behind one interface, as Caffe's db::DB / db::Cursor.

Readers give a cursor that walks the records in key order and starts again
at the first one when it runs off the end (Caffe's data layer does the
same). LMDB is opened read-only without a lock file and without readahead,
so that many readers and a database on a read-only disk both work. LevelDB
has no read-only mode and writes into its folder when opened; a folder we
may not write (Caffe's reference databases, a shared dataset) is read from a
private copy instead. One LevelDB handle per folder is shared inside the
process, because LevelDB refuses a second open of the same folder (a TRAIN
and a TEST net often read the same database).

Writers are what the tools use: puts are grouped into transactions that
the caller commits (Caffe's tools commit every 1000 records).
"""

import atexit
import logging
import os
import shutil
import stat
import tempfile
import threading
from pathlib import Path

from ..errors import DataError
from .hints import missing_data_hint

log = logging.getLogger("engine")

LMDB = "lmdb"
LEVELDB = "leveldb"
_LMDB_START_SIZE = 1 << 30


def backend_name(value):
    """'lmdb' or 'leveldb' from a DataParameter.DB value or a (case-free) name."""
    if isinstance(value, int):
        # DataParameter.DB: LEVELDB = 0, LMDB = 1.
        if value in (0, 1):
            return (LEVELDB, LMDB)[value]
        raise DataError(f"unknown database backend {value}")
    name = str(value).lower()
    if name not in (LMDB, LEVELDB):
        raise DataError(f"unknown database backend '{value}' (use lmdb or leveldb)")
    return name


def _plyvel():
    try:
        import plyvel
    except ImportError:
        raise DataError("LevelDB databases need the plyvel package (pip install plyvel)") from None
    return plyvel


def _to_bytes(key):
    return key.encode() if isinstance(key, str) else bytes(key)


# -- reading ---------------------------------------------------------------------


class Cursor:
    """Walks records in key order; `next()` wraps to the first record at the end."""

    def __init__(self, database):
        self.database = database
        self.key = self.value = None
        self.seek_to_first()

    def seek_to_first(self):
        self._start()
        if not self._advance():
            raise DataError(f"{self.database.path}: the database is empty")

    def next(self):
        """Move on; return True when the cursor wrapped around to the first record."""
        if self._advance():
            return False
        log.info("Restarting data prefetching from start.")
        self.seek_to_first()
        return True

    def seek(self, key):
        """Stand on the record `key` (a snapshot's reader position); DataError if it is not there."""
        if not self._seek(key):
            raise DataError(f"{self.database.path}: no record with key {key!r} to resume from (the database "
                            "changed since the snapshot?)")

    def read(self, count):
        """The next `count` (key, value) records, wrapping around as needed."""
        records = []
        for _ in range(count):
            records.append((self.key, self.value))
            self.next()
        return records

    def close(self):
        """Release what the cursor holds (a transaction or an iterator)."""


class _LmdbCursor(Cursor):
    def _start(self):
        self.close()
        self._txn = self.database.env.begin(buffers=False)
        self._cursor = self._txn.cursor()
        self._fresh = True

    def _advance(self):
        moved = self._cursor.first() if self._fresh else self._cursor.next()
        self._fresh = False
        if moved:
            self.key, self.value = self._cursor.key(), self._cursor.value()
        return moved

    def _seek(self, key):
        self._fresh = False
        if not self._cursor.set_key(key):
            return False
        self.key, self.value = self._cursor.key(), self._cursor.value()
        return True

    def close(self):
        txn = getattr(self, "_txn", None)
        if txn is not None:
            txn.abort()
            self._txn = None


class _LevelDbCursor(Cursor):
    def _start(self):
        self._iterator = self.database.db.iterator()

    def _advance(self):
        try:
            self.key, self.value = next(self._iterator)
        except StopIteration:
            return False
        return True

    def _seek(self, key):
        self.close()
        self._iterator = self.database.db.iterator(start=key)
        return self._advance() and self.key == key

    def close(self):
        iterator = getattr(self, "_iterator", None)
        if iterator is not None:
            iterator.close()
            self._iterator = None


class LmdbDatabase:
    backend = LMDB

    def __init__(self, path):
        import lmdb

        self.path = str(path)
        if not Path(path).is_dir():
            raise DataError(f"cannot open LMDB database {path}: No such file or directory; "
                            f"{missing_data_hint(path)}")
        try:
            self.env = lmdb.open(self.path, readonly=True, lock=False, readahead=False,
                                 subdir=True, max_readers=512)
        except lmdb.Error as exc:
            raise DataError(f"cannot open LMDB database {path}: {exc}") from None

    def cursor(self):
        return _LmdbCursor(self)

    def __len__(self):
        return int(self.env.stat()["entries"])

    def close(self):
        self.env.close()


class _SharedLevelDb:
    """One plyvel handle per real folder, counted; a read-only folder is copied first."""

    _lock = threading.Lock()
    _open = {}

    @classmethod
    def acquire(cls, path):
        plyvel = _plyvel()
        real = os.path.realpath(path)
        with cls._lock:
            entry = cls._open.get(real)
            if entry is None:
                where, scratch = real, None
                if not _may_write(real):
                    scratch = tempfile.mkdtemp(prefix="leveldb-copy-")
                    where = os.path.join(scratch, "db")
                    shutil.copytree(real, where)
                    for name in os.listdir(where):
                        os.chmod(os.path.join(where, name), 0o644)
                    os.chmod(where, 0o755)
                try:
                    handle = plyvel.DB(where, create_if_missing=False)
                except Exception as exc:  # plyvel raises its own IOError / CorruptionError
                    if scratch:
                        shutil.rmtree(scratch, ignore_errors=True)
                    raise DataError(f"cannot open LevelDB database {path}: {exc}") from None
                entry = cls._open[real] = [handle, 0, scratch]
            entry[1] += 1
            return entry[0]

    @classmethod
    def release(cls, path):
        real = os.path.realpath(path)
        with cls._lock:
            entry = cls._open.get(real)
            if entry is None:
                return
            entry[1] -= 1
            if entry[1] <= 0:
                entry[0].close()
                if entry[2]:
                    shutil.rmtree(entry[2], ignore_errors=True)
                del cls._open[real]


@atexit.register
def _remove_copies():
    """Private copies of read-only LevelDBs still open at exit are deleted."""
    for handle, _, scratch in list(_SharedLevelDb._open.values()):
        handle.close()
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)
    _SharedLevelDb._open.clear()


def _may_write(folder):
    """Whether LevelDB may write into `folder`, by its permission bits (root ignores them)."""
    try:
        mode = os.stat(folder).st_mode
    except OSError:
        return False
    return bool(mode & stat.S_IWUSR) and os.access(folder, os.W_OK)


class LevelDbDatabase:
    backend = LEVELDB

    def __init__(self, path):
        self.path = str(path)
        if not Path(path).is_dir():
            raise DataError(f"cannot open LevelDB database {path}: No such file or directory; "
                            f"{missing_data_hint(path)}")
        self.db = _SharedLevelDb.acquire(self.path)
        self._closed = False

    def cursor(self):
        return _LevelDbCursor(self)

    def __len__(self):
        return sum(1 for _ in self.db.iterator(include_value=False))

    def close(self):
        if not self._closed:
            self._closed = True
            _SharedLevelDb.release(self.path)


def open_db(path, backend=LMDB):
    """A read-only database of `backend` ('lmdb', 'leveldb' or DataParameter.DB)."""
    backend = backend_name(backend)
    return LmdbDatabase(path) if backend == LMDB else LevelDbDatabase(path)


# -- writing ---------------------------------------------------------------------


class _Writer:
    """Buffered puts; `commit()` writes them in one transaction."""

    def __init__(self, path):
        self.path = str(path)
        if os.path.exists(self.path):
            raise DataError(f"cannot create database {path}: it already exists")
        self._pending = []

    def put(self, key, value):
        self._pending.append((_to_bytes(key), bytes(value)))

    def commit(self):
        if self._pending:
            self._write(self._pending)
            self._pending = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if exc[0] is None:
            self.commit()
        self.close()


class LmdbWriter(_Writer):
    def __init__(self, path):
        import lmdb

        super().__init__(path)
        self._lmdb = lmdb
        self._size = _LMDB_START_SIZE
        os.makedirs(self.path, mode=0o744)
        self.env = lmdb.open(self.path, map_size=self._size, subdir=True)

    def _write(self, records):
        while True:
            try:
                with self.env.begin(write=True) as txn:
                    for key, value in records:
                        txn.put(key, value)
                return
            except self._lmdb.MapFullError:
                # Caffe's LMDB writer doubles the map when it fills; so do we.
                self._size *= 2
                self.env.set_mapsize(self._size)

    def close(self):
        self.env.close()


class LevelDbWriter(_Writer):
    def __init__(self, path):
        super().__init__(path)
        plyvel = _plyvel()
        self.db = plyvel.DB(self.path, create_if_missing=True, error_if_exists=True,
                            write_buffer_size=256 << 20, block_size=64 << 10, max_open_files=100)

    def _write(self, records):
        with self.db.write_batch() as batch:
            for key, value in records:
                batch.put(key, value)

    def close(self):
        self.db.close()


def open_writer(path, backend=LMDB):
    """A new database at `path` (which must not exist yet), as Caffe's db::NEW."""
    backend = backend_name(backend)
    return LmdbWriter(path) if backend == LMDB else LevelDbWriter(path)
