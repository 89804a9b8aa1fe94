"""Fixtures of the CPU kernel tests."""

import os
from concurrent.futures import ThreadPoolExecutor

import pytest

from engine.cpu import products


@pytest.fixture
def two_threads(monkeypatch):
    """A pool of two threads, as on a 2-core machine (the tests run with OMP_NUM_THREADS=1); yields the list
    of the tasks submitted to it."""
    pool = ThreadPoolExecutor(2)
    monkeypatch.setitem(products._STATE, "threads", 2)
    monkeypatch.setitem(products._STATE, "pool", pool)
    monkeypatch.setitem(products._STATE, "pid", os.getpid())
    monkeypatch.setattr(products, "MIN_SPLIT", 1)
    monkeypatch.setattr(products, "MIN_SPLIT_OUTPUT", 1)
    calls = []
    submit = pool.submit
    monkeypatch.setattr(pool, "submit", lambda *args, **kw: calls.append(args) or submit(*args, **kw))
    yield calls
    pool.shutdown()
