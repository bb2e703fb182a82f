"""The store's durable small writes: atomic checksummed JSON, fsync, and the fault-injection points.

Shared by the store and its upgrade of old stores (a leaf module: it imports no other part of the store).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import signal
from pathlib import Path

from stylesift.featurizer.store_types import StoreError, path_bytes

FORMAT = "stylesift-store"
FORMAT_VERSION = 2
# Fault-injection points, in the order a write, a merge, a fold, a commit and an upgrade pass them.
CRASH_POINTS = ("segment-tmp-written", "segment-renamed", "manifest-tmp-written", "manifest-renamed",
                "log-tmp-written", "log-renamed", "merge-written", "merge-manifest-renamed",
                "merge-sources-deleted", "fold-meta-written", "fold-manifest-renamed", "fold-records-deleted",
                "top-renamed", "upgrade-parts-renamed", "upgrade-old-moved")


def empty_manifest() -> dict:
    return {"format": FORMAT, "format_version": FORMAT_VERSION, "generation": 0, "epoch": 0, "layout": 0,
            "rows": 0, "next_id": 1, "feature_sets": {}, "segments": [], "patches": [], "meta": None, "log_seq": 0}

def b64(p: str | bytes) -> str:
    return base64.b64encode(path_bytes(p)).decode("ascii")


def unb64(s: str) -> bytes:
    return base64.b64decode(s.encode("ascii"))


def checksum(body: dict) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def write_json_atomic(target: Path, body: dict, folder: Path, point: str | None = None, sync_dir: bool = True) -> None:
    body = {k: v for k, v in body.items() if k != "checksum"}
    text = json.dumps({**body, "checksum": checksum(body)}, separators=(",", ":"))
    tmp = folder / f".{target.name}.{os.getpid()}.tmp"
    try:
        with open(tmp, "w", encoding="ascii") as fh:
            fh.write(text)
            fh.flush()
            if point:
                crash_point(point)
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    if sync_dir:
        fsync_dir(folder)


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
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    try:
        fsync(path)
    except OSError:
        pass  # some filesystems do not allow fsync on directories


def acquire_writer_lock(path: Path, timeout: float):
    """Take ``STORE.h5.lock`` (one writer at a time), waiting up to ``timeout`` s (-1: forever); the FileLock.

    Says on the log when it has to wait; a lock that cannot be had is a StoreError naming the file.
    """
    import logging

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
        raise StoreError(f"{path}: another process is writing this store (lock {lock.lock_file}); "
                         "wait for it to finish or pass a longer lock timeout") from None
    except OSError as exc:
        raise StoreError(f"{path}: cannot take the writer lock ({exc.strerror or exc}: "
                         f"{exc.filename or lock.lock_file}); the store's folder must be writable") from None
    return lock
