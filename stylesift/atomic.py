"""The one way stylesift replaces a file: write a temp file beside it, fsync, rename, fsync the folder.

A reader therefore sees the old file or the new one, never half of one, and a crash (or a full disk)
leaves at most a temp file named ``.<name>.<pid>.tmp``, which :func:`is_temp_name` recognises so that
the owner of a folder can clear stale ones. On any exception the temp file is removed.

Two shapes, for the two kinds of writer:

- :func:`atomic_write` yields an open file (text or binary) for code that writes bytes itself;
- :func:`atomic_path` yields the temp *path* for libraries that insist on opening the file
  themselves (h5py, ONNX, OpenVINO, skops).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

__all__ = ["atomic_write", "atomic_path", "temp_name", "is_temp_name", "fsync_dir", "remove_stale_temps"]


def temp_name(target: str | os.PathLike) -> Path:
    """The temp file used for ``target``: hidden, in the same folder (so the rename is atomic), per process."""
    target = Path(target)
    return target.with_name(f".{target.name}.{os.getpid()}.tmp")


def is_temp_name(name: str, target_name: str | None = None) -> bool:
    """True if ``name`` is a temp file of :func:`temp_name` (of ``target_name``, when given)."""
    prefix = f".{target_name}." if target_name is not None else "."
    return name.startswith(prefix) and name.endswith(".tmp")


def remove_stale_temps(folder: str | os.PathLike, suffix: str = "") -> list[Path]:
    """Delete the temp files in ``folder`` (of targets ending in ``suffix``) whose writing process is gone.

    A process killed mid-write (kill -9, a power cut) leaves its ``.<name>.<pid>.tmp``; a live
    process's temp file is never touched. Returns what was removed.
    """
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        if not is_temp_name(entry.name):
            continue
        target, _, pid = entry.name[1:-len(".tmp")].rpartition(".")
        if not pid.isdigit() or not target.endswith(suffix) or _alive(int(pid)):
            continue
        with contextlib.suppress(OSError):
            os.unlink(entry.path)
            removed.append(Path(entry.path))
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # someone else's process, or a platform that cannot tell: leave it
    return True


def fsync_dir(folder: str | os.PathLike) -> None:
    """Make a rename inside ``folder`` durable (a no-op where folders cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, *, fsync: bool = True, sync_dir: bool = True,
                before_rename: Callable[[Path], None] | None = None) -> Iterator[Path]:
    """Yield a temp path; when the block ends without error, move it onto ``target`` atomically.

    Parameters
    ----------
    target : path
        The file to create or replace.
    fsync : bool
        fsync the temp file before the rename (skipped only for throw-away caches).
    sync_dir : bool
        fsync the folder after the rename, so that the rename itself survives a power cut.
    before_rename : callable, optional
        Called with the temp path just before the rename (fault-injection points in tests).
    """
    target = Path(target)
    tmp = temp_name(target)
    try:
        yield tmp
        if fsync:
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
        if before_rename is not None:
            before_rename(tmp)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    if sync_dir:
        fsync_dir(target.parent)


@contextlib.contextmanager
def atomic_write(target: str | os.PathLike, mode: str = "wb", *, encoding: str | None = None,
                 newline: str | None = None, fsync: bool = True, sync_dir: bool = True,
                 before_rename: Callable[[Path], None] | None = None) -> Iterator[IO]:
    """Yield an open file; when the block ends without error, it replaces ``target`` atomically.

    ``mode`` is ``"wb"`` or ``"w"`` (text, ``encoding`` defaults to UTF-8; ``newline`` as for
    :func:`open`, ``""`` for the csv module). See :func:`atomic_path` for the other parameters.
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_write writes whole files: mode must be 'wb' or 'w', not {mode!r}")
    if mode == "w" and encoding is None:
        encoding = "utf-8"
    with atomic_path(target, fsync=False, sync_dir=sync_dir, before_rename=before_rename) as tmp:
        with open(tmp, mode, encoding=encoding, newline=newline) as fh:
            yield fh
            fh.flush()
            if fsync:
                os.fsync(fh.fileno())
