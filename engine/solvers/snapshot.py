"""Snapshot and restore for the solver (Caffe's Solver::Snapshot / Restore and
SGDSolver's state files).

A snapshot is Caffe's two files named `<prefix>_iter_<N>`: the learned net
(`.caffemodel` or `.caffemodel.h5`) and the solver state (`.solverstate` or
`.solverstate.h5`) that names it; and beside the state, `<state>.resume`, the
readers' positions and random states for an exact resume (resume.py), which
Caffe never opens. Restoring checks the whole state against the net before
changing anything, so a snapshot of another net is refused with one message
and the solver (and every file) is left as it was.
"""

import contextlib
import logging
import os
import re
import tempfile
from pathlib import Path

import numpy as np

from .. import backend, caffe_pb2, formats
from ..errors import SnapshotError, SolverError
from ..log import at
from . import finite, resume
from . import state as statefile

log = logging.getLogger("engine.solver")

HDF5 = caffe_pb2.SolverParameter.HDF5
BINARYPROTO = caffe_pb2.SolverParameter.BINARYPROTO


def _reason(exc):
    """The system's words for a failed write: strerror, or the one HDF5 quotes in its own message."""
    if getattr(exc, "strerror", None):
        return exc.strerror
    quoted = re.search(r"error message = '([^']+)'", str(exc))
    return quoted.group(1) if quoted else str(exc)


class SnapshotMixin:
    history = ()

    def snapshot_filename(self, extension):
        return f"{self.param.snapshot_prefix}_iter_{self.iter}{extension}"

    def check_snapshot_write_permissions(self, probe=True):
        """Caffe's CheckSnapshotWritePermissions: fail now rather than after hours of training."""
        if not probe:
            return
        prefix = self.param.snapshot_prefix
        folder = Path(self.snapshot_filename(".tempfile")).parent
        try:
            fd, name = tempfile.mkstemp(prefix=".probe-", dir=folder)
            os.close(fd)
            os.unlink(name)
        except OSError:
            raise SolverError(f"Cannot write to snapshot prefix '{prefix}'.  Make sure that the directory "
                              "exists and is writeable.") from None

    def remove_stale_temporaries(self):
        """Delete the temporary files of this prefix's snapshots that a killed run left half-written
        (`.<name>_iter_<N>.<ext>.<random>.tmp`): each is as large as a snapshot, and repeated kills
        would fill the disk with them."""
        prefix = Path(self.snapshot_filename(""))
        folder, name = prefix.parent, Path(str(self.param.snapshot_prefix)).name
        pattern = re.compile(rf"\.{re.escape(name)}_iter_\d+\.(caffemodel|solverstate)[.\w]*\.\w+\.tmp")
        try:
            entries = list(folder.iterdir()) if folder.is_dir() else []
        except OSError:
            return
        for entry in entries:
            if pattern.fullmatch(entry.name):
                with contextlib.suppress(OSError):
                    entry.unlink()
                    log.info("Removed %s, left half-written by an interrupted snapshot", entry)

    def snapshot(self):
        """Write the learned net, then the solver state; returns (model path, state path).

        Weights that are NaN or infinite are refused (DivergedError), never written. Each file is
        written durably (formats.durable_replace); when a write fails (a full disk), the files of
        this snapshot are removed, the previous snapshot is left whole, and a SnapshotError says so.
        """
        finite.check_params(self)
        if self.param.snapshot_format not in (HDF5, BINARYPROTO):
            raise SolverError("Unsupported snapshot format.")
        written = []  # [path, whether it is new], the last one being written
        try:
            paths = self._write_snapshot(written)
        except (OSError, RuntimeError) as exc:
            if isinstance(exc, RuntimeError) and self.param.snapshot_format != HDF5:
                raise  # h5py reports a failed write as a RuntimeError; elsewhere it is a bug
            # Files this snapshot added go; a file of the same name written before stays as it was.
            for path, new in written[:-1]:
                if new:
                    with contextlib.suppress(OSError):
                        os.unlink(path)
            failed = written[-1][0] if written else self.snapshot_filename("")
            previous = getattr(self, "last_snapshot", None)
            kept = f"the previous snapshot {previous} is intact" if previous else "no earlier snapshot was written"
            raise SnapshotError(f"iteration {self.iter}: cannot write the snapshot {failed}: "
                                f"{_reason(exc)}; training stopped and {kept}") from None
        self.last_snapshot = paths[1]
        return paths

    def _write_snapshot(self, written):
        hdf5 = self.param.snapshot_format == HDF5
        if hdf5:
            model = self.snapshot_filename(".caffemodel.h5")
            log.info("Snapshotting to HDF5 file %s", model, extra=at("solver.cpp:472"))
            written.append((model, not os.path.exists(model)))
            self.net.save_hdf5(model, write_diff=self.param.snapshot_diff)
            state = self.snapshot_filename(".solverstate.h5")
            log.info("Snapshotting solver state to HDF5 file %s", state, extra=at("sgd_solver.cpp:292"))
        else:
            model = self.snapshot_filename(".caffemodel")
            log.info("Snapshotting to binary proto file %s", model, extra=at("solver.cpp:464"))
            written.append((model, not os.path.exists(model)))
            self.net.save(model, write_diff=self.param.snapshot_diff)
            state = self.snapshot_filename(".solverstate")
            log.info("Snapshotting solver state to binary proto file %s", state, extra=at("sgd_solver.cpp:284"))
        data = statefile.SolverStateData(self.iter, model, self.current_step,
                                         [backend.to_host(h) for h in self.history])
        # The readers' positions first: a state file on disk always has its own beside it.
        extra = resume.sidecar(state)
        if backend.solver_count() > 1:
            # Rank 0's readers are not the job's: a data-parallel state resumes as Caffe's does.
            resume.discard(state)
        else:
            written.append((extra, not os.path.exists(extra)))
            resume.write(self, state)
        written.append((state, not os.path.exists(state)))
        statefile.write(state, data, hdf5=hdf5)
        return model, state

    def restore(self, path):
        """Caffe's Restore: a `.h5` name is an HDF5 state, anything else a binary one."""
        data = statefile.read(path)
        if len(data.history) != len(self.history):
            raise SolverError(
                f"cannot restore {path}: it holds {len(data.history)} history blobs but this {self.type} solver "
                f"needs {len(self.history)} for net '{self.net.name}' (Incorrect length of history blobs; "
                "a snapshot of a different net or solver type?)")
        for index, (saved, mine) in enumerate(zip(data.history, self.history)):
            if saved.size != mine.size:
                raise SolverError(f"cannot restore {path}: history blob {index} has shape {tuple(saved.shape)}, "
                                  f"but the parameter it belongs to has shape {tuple(mine.shape)} "
                                  f"(a snapshot of a different net?)")
        readers = resume.load(self, path, data.iter)
        weights = None
        if data.learned_net:
            weights = statefile.resolve_learned_net(path, data.learned_net)
            self._check_weights_fit(weights, path)
            self.net.copy_from(str(weights))
        self.iter = data.iter
        self.current_step = data.current_step
        log.info("SGDSolver: restoring history", extra=at("sgd_solver.cpp:343"))
        for saved, mine in zip(data.history, self.history):
            xp = backend.get_array_module(mine)
            mine[...] = xp.asarray(saved.reshape(mine.shape), dtype=mine.dtype)
        if readers is not None:
            resume.apply(self, readers)
        self.remove_stale_temporaries()

    def _check_weights_fit(self, weights, state_path):
        """Refuse, before copying anything, learned weights that are not this net's."""
        stored = formats.read_weights(weights)
        mine = {name: blobs for name, blobs in self.net.params.items()}
        shared = [name for name in stored if name in mine]
        if mine and not shared:
            raise SolverError(f"cannot restore {state_path}: its learned net {weights} has no layer of net "
                              f"'{self.net.name}' (it has {', '.join(stored) or 'no layers'}; this net has "
                              f"{', '.join(mine)})")
        for name in shared:
            blobs, targets = stored[name], mine[name]
            if len(blobs) != len(targets):
                raise SolverError(f"cannot restore {state_path}: layer '{name}' has {len(blobs)} blobs in "
                                  f"{weights} but {len(targets)} in this net")
            for index, (blob, target) in enumerate(zip(blobs, targets)):
                if isinstance(blob, caffe_pb2.BlobProto):
                    fits = formats.legacy_shape_matches(blob, target.shape)
                    shape = formats.blob_shape(blob)
                else:
                    fits = tuple(np.shape(blob)) == target.shape
                    shape = tuple(np.shape(blob))
                if not fits:
                    raise SolverError(f"cannot restore {state_path}: parameter {index} of layer '{name}' has "
                                      f"shape {shape} in {weights} but {target.shape} in this net")
