"""Reading rows of a store: a reader over the manifest of a :class:`~stylesift.featurizer.store.manifest.ManifestView`.

Segments are immutable and their names never reused, so what is cached per segment (sha256 index,
paths, labels given at extract) stays good across manifests; a part that vanished (a writer merged it
away) raises FileNotFoundError or :class:`~stylesift.featurizer.store.files.Stale`, and the store's
facade reads the new manifest and tries again.
"""

from __future__ import annotations

import contextlib
import errno
import mmap
import time
from pathlib import Path
from typing import Iterator

import h5py
import numpy as np

from stylesift.featurizer.store import segments as seglib
from stylesift.featurizer.store.files import FORMAT_VERSION, Layout, Stale, extract_hint, h5_reason
from stylesift.featurizer.store.manifest import ManifestView, read_manifest
from stylesift.featurizer.store.records import RecordLog
from stylesift.featurizer.store.types import Failure, StoreError, Verdict

__all__ = ["Snapshot", "StoreReader", "feature_matrix"]

_PLAIN_PAGES_FROM = 4 << 20  # numpy's own threshold for huge-page advice


def feature_matrix(n_rows: int, dim: int) -> np.ndarray:
    """An uninitialised float32 matrix of shape ``(n_rows, dim)`` for features read from a store.

    numpy advises the kernel to back every array of 4 MiB or more with transparent huge pages; where
    the kernel's THP defrag setting is ``madvise`` (the default of common distributions), the first
    touch of each 2 MiB page may then wait while the kernel compacts memory. A store read touches
    every page once, in order, so on a long-running machine those waits were most of reading
    100,000 pooled rows (1.5-3.4 s against 1.0-1.1 s, docs/benchmarks.md). Anonymous memory from
    :mod:`mmap` carries no such advice; small matrices keep numpy's allocator.
    """
    nbytes = n_rows * dim * 4
    if nbytes < _PLAIN_PAGES_FROM:
        return np.empty((n_rows, dim), np.float32)
    return np.frombuffer(mmap.mmap(-1, nbytes), np.float32).reshape(n_rows, dim)


class Snapshot:
    """Rows, ids, labels and features of the rows a view's manifest names.

    Parameters
    ----------
    layout : Layout
        Where the store's parts live.
    view : ManifestView
        The manifest read from; the snapshot follows it as it changes.
    """

    def __init__(self, layout: Layout, view: ManifestView):
        self.layout = layout
        self.view = view
        self.reset()

    def reset(self) -> None:
        """Forget everything cached (the rows were renumbered, or parts may have changed)."""
        self._indexes: dict[str, np.ndarray] = {}
        self._paths: dict[str, list[list[bytes]]] = {}
        self._labels: dict[str, np.ndarray] = {}
        self._patch_rows: dict[str, np.ndarray] = {}
        self.global_index = None  # one sorted array of all ids, built after many look-ups
        self._lookups = 0

    def forget(self, name: str) -> None:
        """Drop what is cached of segment ``name`` (deleted by a merge)."""
        self._indexes.pop(name, None)
        self._paths.pop(name, None)
        self._labels.pop(name, None)

    @property
    def rows(self) -> int:
        return self.view.rows

    def check_row(self, row: int) -> int:
        row = int(row)
        if not 0 <= row < self.rows:
            raise IndexError(f"{self.layout.path}: row {row} is outside the store's {self.rows} rows")
        return row

    def segments_in(self, lo: int, hi: int):
        """(segment, start, first local row, last local row + 1) of the segments covering rows [lo, hi)."""
        segs, starts = self.view.segments, self.view.starts
        k = int(np.searchsorted(starts, lo, "right")) - 1
        while k < len(segs) and starts[k] < hi:
            start = int(starts[k])
            yield segs[k], start, max(lo, start) - start, min(hi, start + segs[k]["rows"]) - start
            k += 1

    @contextlib.contextmanager
    def open(self, name: str) -> Iterator[h5py.File]:
        """A part of the store, open for reading; any sign of damage inside the block is one StoreError naming it."""
        path = self.layout.parts / name
        try:
            f = h5py.File(path, "r")
        except FileNotFoundError:
            raise
        except (OSError, ValueError) as exc:
            if not path.exists():
                raise FileNotFoundError(errno.ENOENT, "missing", str(path)) from None
            raise self._damaged(path, exc) from None
        try:
            with f:
                yield f
        except (StoreError, FileNotFoundError):
            raise
        except (OSError, KeyError, ValueError, TypeError, IndexError, RuntimeError, UnicodeError) as exc:
            raise self._damaged(path, exc) from None

    def _damaged(self, path: Path, exc: BaseException) -> StoreError:
        store = self.layout.path
        return StoreError(f"{path}: damaged part of the store {store} ({h5_reason(exc)}); run "
                          f"`stylesift store check {store} --repair` to move it aside (its images are "
                          "featurized again by the next extract)")

    def _read(self, f: h5py.File, dataset: str, sel, what: str):
        try:
            return f[dataset][sel]
        except (OSError, KeyError) as exc:
            raise StoreError(f"{f.filename}: {what} fail(s) their checksum or cannot be read ({h5_reason(exc)}); "
                             f"run `stylesift store check {self.layout.path} --repair` to move the damaged part aside "
                             "(its images are featurized again by the next extract)") from None

    # ----------------------------------------------------------------- columns and look-ups
    def column(self, name: str) -> np.ndarray:
        """A per-row dataset (``sha256``, ``added``) of every row, concatenated over the segments."""
        parts = []
        for seg, start, lo, hi in self.segments_in(0, self.rows):
            with self.open(seg["name"]) as f:
                parts.append(self._read(f, name, slice(lo, hi), f"{name} of rows {start + lo}-{start + hi - 1}"))
        dtype = "S64" if name == "sha256" else np.float64
        return np.concatenate(parts) if parts else np.empty(0, dtype)

    def _index(self, seg: dict) -> np.ndarray:
        index = self._indexes.get(seg["name"])
        if index is None:
            file = self.layout.parts / seg["name"]
            try:
                index = seglib.open_index(file, seg["rows"])
            except FileNotFoundError:
                raise
            except (OSError, KeyError, ValueError, TypeError):
                index = None
            if index is None:  # not mappable: build it in memory from the ids
                with self.open(seg["name"]) as f:
                    index = seglib.build_index(self._read(f, "sha256", slice(None), "the ids"))
            self._indexes[seg["name"]] = index
        return index

    def lookup(self, queries: np.ndarray) -> np.ndarray:
        """Rows of the ``S64`` ids ``queries`` (-1 where absent)."""
        out = np.full(len(queries), -1, np.int64)
        self._lookups += len(queries)
        first = 0
        if self.global_index is None and self._lookups > 256 and self.rows > 65536 and len(self.view.segments) > 4:
            self.global_index = self._build_global()  # many look-ups (an extract re-walking a folder): one sorted array
        if self.global_index is not None:
            prefix, keys, rows, first = self.global_index
            q = seglib.hex_prefix(queries)
            at = np.searchsorted(prefix, q)
            while True:  # (equal 64-bit prefixes are astronomically rare, but handled)
                ok = at < len(prefix)
                cand = np.flatnonzero(ok & (out < 0))
                cand = cand[prefix[at[cand]] == q[cand]]
                if not len(cand):
                    break
                hit = cand[keys[at[cand]] == queries[cand]]
                out[hit] = rows[at[hit]]
                at[cand] += 1
        for seg, start, lo, hi in self.segments_in(first, self.rows):
            todo = np.flatnonzero(out < 0)
            if not len(todo):
                break
            pos = seglib.lookup(self._index(seg), queries[todo])
            hit = (pos >= lo) & (pos < hi)
            out[todo[hit]] = start + pos[hit]
        return out

    def _build_global(self):
        keys, rows = [], []
        for seg, start, lo, hi in self.segments_in(0, self.rows):
            index = self._index(seg)
            keep = np.asarray(index["pos"]) < hi
            keys.append(np.asarray(index["sha"])[keep])
            rows.append(start + np.asarray(index["pos"], np.int64)[keep])
        keys_all = np.concatenate(keys)
        prefix = seglib.hex_prefix(keys_all)
        order = np.argsort(prefix, kind="stable")
        return prefix[order], keys_all[order], np.concatenate(rows)[order], self.rows

    def sha_of(self, row: int) -> str:
        for seg, start, lo, hi in self.segments_in(row, row + 1):
            with self.open(seg["name"]) as f:
                return self._read(f, "sha256", lo, f"the id of row {row}").decode()
        raise IndexError(row)

    def base_paths(self, row: int) -> list[bytes]:
        """The paths row ``row`` was written with (later records may override them)."""
        for seg, start, lo, hi in self.segments_in(row, row + 1):
            cached = self._paths.get(seg["name"])
            if cached is None:
                with self.open(seg["name"]) as f:
                    off = self._read(f, "paths_offsets", slice(None), "the path offsets")
                    data = self._read(f, "paths_data", slice(None), "the paths").tobytes()
                cached = self._paths[seg["name"]] = seglib.decode_paths(off, data)
            return list(cached[lo])
        raise IndexError(row)

    def _segment_labels(self, seg: dict) -> np.ndarray:
        """The labels given at extract of every row of a segment (cached: extract asks per file)."""
        cached = self._labels.get(seg["name"])
        if cached is None:
            with self.open(seg["name"]) as f:
                names = np.array([s.decode() for s in self._read(f, "label_names", slice(None), "the label names")],
                                 dtype=object)
                cached = self._labels[seg["name"]] = names[self._read(f, "label_code", slice(None), "the labels")]
        return cached

    def base_label(self, row: int) -> str:
        """The label row ``row`` was written with."""
        for seg, start, lo, hi in self.segments_in(row, row + 1):
            return str(self._segment_labels(seg)[lo])
        raise IndexError(row)

    def labels(self, *overrides: dict[str, str]) -> np.ndarray:
        """Every row's label given at extract, replaced by ``overrides`` (sha256 -> label, later ones win)."""
        out = np.empty(self.rows, dtype=object)
        for seg, start, lo, hi in self.segments_in(0, self.rows):
            out[start + lo:start + hi] = self._segment_labels(seg)[lo:hi]
        for source in overrides:
            if source:
                keys = list(source)
                rows = self.lookup(np.array(keys, "S64"))
                for key, row in zip(keys, rows):
                    if row >= 0:
                        out[row] = source[key]
        return out

    # ----------------------------------------------------------------- features
    def has(self, name: str) -> np.ndarray:
        """Whether each row holds feature set ``name``."""
        out = np.zeros(self.rows, bool)
        if name not in self.view.feature_sets:
            return out
        for seg, start, lo, hi in self.segments_in(0, self.rows):
            if name in seg["sets"]:
                if seg.get("partial", {}).get(name):
                    with self.open(seg["name"]) as f:
                        out[start + lo:start + hi] = self._read(f, f"present/{name}", slice(lo, hi), "presence")
                else:
                    out[start + lo:start + hi] = True
        for p in self.view.patches:
            if p["set"] == name:
                rows = self._patch_index(p)
                out[rows[rows < self.rows]] = True
        return out

    def _patch_index(self, p: dict) -> np.ndarray:
        rows = self._patch_rows.get(p["name"])
        if rows is None:
            with self.open(p["name"]) as f:
                rows = self._patch_rows[p["name"]] = self._read(f, "row", slice(None), "the patch rows")
        return rows

    def read_rows(self, name: str, rows: np.ndarray, out: np.ndarray) -> None:
        """Features of set ``name`` of ``rows`` (any order) into ``out``, from segments, then patches."""
        order = np.argsort(rows, kind="stable")
        srt = rows[order]
        missing: list[np.ndarray] = []
        starts = self.view.starts
        bounds = np.searchsorted(srt, starts)
        for k, seg in enumerate(self.view.segments):
            a, b = int(bounds[k]), int(bounds[k + 1])
            if a == b:
                continue
            start = int(starts[k])
            local, dest = srt[a:b] - start, order[a:b]
            if name not in seg["sets"]:
                missing.append(dest)
                continue
            with self.open(seg["name"]) as f:
                if seg.get("partial", {}).get(name):
                    present = self._read(f, f"present/{name}", slice(None), "presence")[local]
                    missing.append(dest[~present])
                    local, dest = local[present], dest[present]
                self._read_segment_rows(f, f"sets/{name}", local, dest, out, start)
        missing_rows = np.concatenate(missing) if missing else np.empty(0, np.int64)
        if len(missing_rows):
            found = np.zeros(len(missing_rows), bool)
            want = rows[missing_rows]
            for p in self.view.patches:
                if p["set"] != name:
                    continue
                prow = self._patch_index(p)
                at = np.minimum(np.searchsorted(prow, want), len(prow) - 1)
                hit = (prow[at] == want) & ~found
                if hit.any():
                    with self.open(p["name"]) as f:
                        self._read_segment_rows(f, f"sets/{name}", at[hit], missing_rows[hit], out, 0)
                    found |= hit
            if not found.all():
                raise StoreError(f"{self.layout.path}: {int((~found).sum())} of the requested rows lack the feature set "
                                 f"{name!r}; add it with {extract_hint(self.layout.path, name)}")

    def _read_segment_rows(self, f: h5py.File, dataset: str, local: np.ndarray, dest: np.ndarray, out: np.ndarray,
                           start: int) -> None:
        """Rows ``local`` (sorted) of a segment's dataset into ``out[dest]``: dense spans as slices, sparse ones by chunk."""
        if not len(local):
            return
        ds = f[dataset]
        chunk = ds.chunks[0] if ds.chunks else 1
        lo, hi = int(local[0]), int(local[-1]) + 1
        try:
            if len(local) * 4 >= hi - lo:  # dense: read the span in one go
                if len(local) == hi - lo and np.all(np.diff(dest) == 1):
                    ds.read_direct(out, np.s_[lo:hi], np.s_[int(dest[0]):int(dest[0]) + hi - lo])
                else:
                    out[dest] = ds[lo:hi][local - lo]
                return
            chunks = local // chunk
            cut = np.flatnonzero(np.diff(chunks)) + 1
            for group, where in zip(np.split(local, cut), np.split(np.arange(len(local)), cut)):
                c0 = int(group[0]) // chunk * chunk
                block = ds[c0:min(c0 + chunk, ds.shape[0])]
                out[dest[where]] = block[group - c0]
        except OSError as exc:
            raise StoreError(f"{f.filename}: features of rows {start + lo}-{start + hi - 1} fail their checksum or "
                             f"cannot be read ({h5_reason(exc)}); run `stylesift store check {self.layout.path} --repair` "
                             "to move the damaged part aside (its images are featurized again by the next extract)") from None


class StoreReader:
    """The reading interface of a current-format store: a :class:`Snapshot` plus its small records, retried
    when a writer changes the parts under it (the same methods as the legacy
    :class:`~stylesift.featurizer.store.legacy.V1Adapter`).

    Parameters
    ----------
    layout : Layout
        Where the store's parts live.
    m : dict
        The manifest to read.
    writer : bool
        Whether the caller holds the writer lock: then nothing changes under it, and a missing part is damage.
    """

    format_version = FORMAT_VERSION

    @property
    def generation(self) -> int:
        return int(self.view.current.get("generation", 0))

    def __init__(self, layout: Layout, m: dict, writer: bool):
        self.layout = layout
        self.view = ManifestView(layout, m)
        self.snapshot = Snapshot(layout, self.view)
        self.log = RecordLog(layout)
        self.writer = writer
        self.reset()

    def reset(self) -> None:
        """Forget everything read (the parts may have changed)."""
        self.snapshot.reset()
        self._sha = self._labels = None
        self._meta: dict | None = None

    def reload(self, m: dict) -> None:
        """Read from ``m`` (a manifest found on disk) and forget everything read before."""
        self.reset()
        self.view.adopt(m)

    def adopt(self, m: dict) -> None:
        """Read from ``m`` (a manifest this process wrote: the parts read so far stay good)."""
        self.view.adopt(m)
        self._sha = self._labels = None

    def records_changed(self) -> None:
        """The state was changed in place (a record was added): labels are computed again."""
        self._labels = None

    def forget_state(self) -> None:
        """Read the small records again when next asked (before a fold: what is on disk is folded)."""
        self._meta = None

    def retry(self, fn):
        """Run a read; when a part vanished under it (a writer merged or folded), reread the manifest and retry."""
        for attempt in range(50):
            try:
                return fn()
            except (FileNotFoundError, Stale) as exc:
                if self.writer:
                    raise StoreError(f"{self.layout.path}: a part of the store is missing "
                                     f"({getattr(exc, 'filename', '')}); run `stylesift store check {self.layout.path}`"
                                     ) from None
                time.sleep(min(0.01 * attempt, 0.2))
                self._refresh()
        raise StoreError(f"{self.layout.path}: the store keeps changing under the reader, or a part named by its "
                         f"manifest is missing; try again, and if no writer is running, run "
                         f"`stylesift store check {self.layout.path}`")

    def _refresh(self) -> None:
        m = read_manifest(self.layout)
        if m.get("epoch", 0) != self.view.current.get("epoch", 0):
            raise StoreError(f"{self.layout.path}: rows were removed (prune or repair) while the store was open; "
                             "open it again")
        rows = self.view.rows
        self.reset()
        self.view.adopt(m, min(rows, int(m["rows"])))  # keep the snapshot: rows added meanwhile are not in this view

    def state(self) -> dict:
        """Labels, paths, verdicts and failures the small records hold (see :mod:`~stylesift.featurizer.store.records`)."""
        if self._meta is None:
            self._meta = self.retry(lambda: self.log.load(self.view.current, strict=not self.writer))
        return self._meta

    # ----------------------------------------------------------------- the reading interface
    def __len__(self) -> int:
        return self.view.rows

    @property
    def feature_sets(self) -> dict[str, dict]:
        return self.view.feature_sets

    @property
    def sha256(self) -> np.ndarray:
        if self._sha is None:
            self._sha = self.retry(lambda: self.snapshot.column("sha256")).astype(str)
        return self._sha

    @property
    def added(self) -> np.ndarray:
        return self.retry(lambda: self.snapshot.column("added"))

    @property
    def labels(self) -> np.ndarray:
        if self._labels is None:
            def compute():
                state = self.state()
                return self.snapshot.labels(state["labels"], {v.sha256: v.label for v in state["verdicts"]})

            self._labels = self.retry(compute)
        return self._labels

    def base_paths(self, row: int) -> list[bytes]:
        return self.retry(lambda: self.snapshot.base_paths(row))

    def base_label(self, row: int) -> str:
        return self.retry(lambda: self.snapshot.base_label(row))

    def path_bytes(self, row: int) -> list[bytes]:
        row = self.snapshot.check_row(row)
        sha = self.sha256[row] if self._sha is not None else self.snapshot.sha_of(row)
        override = self.state()["paths"].get(str(sha))
        if override is not None:
            return list(override)
        return self.base_paths(row)

    @property
    def failures(self) -> list[Failure]:
        return list(self.state()["failures"].values())

    def rows_of(self, sha256s) -> np.ndarray:
        queries = np.asarray(list(sha256s) if not isinstance(sha256s, np.ndarray) else sha256s, dtype="S64")
        return self.retry(lambda: self.snapshot.lookup(queries))

    def has_features(self, name: str = "pooled") -> np.ndarray:
        return self.retry(lambda: self.snapshot.has(name))

    def features(self, rows: np.ndarray, feature_set: str = "pooled") -> np.ndarray:
        out = feature_matrix(len(rows), self.view.set_dim(feature_set))
        if len(rows):
            self.retry(lambda: self.snapshot.read_rows(feature_set, rows, out))
        return out

    def verdicts(self) -> list[Verdict]:
        return self.state()["verdicts"]
