"""The store's file names and durable small writes: checksummed JSON, the writer lock, fault-injection points.

A leaf of the store package (it imports only :mod:`stylesift.atomic` and the store's value types), shared
by the current layout, the legacy reader and the upgrade. Every replace goes through
:func:`stylesift.atomic.atomic_write`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import signal
from dataclasses import dataclass
from pathlib import Path

from stylesift.atomic import atomic_write, fsync_dir
from stylesift.featurizer.store.types import StoreBusy, StoreError, path_bytes

__all__ = ["FORMAT", "FORMAT_VERSION", "CRASH_POINTS", "Layout", "Stale", "empty_manifest", "b64", "unb64",
           "checksum", "write_json_atomic", "read_json", "crash_point", "fsync", "fsync_dir", "acquire_writer_lock",
           "h5_reason", "extract_hint"]

FORMAT = "stylesift-store"
FORMAT_VERSION = 2
# Fault-injection points, in the order a write, a merge, a fold, a commit and an upgrade pass them.
CRASH_POINTS = ("segment-tmp-written", "segment-renamed", "manifest-tmp-written", "manifest-renamed",
                "log-tmp-written", "log-renamed", "merge-written", "merge-manifest-renamed",
                "merge-sources-deleted", "fold-meta-written", "fold-manifest-renamed", "fold-records-deleted",
                "top-renamed", "upgrade-parts-renamed", "upgrade-old-moved")


@dataclass(frozen=True)
class Layout:
    """Where the parts of the store ``path`` live (see :mod:`stylesift.featurizer.store.facade` for the layout)."""

    path: Path

    def __post_init__(self):
        # A store is identified by its real path: the lock, the parts folder and the top file of
        # ``link/s.h5 -> ../real/s.h5`` are those of ``real/s.h5``, so two writers through two names
        # still take one lock, and a rewrite of the top file never replaces the symlink by a file.
        object.__setattr__(self, "path", Path(os.path.realpath(self.path)))

    @property
    def parts(self) -> Path:
        return self.path.with_name(self.path.name + ".parts")

    @property
    def log_dir(self) -> Path:
        return self.parts / "log"

    @property
    def manifest(self) -> Path:
        return self.parts / "manifest.json"

    @property
    def incoming(self) -> Path:
        return self.parts / "incoming"

    @property
    def journal(self) -> Path:
        """The folder of small records of a format_version 1 store."""
        return self.path.with_name(self.path.name + ".journal")

    @property
    def upgrading(self) -> Path:
        return self.path.with_name(f".{self.path.name}.parts.upgrading")


class Stale(Exception):
    """A part vanished or changed under a reader (a writer merged or folded meanwhile): read the manifest again."""


def empty_manifest() -> dict:
    return {"format": FORMAT, "format_version": FORMAT_VERSION, "generation": 0, "epoch": 0, "layout": 0,
            "rows": 0, "next_id": 1, "feature_sets": {}, "segments": [], "patches": [], "meta": None, "log_seq": 0}


def b64(p: str | bytes) -> str:
    return base64.b64encode(path_bytes(p)).decode("ascii")


def unb64(s: str) -> bytes:
    return base64.b64decode(s.encode("ascii"))


def checksum(body: dict) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def write_json_atomic(target: Path, body: dict, point: str | None = None, sync_dir: bool = True) -> None:
    """Replace ``target`` by ``body`` plus its checksum; ``point`` is passed once the bytes are written."""
    body = {k: v for k, v in body.items() if k != "checksum"}
    text = json.dumps({**body, "checksum": checksum(body)}, separators=(",", ":"))
    with atomic_write(target, "w", encoding="ascii", sync_dir=sync_dir) as fh:
        fh.write(text)
        if point:
            fh.flush()
            crash_point(point)  # written, not yet fsynced nor renamed


def read_json(path: Path, remedy: str) -> dict:
    raw = path.read_bytes()  # FileNotFoundError propagates: a writer folded it meanwhile
    try:
        body = json.loads(raw)
        if not isinstance(body, dict) or body.get("checksum") != checksum({k: v for k, v in body.items()
                                                                           if k != "checksum"}):
            raise ValueError("its checksum does not match its content")
    except ValueError as exc:
        raise StoreError(f"{path}: damaged record of the store ({exc}); {remedy}") from None
    return body


_crash_counts: dict[str, int] = {}


def crash_point(name: str) -> None:
    """SIGKILL this process here if ``$STYLESIFT_CRASH_AT`` names this point (fault injection for tests).

    ``STYLESIFT_CRASH_AT=manifest-renamed:2`` kills at the second time a manifest has been renamed.
    """
    spec = os.environ.get("STYLESIFT_CRASH_AT")
    if not spec:
        return
    point, _, nth = spec.partition(":")
    if point != name:
        return
    _crash_counts[name] = _crash_counts.get(name, 0) + 1
    if _crash_counts[name] >= int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)


def fsync(path: Path) -> None:
    """fsync a file written by a library that closed it already (a segment in the upgrade's new folder)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def acquire_writer_lock(path: Path, timeout: float):
    """Take ``STORE.h5.lock`` (one writer at a time), waiting up to ``timeout`` s (-1: forever); the FileLock.

    Says on the log when it has to wait; a lock that cannot be had is a StoreError naming the file.
    """
    from filelock import FileLock, Timeout

    lock = FileLock(str(path) + ".lock")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            lock.acquire(timeout=0)
        except Timeout:
            if timeout == 0:
                raise
            logging.getLogger("stylesift.store").warning(
                "%s: another process is writing this store; waiting for it to finish (lock %s)", path, lock.lock_file)
            lock.acquire(timeout=timeout)
    except Timeout:
        raise StoreBusy(f"{path}: another process is writing this store (lock {lock.lock_file}); "
                         "wait for it to finish or pass a longer lock timeout") from None
    except OSError as exc:
        raise StoreError(f"{path}: cannot take the writer lock ({exc.strerror or exc}: "
                         f"{exc.filename or lock.lock_file}); the store's folder must be writable") from None
    return lock


def h5_reason(exc: BaseException) -> str:
    """The useful part of an h5py error (a checksum failure said plainly)."""
    text = str(exc)
    if "filter returned failure" in text or "checksum" in text.lower():
        return "Fletcher32 checksum mismatch"
    return text.split("(", 1)[0].strip() or type(exc).__name__


def extract_hint(path, name: str) -> str:
    return f"`stylesift extract PATH --store {path} --features {name}`"
