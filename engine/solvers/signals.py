"""SIGINT / SIGHUP during training, as Caffe's SignalHandler: each signal maps to an
effect (stop, snapshot or none) that the solver polls once per iteration and per
test batch, so it always acts between two whole iterations.

With "stop", the solver leaves its loop and Solve writes the final snapshot
(snapshot_after_train, on by default) before returning: Ctrl-C saves the work
and exits cleanly. A second Ctrl-C while that is pending interrupts at once
(KeyboardInterrupt); snapshots are written atomically, so none is left broken.
"""

import signal
import threading

from ..errors import CaffeError

NONE = "none"
STOP = "stop"
SNAPSHOT = "snapshot"
EFFECTS = (STOP, SNAPSHOT, NONE)


def parse_effect(value):
    """A flag value as an effect; Caffe's message for anything else."""
    if value not in EFFECTS:
        raise CaffeError(f'Invalid signal effect "{value}" was specified (use stop, snapshot or none)')
    return value


class SignalHandler:
    """Install with `with SignalHandler(sigint, sighup) as handler:`; poll `handler.action()`."""

    def __init__(self, sigint_effect=STOP, sighup_effect=SNAPSHOT):
        self.effects = {signal.SIGINT: parse_effect(sigint_effect)}
        if hasattr(signal, "SIGHUP"):
            self.effects[signal.SIGHUP] = parse_effect(sighup_effect)
        self.pending = []
        self.previous = {}
        self.stopping = False

    def _handle(self, signum, frame):
        repeated = self.stopping or signal.SIGINT in self.pending
        if signum == signal.SIGINT and repeated and self.effects[signum] != NONE:
            raise KeyboardInterrupt
        if signum not in self.pending:
            self.pending.append(signum)

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for signum in self.effects:
                self.previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc):
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)
        self.previous.clear()
        return False

    def action(self):
        """The effect of the oldest signal not yet acted on (Caffe checks SIGHUP first)."""
        for signum in (getattr(signal, "SIGHUP", None), signal.SIGINT):
            if signum in self.pending:
                effect = self.effects[signum]
                self.pending.remove(signum)
                self.stopping = self.stopping or effect == STOP
                return effect
        return NONE
