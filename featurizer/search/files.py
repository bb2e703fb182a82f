"""Files of the index: where they live, the JSON sidecar that names them with their sha256, the arrays.

Layout, beside the store (never inside ``<store>.parts/``, whose check treats unknown files as damage)::

    STORE.h5.index/
        .lock                       one index writer at a time (readers take no lock)
        <feature set>/
            index.json              the sidecar: quantizer and parts, each with its sha256 and size;
                                    replaced atomically, written last, so it only names complete files
            quantizer-<gen>.npz     projection and list centroids of generation <gen>
            part-<gen>-<n>.npz      rows, reduced float16 vectors and lists of some store rows

Everything here is derived from the store: deleting the folder loses nothing but the time to rebuild.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path

import numpy as np

from stylesift.atomic import atomic_write, is_temp_name
from stylesift.errors import StylesiftError

__all__ = ["index_root", "set_folder", "SIDECAR", "FORMAT", "VERSION", "IndexDamage", "read_sidecar",
           "write_sidecar", "write_arrays", "read_arrays", "check_file", "file_sha256", "remove_unnamed"]

SIDECAR = "index.json"
FORMAT = "stylesift-index"
VERSION = 1


class IndexDamage(StylesiftError, RuntimeError):
    """An index file is missing, truncated or not what its sidecar says (the index is rebuilt from the store)."""


def index_root(store_path) -> Path:
    """``<store>.index/``: the sibling of the store's ``<store>.parts/`` folder."""
    store_path = Path(store_path)
    return store_path.with_name(store_path.name + ".index")


def set_folder(store_path, feature_set: str) -> Path:
    return index_root(store_path) / feature_set


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_sidecar(folder: Path) -> dict | None:
    """The sidecar of a set folder, or None when there is none; IndexDamage when it cannot be read."""
    path = folder / SIDECAR
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise IndexDamage(f"{path}: unreadable ({exc})") from None
    try:
        doc = json.loads(text)
    except ValueError:
        raise IndexDamage(f"{path}: not JSON (damaged)") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or doc.get("version") != VERSION:
        raise IndexDamage(f"{path}: not a version {VERSION} {FORMAT} sidecar")
    return doc


def write_sidecar(folder: Path, doc: dict) -> None:
    with atomic_write(folder / SIDECAR, "w") as fh:
        json.dump(doc, fh, indent=1, sort_keys=True)


def write_arrays(path: Path, arrays: dict[str, np.ndarray]) -> dict:
    """Write an ``.npz`` atomically; return its sidecar entry ``{"file", "sha256", "bytes"}``."""
    buf = io.BytesIO()
    np.savez(buf, **arrays)  # uncompressed: float vectors barely compress, and loading stays a copy
    data = buf.getvalue()
    with atomic_write(path, "wb") as fh:
        fh.write(data)
    return {"file": path.name, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}


def read_arrays(folder: Path, entry: dict, verify: bool = True) -> dict[str, np.ndarray]:
    """Load the arrays of a sidecar entry, checking its size and (``verify``) its sha256."""
    path = folder / entry["file"]
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise  # a concurrent writer may have merged it away: the caller re-reads the sidecar
    except OSError as exc:
        raise IndexDamage(f"{path}: unreadable ({exc})") from None
    if len(data) != entry["bytes"] or (verify and hashlib.sha256(data).hexdigest() != entry["sha256"]):
        raise IndexDamage(f"{path}: its sha256 is not the one {SIDECAR} records (damaged)")
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (ValueError, OSError, KeyError) as exc:
        raise IndexDamage(f"{path}: unreadable arrays ({exc})") from None


def check_file(folder: Path, entry: dict, deep: bool) -> str | None:
    """A problem with one named file (missing, wrong size, wrong sha256 when ``deep``), or None."""
    path = folder / entry["file"]
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return f"{path}: missing"
    if size != entry["bytes"]:
        return f"{path}: {size} bytes, {SIDECAR} records {entry['bytes']} (damaged)"
    if deep and file_sha256(path) != entry["sha256"]:
        return f"{path}: its sha256 is not the one {SIDECAR} records (damaged)"
    return None


def remove_unnamed(folder: Path, doc: dict | None) -> None:
    """Remove files the sidecar does not name (sources of a merge, an older generation, stale temp files).

    Called only by the index writer, under the lock, after the sidecar that stopped naming them.
    """
    named = {SIDECAR}
    if doc:
        named.add(doc["quantizer"]["file"])
        named.update(p["file"] for p in doc["parts"])
    for child in folder.iterdir():
        if child.name not in named and (child.suffix == ".npz" or is_temp_name(child.name)):
            try:
                os.unlink(child)
            except OSError:
                pass
