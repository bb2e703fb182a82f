"""Small value types and errors of the feature store, shared by its current and legacy layouts."""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass

from stylesift.errors import StylesiftError
from stylesift.featurizer.space import FeatureSpaceMismatch

__all__ = ["StoreError", "StoreBusy", "FeatureSpaceMismatch", "Failure", "Verdict", "path_bytes", "display_path", "path_fields",
           "file_sha256"]


class StoreError(StylesiftError, RuntimeError):
    """A store cannot be used as asked; the message names the file and what to do."""


class StoreBusy(StoreError):
    """Another process holds the store's writer lock: the same request may succeed later (nothing was written)."""


@dataclass(frozen=True)
class Failure:
    """A file that could not be featurized; ``path`` is ``os.fsdecode`` of its bytes."""

    path: str
    size: int
    mtime: float
    reason: str


@dataclass(frozen=True)
class Verdict:
    """One person's judgement of one stored image; the latest per row sets the row's label."""

    sha256: str
    label: str
    reviewer: str
    time: float
    note: str = ""
    source: str = ""


def path_bytes(p: str | bytes | os.PathLike) -> bytes:
    """The operating system's bytes of a path (``os.fsencode``: exact for names that are not UTF-8)."""
    return os.fsencode(p)


def display_path(p: str | bytes | os.PathLike) -> str:
    """A printable form of a path: bytes that are not UTF-8 become replacement characters."""
    return path_bytes(p).decode("utf-8", "replace")


def path_fields(p: str | bytes | os.PathLike) -> dict[str, str]:
    """``{"path": display form}``, plus ``"path_b64"`` (base64 of the exact bytes) when the name is not UTF-8."""
    raw = path_bytes(p)
    out = {"path": raw.decode("utf-8", "replace")}
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        out["path_b64"] = base64.b64encode(raw).decode("ascii")
    return out


def file_sha256(path) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB blocks: a store row's identity (and a weights file's)."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
