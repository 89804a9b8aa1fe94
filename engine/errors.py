"""Exceptions for user mistakes: bad prototxt, bad shapes, missing files.

Tools catch `CaffeError` and print its message as one line; anything else is
a bug and keeps its traceback.
"""


_CONTROL = {code: f"\\x{code:02x}" for code in (*range(32), 127)}
_CONTROL.update({ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t"})


class CaffeError(Exception):
    """Base of every error caused by the user's input rather than a bug. Its text is one line:
    control characters quoted from the user's files (a newline in a name, a stray carriage
    return) are shown escaped."""

    def __str__(self):
        return super().__str__().translate(_CONTROL)


class ProtoError(CaffeError):
    """A prototxt or binary proto that cannot be read or upgraded."""


class NetError(CaffeError):
    """A net that cannot be built: wiring, counts, unknown types."""


class LayerError(NetError):
    """A layer's parameters or shapes are wrong; the message names the layer."""

    def __init__(self, layer, message):
        name = getattr(layer, "name", None) or "?"
        type_ = getattr(layer, "type", None) or "?"
        super().__init__(f"layer '{name}' ({type_}): {message}")


class MemoryLimitError(NetError):
    """Blobs whose shapes need more memory than the limit (engine.memory), refused before allocating."""


class WeightsError(CaffeError):
    """Weights that do not fit the net they are loaded into."""


class SolverError(CaffeError):
    """A solver definition or state that cannot be used."""


class SnapshotError(SolverError):
    """A snapshot that could not be written (a full disk); the previous one is left whole."""


class DivergedError(SolverError):
    """Training whose loss or weights became NaN or infinite; stopped before a snapshot."""


class DataError(CaffeError):
    """A database, list file, image or record that cannot be read."""
