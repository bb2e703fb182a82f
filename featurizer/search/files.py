"""Files of the index: where they live, the JSON sidecar that names them with their checksums, the arrays.

Layout, beside the store (never inside ``<store>.parts/``, whose check treats unknown files as damage)::

    STORE.h5.index/
        .lock                       one index writer at a time (readers take no lock)
        <feature set>/
            index.json              the sidecar: quantizer and parts, each with its sha256, size and the
                                    place, dtype, shape and crc32 of every array in it; replaced
                                    atomically, written last, so it only names complete files
            quantizer-<gen>.arrays  projection and list centroids of generation <gen>
            part-<gen>-<n>.arrays   some store rows: their reduced vectors grouped by list, and (inverted
                                    file) an int8 copy of their full unit rows for the re-rank

An ``.arrays`` file is raw arrays one after the other, each 64-byte aligned, where the sidecar says;
the large ones are memory-mapped where they lie, so opening a million-row index reads no vector.

Checking, and why in two depths: every file is written with its sha256, which ``store check`` (deep)
compares; opening checks each file's size and the crc32 of its small arrays (store rows, list offsets,
scales: what could point a search at a wrong row) and leaves the large vectors unread. A flipped bit
in a vector can only change which candidates are re-ranked: the similarities a search returns are
recomputed from the store's own rows (Fletcher32-checked), so damage there costs recall, never a
wrong number, until the next ``store check`` finds it. A ``.arrays`` file is never rewritten in place
(parts are merged into new files), so a reader's memory map stays valid while a writer works.

Everything here is derived from the store: deleting the folder loses nothing but the time to rebuild.
"""

from __future__ import annotations

import hashlib
import json
import os
import zlib
from pathlib import Path

import numpy as np

from stylesift.atomic import atomic_write, is_temp_name
from stylesift.errors import StylesiftError

__all__ = ["index_root", "set_folder", "SIDECAR", "FORMAT", "VERSION", "SUFFIX", "IndexDamage", "read_sidecar",
           "write_sidecar", "write_arrays", "read_arrays", "check_file", "file_sha256", "remove_unnamed"]

SIDECAR = "index.json"
FORMAT = "stylesift-index"
VERSION = 2            # 1: numpy .npz parts, float16 vectors read whole (an index of version 1 is rebuilt)
SUFFIX = ".arrays"
ALIGN = 64


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
    return parse_sidecar(path, text)


def parse_sidecar(path: Path, text: str) -> dict:
    try:
        doc = json.loads(text)
    except ValueError:
        raise IndexDamage(f"{path}: not JSON (damaged)") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or doc.get("version") != VERSION:
        raise IndexDamage(f"{path}: not a version {VERSION} {FORMAT} sidecar (an older index is rebuilt)")
    return doc


def write_sidecar(folder: Path, doc: dict) -> None:
    with atomic_write(folder / SIDECAR, "w") as fh:
        json.dump(doc, fh, indent=1, sort_keys=True)


def write_arrays(path: Path, arrays: dict[str, np.ndarray], mapped: tuple[str, ...] = ()) -> dict:
    """Write arrays into one file atomically; return its sidecar entry.

    The entry is ``{"file", "sha256", "bytes", "arrays": {name: {"offset", "dtype", "shape", "crc32"}}}``;
    the arrays named in ``mapped`` are memory-mapped by :func:`read_arrays` and carry no crc32 (the
    file's sha256 covers them), the others are read into memory and checked by their crc32.
    """
    digest, layout, offset = hashlib.sha256(), {}, 0
    with atomic_write(path, "wb") as fh:
        for name, a in arrays.items():
            a = np.asarray(a)
            a = a if a.flags.c_contiguous else a.copy()  # (ascontiguousarray would make a 0-d array 1-d)
            pad = -offset % ALIGN
            if pad:
                fh.write(b"\0" * pad)
                digest.update(b"\0" * pad)
                offset += pad
            data = a.reshape(-1).view(np.uint8).data if a.size else b""
            fh.write(data)
            digest.update(data)
            layout[name] = {"offset": offset, "dtype": a.dtype.str, "shape": list(a.shape),
                            "crc32": None if name in mapped else zlib.crc32(data)}
            offset += a.nbytes
    return {"file": path.name, "sha256": digest.hexdigest(), "bytes": offset, "arrays": layout}


def read_arrays(folder: Path, entry: dict) -> dict[str, np.ndarray]:
    """The arrays of a sidecar entry: small ones read and crc32-checked, mapped ones memory-mapped read-only.

    Checks the file's size (a truncated or replaced file) but not its sha256 (see the module's docstring;
    :func:`check_file` with ``deep`` does). FileNotFoundError passes through: a concurrent writer may
    have merged the file away, and the caller reads the sidecar again.
    """
    path = folder / entry["file"]
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise IndexDamage(f"{path}: unreadable ({exc})") from None
    if size != entry["bytes"]:
        raise IndexDamage(f"{path}: {size} bytes, {SIDECAR} records {entry['bytes']} (damaged)")
    out = {}
    try:
        with open(path, "rb") as fh:
            for name, spec in entry["arrays"].items():
                dtype, shape = np.dtype(spec["dtype"]), tuple(spec["shape"])
                count = int(np.prod(shape, dtype=np.int64))
                if spec["crc32"] is None:
                    out[name] = (np.memmap(fh, dtype=dtype, mode="r", offset=spec["offset"], shape=shape) if count
                                 else np.zeros(shape, dtype))
                    continue
                fh.seek(spec["offset"])
                data = fh.read(count * dtype.itemsize)
                if len(data) != count * dtype.itemsize or zlib.crc32(data) != spec["crc32"]:
                    raise IndexDamage(f"{path}: its array {name!r} does not match the crc32 {SIDECAR} records (damaged)")
                out[name] = np.frombuffer(data, dtype).reshape(shape)
    except (ValueError, TypeError, KeyError) as exc:
        raise IndexDamage(f"{path}: unreadable arrays ({exc})") from None
    except OSError as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise IndexDamage(f"{path}: unreadable ({exc})") from None
    return out


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
    """Remove files the sidecar does not name (sources of a merge, an older generation or format, stale temp files).

    Called only by the index writer, under the lock, after the sidecar that stopped naming them.
    """
    named = {SIDECAR}
    if doc:
        named.add(doc["quantizer"]["file"])
        named.update(p["file"] for p in doc["parts"])
    for child in folder.iterdir():
        if child.name not in named and (child.suffix in (SUFFIX, ".npz") or is_temp_name(child.name)):
            try:
                os.unlink(child)
            except OSError:
                pass
