"""Caffe's log lines (glog format) for the `engine` logger, and a live progress line.

Every tool that reads Caffe logs (Caffe's parse_log.py and plot_training_log.py,
our tools/parse_log, countless user scripts) takes the time from the first two
fields and the message from after the first `]`, so each line reads

    I1122 15:04:05.123456 12345 solver.cpp:239] Iteration 100 (...), loss = 0.3

Messages that mirror a Caffe log statement carry Caffe's `file:line` through
`extra=at("solver.cpp:239")`; any other record shows its own Python file and
line, which parsers treat the same way.

The progress line (iterations/s, images/s, time left) is drawn on stderr only
when stderr is a terminal: logs redirected to a file stay byte-for-byte glog.
"""

import logging
import os
import sys
import threading
import time

import numpy as np

LOGGER_NAME = "engine"
_LETTERS = {logging.DEBUG: "I", logging.INFO: "I", logging.WARNING: "W", logging.ERROR: "E",
            logging.CRITICAL: "F"}


def number(value):
    """A value as glog prints a float: C++ ostream's 6 significant digits of the float32 value."""
    with np.errstate(over="ignore"):
        return f"{float(np.float32(value)):g}"


def at(where):
    """`extra=` argument giving a record Caffe's source location, e.g. "solver.cpp:239"."""
    return {"caffe_where": where}


def glog_prefix(letter, created, where, thread_id=None):
    """The glog header `I1122 15:04:05.123456 12345 file.cpp:NN] ` for a time stamp."""
    local = time.localtime(created)
    micros = int((created - int(created)) * 1e6)
    tid = thread_id if thread_id is not None else os.getpid()
    return (f"{letter}{local.tm_mon:02d}{local.tm_mday:02d} {local.tm_hour:02d}:{local.tm_min:02d}:"
            f"{local.tm_sec:02d}.{micros:06d} {tid:5d} {where}] ")


class GlogFormatter(logging.Formatter):
    """Formats a record as one glog line (a multi-line message keeps one header, as glog does)."""

    def format(self, record):
        where = getattr(record, "caffe_where", None)
        if not where:
            where = f"{os.path.basename(record.pathname)}:{record.lineno}"
        letter = _LETTERS.get(record.levelno, "I")
        tid = getattr(record, "thread_native_id", None) or threading.get_native_id()
        text = record.getMessage()
        if record.exc_info:
            text = f"{text}\n{self.formatException(record.exc_info)}"
        return glog_prefix(letter, record.created, where, tid) + text


class GlogHandler(logging.StreamHandler):
    """A stream handler that erases the progress line before a log line and redraws it after."""

    def __init__(self, stream=None):
        super().__init__(stream if stream is not None else sys.stderr)
        self.setFormatter(GlogFormatter())
        self.status = ""

    def emit(self, record):
        try:
            text = self.format(record)
            stream = self.stream
            if self.status:
                stream.write("\r\033[K")
            stream.write(text + self.terminator)
            if self.status:
                stream.write(self.status)
            self.flush()
        except Exception:  # logging must never take the program down
            self.handleError(record)

    def set_status(self, text):
        """Replace the live status line (empty text removes it)."""
        with self.lock:
            if not text and not self.status:
                return
            self.stream.write("\r\033[K" + text)
            self.status = text
            self.flush()


def _level_from_env(default):
    # Caffe's tools honour GLOG_minloglevel (0 INFO, 1 WARNING, 2 ERROR, 3 FATAL).
    value = os.environ.get("GLOG_minloglevel")
    if value is None:
        return default
    try:
        return {0: logging.INFO, 1: logging.WARNING, 2: logging.ERROR}.get(int(value), logging.CRITICAL)
    except ValueError:
        return default


def setup(level=logging.INFO, stream=None):
    """Route the `engine` logger to glog lines on `stream` (stderr); idempotent. Returns the handler."""
    logger = logging.getLogger(LOGGER_NAME)
    for handler in logger.handlers:
        if isinstance(handler, GlogHandler):
            if stream is not None:
                handler.setStream(stream)
            logger.setLevel(_level_from_env(level))
            return handler
    handler = GlogHandler(stream)
    logger.addHandler(handler)
    logger.setLevel(_level_from_env(level))
    return handler


def remove(handler):
    """Detach a handler that `setup` added (tools run in-process, as in tests, clean up after)."""
    logging.getLogger(LOGGER_NAME).removeHandler(handler)


def glog_handler():
    for handler in logging.getLogger(LOGGER_NAME).handlers:
        if isinstance(handler, GlogHandler):
            return handler
    return None


def _duration(seconds):
    seconds = int(max(seconds, 0))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m{seconds:02d}s" if hours else f"{minutes}m{seconds:02d}s"


class Progress:
    """The live one-line display of a training run, drawn only on a terminal.

    `update(iteration)` is cheap to call every iteration: the line is redrawn
    at most a few times a second, from the rate over the run so far.
    """

    def __init__(self, start_iter, stop_iter, images_per_iter=0, stream=None, interval=0.25):
        self.start_iter = start_iter
        self.stop_iter = stop_iter
        self.images_per_iter = images_per_iter
        self.stream = stream if stream is not None else sys.stderr
        self.interval = interval
        self.started = time.monotonic()
        self.last_draw = 0.0
        self.enabled = bool(getattr(self.stream, "isatty", lambda: False)())
        self.handler = glog_handler() if self.enabled else None

    def text(self, iteration, now=None):
        elapsed = (now if now is not None else time.monotonic()) - self.started
        done = iteration - self.start_iter
        rate = done / elapsed if elapsed > 0 else 0.0
        parts = [f"iter {iteration}/{self.stop_iter}", f"{rate:.2f} iter/s"]
        if self.images_per_iter:
            parts.append(f"{rate * self.images_per_iter:.0f} img/s")
        if rate > 0:
            parts.append(f"{_duration((self.stop_iter - iteration) / rate)} left")
        return "  ".join(parts)

    def update(self, iteration):
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self.last_draw < self.interval and iteration < self.stop_iter:
            return
        self.last_draw = now
        self._draw(self.text(iteration, now))

    def _draw(self, text):
        if self.handler is not None and self.handler.stream is self.stream:
            self.handler.set_status(text)
        else:
            self.stream.write("\r\033[K" + text)
            self.stream.flush()

    def close(self):
        if self.enabled:
            if self.handler is not None and self.handler.stream is self.stream:
                self.handler.set_status("")
            else:
                self.stream.write("\r\033[K")
                self.stream.flush()
            self.enabled = False
