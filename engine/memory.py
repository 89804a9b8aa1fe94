"""A memory budget for blobs, checked from their shapes before anything is allocated.

A mistyped dimension (`num_output: 99999999`, `dim: 2147483648`) would make
NumPy try to allocate, and fill, tens of gigabytes: a MemoryError after a
long wait, or a machine that swaps. Every blob allocation is checked first:
against the limit on its own, and, while a net is being built, together with
the blobs the net already holds. The limit is the machine's memory (the GPU's
in GPU mode), or ENGINE_MEMORY_LIMIT (bytes, or with a K/M/G/T suffix; `none`
turns the check off).
"""

import contextlib
import contextvars
import os

import numpy as np

from .errors import MemoryLimitError

ENV = "ENGINE_MEMORY_LIMIT"
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_net_total = contextvars.ContextVar("engine_net_blob_bytes", default=None)


def parse_size(text):
    """Bytes from '512M', '8G', '1.5T' or '123456'; None for 'none' (no limit)."""
    value = str(text).strip().upper().removesuffix("B").removesuffix("I")
    if value in ("NONE", "OFF", "UNLIMITED"):
        return None
    unit = value[-1:] if value[-1:] in _UNITS else ""
    try:
        number = float(value[:len(value) - len(unit)])
    except ValueError:
        raise MemoryLimitError(f"{ENV}={text!r} is not a size (bytes, or a number with K, M, G or T, "
                               "or 'none')") from None
    if not number > 0:
        raise MemoryLimitError(f"{ENV}={text!r} must be positive (or 'none')")
    return int(number * _UNITS[unit])


def machine_bytes(xp=np):
    """Physical memory of the host, or of the current GPU for CuPy arrays; None if unknown."""
    if xp is not np:
        try:
            return int(xp.cuda.runtime.memGetInfo()[1])
        except Exception:  # no device answer: no GPU limit
            return None
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def limit(xp=np):
    """(bytes or None, where the limit comes from)."""
    if os.environ.get(ENV):
        return parse_size(os.environ[ENV]), ENV
    return machine_bytes(xp), "this machine's memory" if xp is np else "the GPU's memory"


def format_bytes(count):
    for unit, size in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if count >= size:
            return f"{count / size:.1f} {unit}"
    return f"{count} bytes"


def reserve(nbytes, shape, xp=np):
    """Check, before allocating, that `nbytes` more for a blob of `shape` fit the limit."""
    tally = _net_total.get()
    total = nbytes + (tally[0] if tally is not None else 0)
    cap, source = limit(xp)
    if cap is not None and total > cap:
        shape_text = " x ".join(map(str, shape)) or "scalar"
        sofar = f"; with the net's blobs so far that is {format_bytes(total)}" if tally and tally[0] else ""
        override = (f"set {ENV} higher to try anyway" if source == ENV else
                    f"set {ENV} (e.g. {ENV}={max(1, -(-total // (1 << 30)))}G) to try anyway")
        raise MemoryLimitError(f"a blob of shape {shape_text} needs {format_bytes(nbytes)} (data and diff)"
                               f"{sofar}, more than the {format_bytes(cap)} limit ({source}); a dimension "
                               f"too large? {override}")
    if tally is not None:
        tally[0] = total


@contextlib.contextmanager
def net_budget():
    """Count the blobs allocated while a net is built against one budget."""
    token = _net_total.set([0])
    try:
        yield
    finally:
        _net_total.reset(token)
