"""One builder at a time for a cache entry (converted weights, an OpenVINO or ONNX network).

Building an entry takes from seconds to two minutes of every core (an INT8 quantization). Two
processes that miss the cache at once (a server and an `extract` started together on a fresh machine,
or the test suite's two processes) would each build it, at half speed, and the second rename would
replace an identical file. So a builder holds a lock beside the entry, ``.<name>.build.lock``, and
checks the cache again once it has the lock: the one that waited finds the other's file and uses it.

The lock is an OS file lock (``filelock``): a builder that dies releases it, so a waiter never waits for
a dead process. Readers take no lock: entries still appear only whole (:mod:`stylesift.atomic`).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from pathlib import Path

__all__ = ["build_lock", "build_once", "lock_path"]

log = logging.getLogger("stylesift.cache")


def lock_path(target: str | Path) -> Path:
    """The lock file of the cache entry ``target``: hidden, beside it."""
    target = Path(target)
    return target.with_name(f".{target.name}.build.lock")


@contextlib.contextmanager
def build_lock(target: str | Path, what: str) -> Iterator[None]:
    """Hold the build lock of ``target`` (waiting, and saying so on the log, while another process builds it).

    Use as ``if ready(): return`` / ``with build_lock(target, what):`` / ``if ready(): return`` / build
    (:func:`build_once` is that pattern for a builder that writes ``target``).
    Where the lock cannot be created (a read-only cache folder) the build goes on without it and fails, or
    not, on its own write, which names the folder.
    """
    from filelock import FileLock, Timeout

    target = Path(target)
    lock = FileLock(str(lock_path(target)))
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            lock.acquire(timeout=0)
        except Timeout:
            log.warning("another stylesift process is building %s (%s); waiting for it", what, target)
            lock.acquire()
    except OSError:
        yield
        return
    try:
        yield
    finally:
        lock.release()


def build_once(target: Path, what: str, ready: Callable[[], bool], build: Callable[[], None]) -> Path:
    """``target``, built by ``build()`` unless ``ready()`` (first without the lock, then again under it)."""
    if ready():
        return target
    with build_lock(target, what):
        if not ready():  # or another process built it while this one waited
            build()
    return target
