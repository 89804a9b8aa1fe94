"""A background thread that keeps `prefetch` batches ready, as Caffe's
BasePrefetchingDataLayer does, so reading and decoding overlap the net's work.

Batches are produced in order by one thread, so the sequence a net sees is
the same as without prefetching. An exception in the thread is handed to the
main thread and raised from the next `get()`; `stop()` ends the thread
promptly even when it is blocked on a full queue. Nothing here can hang:
every wait is bounded and re-checks whether the other side is still alive.
"""

import queue
import threading
import weakref

from ..errors import DataError

_POLL_S = 0.05


class _Failure:
    def __init__(self, exc):
        self.exc = exc


def _weak(function):
    """A callable returning `function`, holding a bound method weakly (None once its object is gone)."""
    if hasattr(function, "__self__"):
        method = weakref.WeakMethod(function)
        return lambda: method()
    return lambda: function


class Prefetcher:
    """Runs `load_batch()` in a daemon thread; `get()` returns its results in order.

    A bound method is held weakly, so that a layer that is dropped without
    `stop()` is still collected, and its thread then ends by itself.
    """

    def __init__(self, load_batch, count=4, name="prefetch", reader_state=None):
        """`reader_state()`, when given, is called in the thread after each batch; `consumed_state`
        is then the reader's state after the last batch `get()` returned (what a snapshot records:
        the batches still queued are made again, the same, from it)."""
        self._load = _weak(load_batch)
        self._state = _weak(reader_state) if reader_state is not None else None
        self.consumed_state = None
        self._queue = queue.Queue(maxsize=max(1, int(count)))
        self._stop = threading.Event()
        self._failed = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _put(self, item):
        while not self._stop.is_set() and self._load() is not None:
            try:
                self._queue.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def _run(self):
        while not self._stop.is_set():
            load = self._load()
            if load is None:  # the owner is gone
                return
            try:
                item = load()
                if self._state is not None:
                    item = (item, self._state()())
            except BaseException as exc:  # handed to the consumer, never lost
                item = _Failure(exc)
            del load  # hold no strong reference while waiting on the queue
            if not self._put(item) or isinstance(item, _Failure):
                return

    def get(self):
        """The next batch; re-raises an error from the thread."""
        if self._failed:
            raise DataError("the data prefetch thread has stopped after an error")
        while True:
            try:
                item = self._queue.get(timeout=_POLL_S)
                break
            except queue.Empty:
                if not self._thread.is_alive() and self._queue.empty():
                    raise DataError("the data prefetch thread has stopped") from None
        if isinstance(item, _Failure):
            self._failed = True
            raise item.exc
        if self._state is not None:
            item, self.consumed_state = item
        return item

    @property
    def running(self):
        return self._thread.is_alive()

    def stop(self, timeout=5.0):
        """Ask the thread to end, drop queued batches and wait for it (bounded)."""
        self._stop.set()
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)
