"""Immutable segment files of the feature store, their sorted sha256 indexes and the plain-h5py top file.

A segment (``seg-<id>.h5``) holds a run of consecutive rows, written once and never changed::

    /sha256            S64     (n,)      hex sha256 of each row's file bytes
    /added             float64 (n,)      unix time the row was extracted
    /label_code        int32   (n,)      index into /label_names (the label given at extract)
    /label_names       S<k>    (m,)      UTF-8 label texts; "" = unlabelled
    /paths_offsets     int64   (n + 1,)  row i's paths are /paths_data[off[i]:off[i+1]] ...
    /paths_data        uint8   (total,)  ... the OS's bytes of each path, separated by NUL bytes
    /sets/<name>       float32 (n, d)    one feature set (``pooled`` is the 2048-d default)
    /present/<name>    bool    (n,)      only where some rows lack that set
    attrs: format="stylesift-segment", rows

Every dataset is chunked with HDF5's Fletcher32 filter, so a flipped bit is a read error, never a
silently different value. A patch (``patch-<id>.h5``) adds one set to rows of older segments:
``/row`` int64 (sorted global row numbers), ``/sha256`` and ``/sets/<name>``.

``/index_sha`` (S64, sorted) and ``/index_pos`` (uint32: each id's row in the segment), contiguous and
in the segment itself so one fsync covers them, are the segment's sha256 index: memory-mapped and
binary-searched, so a look-up reads a few pages instead of every id. They carry a crc32 (attribute of
/index_pos over both); It is derived data (``store check`` compares it with /sha256).
"""

from __future__ import annotations

import zlib
from pathlib import Path

import h5py
import numpy as np

SEGMENT_FORMAT = "stylesift-segment"
# Rows per feature chunk. Chunks are the unit HDF5 reads and checksums: small chunks make random
# rows cheap (a look-up reads 16 rows, 128 KiB at 2048-d), large ones make streaming cheaper.
CHUNK_ROWS = 16
# The index as two contiguous columns: np.searchsorted copies a strided array first, so no record type.


def _chunks(n: int, *rest: int, rows: int) -> tuple[int, ...]:
    return (max(1, min(n, rows)), *rest)


def _write_columns(f: h5py.File, sha256s: np.ndarray, labels, paths: list[list[bytes]], added: np.ndarray) -> None:
    n = len(sha256s)
    names, codes = np.unique(np.array([lab or "" for lab in labels], dtype=object).astype(str), return_inverse=True)
    blobs = [b"\0".join(p) for p in paths]
    offsets = np.zeros(n + 1, np.int64)
    np.cumsum([len(b) for b in blobs], out=offsets[1:])
    data = np.frombuffer(b"".join(blobs) or b"\0", np.uint8)
    encoded = [s.encode() for s in names] or [b""]
    f.attrs["format"] = SEGMENT_FORMAT
    f.attrs["rows"] = n
    common = {"fletcher32": True}
    f.create_dataset("sha256", data=np.asarray(sha256s, dtype="S64"), chunks=_chunks(n, rows=8192), **common)
    f.create_dataset("added", data=np.asarray(added, np.float64), chunks=_chunks(n, rows=8192), **common)
    f.create_dataset("label_code", data=codes.astype(np.int32).reshape(n), chunks=_chunks(n, rows=8192), **common)
    f.create_dataset("label_names", data=np.array(encoded, dtype=f"S{max(1, max(map(len, encoded)))}"),
                     chunks=_chunks(len(encoded), rows=1024), **common)
    f.create_dataset("paths_offsets", data=offsets, chunks=_chunks(n + 1, rows=8192), **common)
    f.create_dataset("paths_data", data=data, chunks=_chunks(len(data), rows=1 << 16), **common)
    index = build_index(sha256s)
    # Contiguous (memory-mapped by readers), so no HDF5 filter: the index carries its own checksum.
    f.create_dataset("index_sha", data=index["sha"])
    ds = f.create_dataset("index_pos", data=index["pos"])
    ds.attrs["crc32"] = zlib.crc32(index["pos"].tobytes(), zlib.crc32(index["sha"].tobytes()))


def write_segment(path: Path, sha256s: np.ndarray, sets: dict[str, np.ndarray], labels: list[str],
                  paths: list[list[bytes]], added: np.ndarray, present: dict[str, np.ndarray] | None = None,
                  chunk_rows: int = CHUNK_ROWS) -> None:
    """Write one segment file at ``path`` (the caller renames it into place)."""
    n = len(sha256s)
    with h5py.File(path, "w", libver="latest") as f:
        _write_columns(f, sha256s, labels, paths, added)
        for name, X in sets.items():
            X = np.ascontiguousarray(X, np.float32)
            f.create_dataset(f"sets/{name}", data=X, chunks=_chunks(n, X.shape[1], rows=chunk_rows), fletcher32=True)
            if present and name in present and not present[name].all():
                f.create_dataset(f"present/{name}", data=present[name].astype(bool), chunks=_chunks(n, rows=8192),
                                 fletcher32=True)


def read_columns(f: h5py.File) -> tuple[np.ndarray, np.ndarray, list[str], list[list[bytes]]]:
    """(sha256 S64, added, labels, paths) of every row of an open segment."""
    names = np.array([s.decode() for s in f["label_names"][:]], dtype=object)
    labels = list(names[f["label_code"][:]])
    paths = decode_paths(f["paths_offsets"][:], f["paths_data"][:].tobytes())
    return f["sha256"][:], f["added"][:], labels, paths


def merge_segments(path: Path, sources: list[Path], set_dims: dict[str, int], keep: list[np.ndarray] | None = None,
                   chunk_rows: int = CHUNK_ROWS, block_rows: int = 8192) -> None:
    """One segment at ``path`` from ``sources`` in order (rows where ``keep[i]`` is True), streamed block by block."""
    files = [h5py.File(s, "r") for s in sources]
    try:
        masks = keep or [np.ones(int(f.attrs["rows"]), bool) for f in files]
        cols = [read_columns(f) for f in files]
        sha = np.concatenate([c[0][m] for c, m in zip(cols, masks)])
        added = np.concatenate([c[1][m] for c, m in zip(cols, masks)])
        labels = [lab for c, m in zip(cols, masks) for lab, k in zip(c[2], m) if k]
        paths = [p for c, m in zip(cols, masks) for p, k in zip(c[3], m) if k]
        n = len(sha)
        names = sorted({k for f in files if "sets" in f for k in f["sets"]})
        with h5py.File(path, "w", libver="latest") as out:
            _write_columns(out, sha, labels, paths, added)
            for name in names:
                dim = set_dims.get(name) or next(f[f"sets/{name}"].shape[1] for f in files if f"sets/{name}" in f)
                ds = out.create_dataset(f"sets/{name}", (n, dim), np.float32, chunks=_chunks(n, dim, rows=chunk_rows),
                                        fletcher32=True, fillvalue=np.nan)
                present = np.zeros(n, bool)
                at = 0
                for f, m in zip(files, masks):
                    k = int(m.sum())
                    if f"sets/{name}" in f:
                        src = f[f"sets/{name}"]
                        here = f[f"present/{name}"][:] if f"present/{name}" in f else np.ones(len(m), bool)
                        present[at:at + k] = here[m]
                        pos = at
                        for lo in range(0, len(m), block_rows):
                            sel = m[lo:lo + block_rows]
                            cnt = int(sel.sum())
                            if cnt:
                                block = src[lo:lo + len(sel)]
                                ds[pos:pos + cnt] = block if cnt == len(sel) else block[sel]
                                pos += cnt
                    at += k
                if not present.all():
                    out.create_dataset(f"present/{name}", data=present, chunks=_chunks(n, rows=8192), fletcher32=True)
    finally:
        for f in files:
            f.close()


def write_patch(path: Path, rows: np.ndarray, sha256s: np.ndarray, name: str, X: np.ndarray,
                chunk_rows: int = CHUNK_ROWS) -> None:
    n = len(rows)
    with h5py.File(path, "w", libver="latest") as f:
        f.attrs["format"] = SEGMENT_FORMAT + "-patch"
        f.attrs["rows"] = n
        f.create_dataset("row", data=np.asarray(rows, np.int64), chunks=_chunks(n, rows=8192), fletcher32=True)
        f.create_dataset("sha256", data=np.asarray(sha256s, "S64"), chunks=_chunks(n, rows=8192), fletcher32=True)
        f.create_dataset(f"sets/{name}", data=np.ascontiguousarray(X, np.float32),
                         chunks=_chunks(n, X.shape[1], rows=chunk_rows), fletcher32=True)


def build_index(sha256s: np.ndarray) -> dict[str, np.ndarray]:
    """``{"sha": sorted S64 ids, "pos": their rows in the segment (uint32)}``."""
    sha = np.asarray(sha256s, "S64")
    order = np.argsort(sha, kind="stable")
    return {"sha": np.ascontiguousarray(sha[order]), "pos": order.astype(np.uint32)}


def open_index(path: Path, rows: int) -> dict[str, np.ndarray] | None:
    """The segment's sorted index, memory-mapped (None when absent, not mappable or failing its checksum)."""
    with h5py.File(path, "r") as f:
        if "index_sha" not in f or "index_pos" not in f:
            return None
        a, b = f["index_sha"], f["index_pos"]
        offsets = a.id.get_offset(), b.id.get_offset()
        if None in offsets or a.shape != (rows,) or b.shape != (rows,) or a.dtype != np.dtype("S64") \
                or b.dtype != np.dtype("<u4"):
            return None
        digest = b.attrs.get("crc32")
    index = {"sha": np.memmap(path, dtype="S64", mode="r", offset=offsets[0], shape=(rows,)),
             "pos": np.memmap(path, dtype="<u4", mode="r", offset=offsets[1], shape=(rows,))}
    if digest is None or zlib.crc32(index["pos"], zlib.crc32(index["sha"])) != int(digest):
        return None  # damaged: the caller rebuilds it from the checksummed ids
    return index


def lookup(index: dict, queries: np.ndarray) -> np.ndarray:
    """Positions of ``queries`` (S64) in the segment, -1 where absent."""
    keys = index["sha"]
    at = np.searchsorted(keys, queries)
    at = np.minimum(at, len(keys) - 1) if len(keys) else at
    out = np.full(len(queries), -1, np.int64)
    if len(keys):
        hit = keys[at] == queries
        out[hit] = index["pos"][at[hit]]
    return out


_HEX = np.zeros(256, np.uint64)
_HEX[np.frombuffer(b"0123456789", np.uint8)] = np.arange(10, dtype=np.uint64)
_HEX[np.frombuffer(b"abcdef", np.uint8)] = np.arange(10, 16, dtype=np.uint64)
_HEX[np.frombuffer(b"ABCDEF", np.uint8)] = np.arange(10, 16, dtype=np.uint64)


def hex_prefix(keys: np.ndarray) -> np.ndarray:
    """The first 16 hex digits of each S64 id as a uint64 (sorts like the ids)."""
    if len(keys) < 64:  # a few ids: plain Python is faster than 16 array passes
        return np.array([int(bytes(k)[:16] or b"0", 16) for k in np.asarray(keys, "S64")], np.uint64)
    raw = np.frombuffer(np.ascontiguousarray(keys, "S64").tobytes(), np.uint8).reshape(-1, 64)[:, :16]
    out = np.zeros(len(raw), np.uint64)
    for i in range(16):
        out = (out << np.uint64(4)) | _HEX[raw[:, i]]
    return out


def decode_paths(offsets: np.ndarray, data: bytes) -> list[list[bytes]]:
    out = []
    for a, b in zip(offsets[:-1], offsets[1:]):
        chunk = data[a:b]
        out.append(chunk.split(b"\0") if chunk else [])
    return out


def write_top(path: Path, parts_name: str, segments: list[dict], rows: int, pooled_dim: int | None,
              attrs: dict) -> None:
    """The top file: ``/features`` and ``/sha256`` as virtual datasets over the segments, for plain h5py.

    Rows a missing segment would hold read as NaN (features) and empty ids: readers that go through
    stylesift check the manifest instead; ``stylesift store check`` says which file is missing.
    """
    with h5py.File(path, "w", libver="latest") as f:
        for key, value in attrs.items():
            f.attrs[key] = value
        if rows == 0 or not segments:
            f.create_dataset("sha256", (0,), "S64")
            f.create_dataset("added", (0,), np.float64)
            if pooled_dim:
                f.create_dataset("features", (0, pooled_dim), np.float32)
            return
        sha = h5py.VirtualLayout((rows,), "S64")
        feats = h5py.VirtualLayout((rows, pooled_dim), np.float32) if pooled_dim else None
        added = h5py.VirtualLayout((rows,), np.float64)
        start = 0
        for seg in segments:
            n = seg["rows"]
            source = f"{parts_name}/{seg['name']}"
            sha[start:start + n] = h5py.VirtualSource(source, "sha256", shape=(n,))
            added[start:start + n] = h5py.VirtualSource(source, "added", shape=(n,))
            if feats is not None and "pooled" in seg["sets"]:
                feats[start:start + n] = h5py.VirtualSource(source, "sets/pooled", shape=(n, pooled_dim))
            start += n
        f.create_virtual_dataset("sha256", sha, fillvalue=b"")
        f.create_virtual_dataset("added", added, fillvalue=np.nan)
        if feats is not None:
            f.create_virtual_dataset("features", feats, fillvalue=np.nan)
