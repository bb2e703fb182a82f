"""The feature store: one row per distinct image content; each write costs what it adds; a crash loses nothing.

Layout (format_version 2) of a store ``STORE.h5``::

    STORE.h5                  top file for plain h5py: /features (pooled set) and /sha256, /added as
                              virtual datasets over the segments; rewritten when segments change
    STORE.h5.parts/
        manifest.json         the truth: segments in row order, patches, feature sets and their
                              fingerprints, the folded metadata file, generation; replaced atomically
        seg-<id>.h5           immutable rows (see :mod:`stylesift.featurizer.segments`), Fletcher32,
                              with its sorted sha256 index (memory-mapped look-ups)
        patch-<id>.h5         a feature set added later to rows of older segments
        meta-<id>.json        folded small records: labels set after extract, paths, verdicts, failures
        log/<seq>.json        small records newer than the folded file (each one durable on its own)
    STORE.h5.lock             one writer at a time (filelock); readers take no lock

Writing: each :meth:`FeatureStore.add` writes one new segment (temp file, fsync, rename) and then a
new manifest (temp, fsync, rename): the rows are durable when it returns, and its cost is that of
the rows it adds. Labels, paths, verdicts and failures are small JSON records in ``log/``; a commit
folds them into a new ``meta`` file now and then (every :data:`FOLD_RECORDS` records). Small segments
are merged with the ones before them while a segment is no larger than everything after it (a binary
counter: each row is rewritten at most log2(merge_rows / batch) times), up to ``merge_rows`` rows;
``stylesift store compact`` merges further. Rows are only appended and merges keep their order, so
row ``i`` stays row ``i`` (``prune`` and ``check --repair`` renumber, and bump the manifest's epoch).

Reading: opening reads only the manifest. Ids, labels and paths are read when first asked for; a
look-up by sha256 binary-searches the memory-mapped indexes. A segment or record that vanishes under
a reader (a writer merged or folded it) makes the reader read the new manifest and try again.

Crash safety: a kill at any moment leaves the old manifest or the new one; files the manifest does
not name (temp files, a segment written but not yet listed, sources of a merge already listed as
merged) are removed by the next writer. ``STYLESIFT_CRASH_AT=<point>[:<n>]`` makes a process SIGKILL
itself the n-th time it passes one of :data:`CRASH_POINTS` (for the crash tests).

Stores written before (format_version 1: one HDF5 file plus a journal) open for reading as they are
(:mod:`stylesift.featurizer.store_v1`) and are upgraded by the first writer, which keeps the old file
as ``STORE.h5.v1-backup`` (and its journal as ``STORE.h5.journal.v1-backup``).
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import h5py
import numpy as np

from stylesift.featurizer import segments as seglib
from stylesift.featurizer.space import require_same
from stylesift.featurizer.store_files import (  # noqa: F401  (CRASH_POINTS, FORMAT*: part of this module's API)
    CRASH_POINTS,
    FORMAT,
    FORMAT_VERSION,
    acquire_writer_lock,
)
from stylesift.featurizer.store_files import (
    b64 as _b64,
)
from stylesift.featurizer.store_files import (
    checksum as _checksum,
)
from stylesift.featurizer.store_files import (
    crash_point as _crash_point,
)
from stylesift.featurizer.store_files import (
    empty_manifest as _empty_manifest,
)
from stylesift.featurizer.store_files import (
    fsync as _fsync,
)
from stylesift.featurizer.store_files import (
    fsync_dir as _fsync_dir,
)
from stylesift.featurizer.store_files import (
    read_json as _read_json,
)
from stylesift.featurizer.store_files import (
    unb64 as _unb64,
)
from stylesift.featurizer.store_files import (
    write_json_atomic as _write_json_atomic,
)
from stylesift.featurizer.store_types import (
    Failure,
    FeatureSpaceMismatch,
    StoreError,
    Verdict,
    display_path,
    path_bytes,
    path_fields,
)

__all__ = ["FeatureStore", "StoreError", "FeatureSpaceMismatch", "Failure", "Verdict", "display_path",
           "path_fields", "CRASH_POINTS", "FORMAT", "FORMAT_VERSION"]

_LOG = logging.getLogger("stylesift.store")
FOLD_RECORDS = 32
MERGE_ROWS = 32768


def _extract_hint(path, name: str) -> str:
    return f"`stylesift extract PATH --store {path} --features {name}`"


class FeatureStore:
    """A feature store opened for reading (``"r"``) or appending (``"a"``).

    Parameters
    ----------
    path : path
        The store's ``.h5`` file (its data lives beside it in ``<name>.parts/``). In ``"a"`` mode it
        is created by the first :meth:`add`.
    mode : {"r", "a"}
        ``"a"`` takes the writer lock, waiting up to ``lock_timeout`` seconds (-1: forever).
    fingerprint : dict, optional
        Fingerprint of the ``pooled`` feature set the writer will add; must equal the store's.
    merge_rows : int
        Largest segment an automatic merge makes (``store compact`` may make larger ones).
    """

    def __new__(cls, path=None, mode: str = "r", **kwargs):
        if cls is FeatureStore and mode == "r" and path is not None and _is_legacy(Path(path)):
            return super().__new__(_V1Reader)
        return super().__new__(cls)

    def __init__(self, path, mode: str = "r", *, fingerprint: dict | None = None, lock_timeout: float = -1,
                 compact_rows: int | None = None, merge_rows: int = MERGE_ROWS):
        if mode not in ("r", "a"):
            raise ValueError(f"mode must be 'r' or 'a', not {mode!r}")
        self.path = Path(path)
        self.mode = mode
        self.parts = self.path.with_name(self.path.name + ".parts")
        self.log_dir = self.parts / "log"
        self.manifest_path = self.parts / "manifest.json"
        self.merge_rows = int(merge_rows)
        self._lock = None
        self._pending_fp: dict[str, dict] = {}
        self._staged: dict[str, dict] = {}
        self._session_segments = 0
        self._reset_caches()
        if self.path.is_dir():
            raise StoreError(f"{self.path}: is a folder, not a feature store; give the store's .h5 file "
                             "(e.g. --store features.h5)")
        if mode == "r" and not self.manifest_path.exists():
            if self.path.exists():
                _check_top(self.path, self.parts)
            raise StoreError(f"{self.path}: no such feature store (create one with "
                             f"`stylesift extract ... --store {self.path}`)")
        if mode == "a" and self.path.is_file() and not self.manifest_path.exists() and not _is_legacy(self.path):
            _check_top(self.path, self.parts)  # e.g. the .h5 copied without its parts folder: never start over
        try:
            if mode == "a":
                self._acquire_lock(lock_timeout)
                self._upgrade_legacy()
                self._remove_leftovers()
            self._m = self._read_manifest()
            self._adopt(self._m)
            if fingerprint is not None:
                self._check_fingerprint("pooled", fingerprint)
        except BaseException:
            self.close(commit=False)
            raise

    # ================================================================= reading
    def __len__(self) -> int:
        return self._n

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        # Commit even when interrupted: every written segment and record is good.
        self.close()

    @property
    def feature_sets(self) -> dict[str, dict]:
        """Name -> fingerprint of every feature set the store holds (``"pooled"`` is the 2048-d default)."""
        return {**self._m.get("feature_sets", {}), **self._pending_fp}

    @property
    def fingerprint(self) -> dict | None:
        """Fingerprint of the ``pooled`` set (None for a store that holds nothing yet)."""
        return self.feature_sets.get("pooled")

    @property
    def sha256(self) -> np.ndarray:
        """Hex sha256 of each row, shape ``(n,)``, dtype str."""
        if self._sha is None:
            self._sha = self._retry(lambda: self._column("sha256")).astype(str)
        return self._sha

    @property
    def added(self) -> np.ndarray:
        """Unix time each row was extracted, float64 ``(n,)``."""
        return self._retry(lambda: self._column("added"))

    @property
    def labels(self) -> np.ndarray:
        """Label of each row, dtype object (``""`` = unlabelled): the latest verdict, else the label given at extract."""
        if self._labels is None:
            self._labels = self._retry(self._compute_labels)
        return self._labels.copy()

    def paths(self, row: int) -> list[str]:
        """Where row ``row`` was seen, as ``os.fsdecode`` strings (``os.fsencode`` gives the exact bytes)."""
        return [os.fsdecode(p) for p in self.path_bytes(row)]

    def path_bytes(self, row: int) -> list[bytes]:
        row = self._check_row(row)
        sha = self._sha_of(row)
        override = self._state()["paths"].get(sha)
        if override is not None:
            return list(override)
        return self._retry(lambda: self._base_paths(row))

    @property
    def failures(self) -> list[Failure]:
        return list(self._state()["failures"].values())

    def row_of(self, sha256: str) -> int | None:
        """Row holding the content ``sha256``, or None."""
        row = int(self.rows_of([sha256])[0])
        return None if row < 0 else row

    def rows_of(self, sha256s: Sequence[str]) -> np.ndarray:
        """Rows of many contents at once (int64, -1 where absent)."""
        queries = np.asarray(list(sha256s) if not isinstance(sha256s, np.ndarray) else sha256s, dtype="S64")
        return self._retry(lambda: self._lookup(queries))

    def label_counts(self) -> dict[str, int]:
        if not len(self):
            return {}
        values, counts = np.unique(self.labels.astype(str), return_counts=True)
        return {str(v): int(c) for v, c in zip(values, counts)}

    def has_features(self, name: str = "pooled") -> np.ndarray:
        """Whether each row holds feature set ``name``: bool ``(n,)``."""
        return self._retry(lambda: self._has(name))

    def features(self, rows: Sequence[int] | np.ndarray | None = None, feature_set: str = "pooled") -> np.ndarray:
        """Features of the given rows (all when None), float32 ``(len(rows), d)``, in the order asked."""
        dim = self._set_dim(feature_set)
        rows = np.arange(self._n, dtype=np.int64) if rows is None else np.asarray(rows, dtype=np.int64).reshape(-1)
        if len(rows) and (rows.min() < 0 or rows.max() >= self._n):
            raise IndexError(f"{self.path}: row {int(rows.max() if rows.max() >= self._n else rows.min())} "
                             f"is outside the store's {self._n} rows")
        out = np.empty((len(rows), dim), np.float32)
        if len(rows):
            self._retry(lambda: self._read_rows(feature_set, rows, out))
        return out

    def iter_features(self, block_rows: int = 65536, feature_set: str = "pooled") -> Iterator[np.ndarray]:
        """All rows' features in order, as float32 blocks of ``block_rows`` rows (block k starts at row k * block_rows)."""
        for start in range(0, self._n, block_rows):
            yield self.features(np.arange(start, min(self._n, start + block_rows)), feature_set)

    def load(self, labels: Iterable[str], feature_set: str = "pooled") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Rows carrying any of ``labels``: ``(X, y, sha256)``; reads only those rows' features."""
        current = self.labels.astype(str)
        rows = np.flatnonzero(np.isin(current, list(labels)))
        return self.features(rows, feature_set), current[rows], self.sha256[rows]

    def verdicts(self, sha256: str | None = None) -> list[Verdict]:
        """The verdict log (oldest first), of one content when ``sha256`` is given."""
        log = self._state()["verdicts"]
        return [v for v in log if sha256 is None or v.sha256 == sha256]

    def verdict_counts(self) -> dict[str, int]:
        """Rows per label of their latest verdict."""
        latest: dict[str, str] = {}
        for v in self._state()["verdicts"]:
            latest[v.sha256] = v.label
        counts: dict[str, int] = {}
        for label in latest.values():
            counts[label] = counts.get(label, 0) + 1
        return counts

    # ================================================================= writing
    def declare_set(self, name: str, fingerprint: dict) -> None:
        """Declare feature set ``name``; FeatureSpaceMismatch if it exists with another fingerprint."""
        self._require_writer()
        if not name or "/" in name:
            raise StoreError(f"{self.path}: {name!r} is not a valid feature set name")
        if self._check_fingerprint(name, fingerprint) and self._m.get("segments") is not None and self._exists():
            self._persist_sets()

    def add(self, sha256s: Sequence[str], features, paths: Sequence[Sequence[str | bytes]],
            label: str | None = None) -> None:
        """Add rows for contents not yet in the store, as one new segment (durable when this returns).

        ``features`` is float32 ``(n, d)`` (the ``pooled`` set) or ``{set name: (n, d_set)}``;
        ``paths[i]`` lists where row i was seen (str or bytes). Contents already stored are skipped.
        Rows with a non-finite value are refused (StoreError naming their files); nothing is written then.
        """
        self._require_writer()
        sets = dict(features) if isinstance(features, dict) else {"pooled": features}
        n = len(sha256s)
        if len(paths) != n:
            raise ValueError(f"{n} hashes and {len(paths)} path lists do not line up")
        for name in list(sets):
            X = np.asarray(sets[name], dtype=np.float32)
            if X.ndim != 2 or len(X) != n:
                raise ValueError(f"features {X.shape} of set {name!r} and {n} hashes do not line up")
            sets[name] = X
            fp = self.feature_sets.get(name)
            if fp is None:
                raise StoreError(f"{self.path}: open the store with a fingerprint (or declare_set({name!r}, ...)) "
                                 "before adding features")
            if X.shape[1] != int(fp["feature_dim"]):
                raise FeatureSpaceMismatch(f"{self.path}: rows of {X.shape[1]} features, set {name!r} holds "
                                           f"{fp['feature_dim']}")
        known = self.rows_of(list(sha256s)) if self._n else np.full(n, -1)
        keep, seen = [], set()
        for i, s in enumerate(sha256s):
            if known[i] < 0 and s not in seen:  # one row per content, first occurrence wins
                keep.append(i)
                seen.add(s)
        if not keep:
            return
        bad = [i for i in keep if not all(np.isfinite(X[i]).all() for X in sets.values())]
        if bad:
            names = ", ".join(display_path(paths[i][0]) if paths[i] else sha256s[i] for i in bad[:5])
            raise StoreError(f"{self.path}: refused {len(bad)} row(s) with non-finite features (NaN or infinity) "
                             f"from {names}{' ...' if len(bad) > 5 else ''}; nothing of this batch was recorded")
        now = time.time()
        shas = np.array([sha256s[i] for i in keep], dtype="S64")
        try:
            seg = self._write_segment(lambda tmp: seglib.write_segment(
                tmp, shas, {k: X[keep] for k, X in sets.items()}, [label or ""] * len(keep),
                [[path_bytes(p) for p in paths[i]] for i in keep], np.full(len(keep), now)),
                shas, sorted(sets), len(keep), est_bytes=sum(X.shape[1] * 4 for X in sets.values()) * len(keep))
            m = self._next_manifest()
            m["segments"].append(seg)
            m["rows"] += seg["rows"]
            m["layout"] += 1
            self._write_manifest(m, sync_dir=False)
        except (OSError, RuntimeError) as exc:
            raise StoreError(f"{self.path}: cannot write to the store's folder {self.parts} ({exc}); "
                             "nothing of this batch was recorded, run again once the problem is fixed") from exc
        self._session_segments += 1

    @property
    def incoming(self) -> Path:
        """Folder where other processes sharing this file system (e.g. Ray workers) write whole segments
        (:func:`stylesift.featurizer.segments.write_segment`) for :meth:`attach_segment`."""
        return self.parts / "incoming"

    def attach_segment(self, file: str | os.PathLike) -> int:
        """Add the rows of a segment another process wrote (its file is moved into the store).

        The file is checked as any row is: its feature sets and their widths, finite values, one row per
        content; contents the store already holds are dropped. Returns the number of rows added.
        """
        self._require_writer()
        file = Path(file)
        dims = self._set_dims()
        try:
            with h5py.File(file, "r") as f:
                if f.attrs.get("format") != seglib.SEGMENT_FORMAT:
                    raise StoreError(f"{file}: not a stylesift segment file")
                shas = f["sha256"][:]
                for name in f["sets"]:
                    if name not in dims or f[f"sets/{name}"].shape[1] != dims[name]:
                        raise FeatureSpaceMismatch(f"{file}: feature set {name!r} of {f[f'sets/{name}'].shape[1]} "
                                                   f"values is not one this store holds ({dims})")
                    for lo in range(0, len(shas), 8192):
                        if not np.isfinite(f[f"sets/{name}"][lo:lo + 8192]).all():
                            raise StoreError(f"{file}: non-finite features; segment refused")
                sets = sorted(f["sets"])
        except (OSError, KeyError, ValueError) as exc:
            raise StoreError(f"{file}: unreadable segment ({_h5_reason(exc)}); nothing was added") from None
        known = self.rows_of(shas.astype(str)) if self._n else np.full(len(shas), -1)
        _, first = np.unique(shas, return_index=True)
        keep = np.zeros(len(shas), bool)
        keep[first] = True
        keep &= known < 0
        if not keep.any():
            file.unlink(missing_ok=True)
            return 0
        try:
            if keep.all():
                seg = self._write_segment(lambda tmp: shutil.copyfile(file, tmp) if not _same_fs(file, tmp.parent)
                                          else os.replace(file, tmp), None, sets, int(keep.sum()),
                                          est_bytes=0)
            else:
                seg = self._write_segment(lambda tmp: seglib.merge_segments(tmp, [file], dims, keep=[keep]), None, sets,
                                          int(keep.sum()), est_bytes=int(keep.sum()) * (sum(dims.values()) * 4 + 200))
            m = self._next_manifest()
            m["segments"].append(seg)
            m["rows"] += seg["rows"]
            m["layout"] += 1
            self._write_manifest(m)
        except (OSError, RuntimeError) as exc:
            raise StoreError(f"{self.path}: cannot attach {file} ({exc}); nothing was added") from exc
        file.unlink(missing_ok=True)
        return seg["rows"]

    def add_features(self, name: str, sha256s: Sequence[str], features: np.ndarray) -> None:
        """Fill feature set ``name`` for rows that exist already (rows that hold it are skipped)."""
        self._require_writer()
        fp = self.feature_sets.get(name)
        if fp is None:
            raise StoreError(f"{self.path}: declare the feature set {name!r} before adding it")
        X = np.asarray(features, np.float32)
        if X.ndim != 2 or len(X) != len(sha256s) or X.shape[1] != int(fp["feature_dim"]):
            raise FeatureSpaceMismatch(f"{self.path}: {X.shape} features for {len(sha256s)} rows of set {name!r} "
                                       f"({fp['feature_dim']}-d)")
        rows = self.rows_of(list(sha256s))
        if (rows < 0).any():
            missing = [sha256s[i] for i in np.flatnonzero(rows < 0)[:3]]
            raise StoreError(f"{self.path}: no rows for {', '.join(missing)}: add them with `add` first")
        if not np.isfinite(X).all():
            raise StoreError(f"{self.path}: refused non-finite {name!r} features; nothing was recorded")
        has = self.has_features(name) if name in self._m.get("feature_sets", {}) else np.zeros(self._n, bool)
        keep = np.flatnonzero(~has[rows])
        _, first = np.unique(rows[keep], return_index=True)
        keep = keep[np.sort(first)]
        if not len(keep):
            return
        order = keep[np.argsort(rows[keep])]
        ids = np.array([sha256s[i] for i in order], "S64")
        try:
            patch_id = self._m["next_id"]
            name_ = f"patch-{patch_id:06d}.h5"
            tmp = self.parts / f".{name_}.{os.getpid()}.tmp"
            self._require_space(X.shape[1] * 4 * len(order))
            try:
                seglib.write_patch(tmp, rows[order], ids, name, X[order])
                _fsync(tmp)
                os.replace(tmp, self.parts / name_)
            finally:
                tmp.unlink(missing_ok=True)
            m = self._next_manifest()
            m["next_id"] = max(m["next_id"], patch_id + 1)
            m.setdefault("patches", []).append({"name": name_, "set": name, "rows": int(len(order))})
            self._write_manifest(m)
        except (OSError, RuntimeError) as exc:
            raise StoreError(f"{self.path}: cannot write to the store's folder {self.parts} ({exc}); "
                             "nothing of this batch was recorded, run again once the problem is fixed") from exc

    def update(self, sha256: str, *, path: str | bytes | None = None, label: str | None = None) -> bool:
        """Record a new path and/or label for an existing row (staged until :meth:`flush`). Returns whether anything changed."""
        self._require_writer()
        row = self.row_of(sha256)
        if row is None:
            raise StoreError(f"{self.path}: no row for content {sha256}")
        state = self._state()
        override = state["paths"].get(sha256)
        paths = list(override) if override is not None else self._retry(lambda: self._base_paths(row))
        new_paths = paths if path is None or path_bytes(path) in paths else [*paths, path_bytes(path)]
        old_label = state["labels"].get(sha256)
        if old_label is None:
            old_label = self._base_label(row)
        new_label = old_label if label is None else label
        if new_paths == paths and new_label == old_label:
            return False
        entry = self._staged.setdefault(sha256, {"sha256": sha256})
        if new_paths != paths:
            entry["paths"] = [_b64(p) for p in new_paths]
            state["paths"][sha256] = new_paths
        if new_label != old_label:
            entry["label"] = new_label
            state["labels"][sha256] = new_label
            self._labels = None
        return True

    def set_failures(self, failures: Iterable[Failure] = (), clear: Iterable[str | bytes] = ()) -> None:
        """Record failed files (replacing older records of the same path) and forget ``clear`` paths."""
        self._require_writer()
        current = self._state()["failures"]
        failures = list(failures)
        clear = [path_bytes(c) for c in clear if path_bytes(c) in current]
        if failures or clear:
            self._write_log({"failures": [[_b64(f.path), int(f.size), float(f.mtime), str(f.reason)] for f in failures],
                             "clear": [_b64(c) for c in clear]})

    def add_verdicts(self, verdicts: Sequence[Verdict]) -> None:
        """Append verdicts to the log (durable when this returns); each sets its row's label."""
        self._require_writer()
        verdicts = list(verdicts)
        if not verdicts:
            return
        rows = self.rows_of([v.sha256 for v in verdicts])
        if (rows < 0).any():
            unknown = verdicts[int(np.flatnonzero(rows < 0)[0])].sha256
            raise StoreError(f"{self.path}: a verdict for content {unknown}, which the store does not hold; "
                             "featurize the image first (`stylesift extract PATH --store ...`)")
        for v in verdicts:
            if not isinstance(v.label, str) or not v.label:
                raise StoreError(f"{self.path}: a verdict needs a label, got {v.label!r} for {v.sha256}")
        self._write_log({"verdicts": [[v.sha256, v.label, v.reviewer, float(v.time), v.note, v.source]
                                      for v in verdicts]})

    def flush(self) -> None:
        """Write staged path/label updates as one record (durable from here on)."""
        if self._staged:
            updates, self._staged = list(self._staged.values()), {}
            self._write_log({"updates": updates})

    def commit(self) -> None:
        """Flush, merge small trailing segments, fold many small records, refresh the top file."""
        self._require_writer()
        self.flush()
        self._sync_from_disk()
        try:
            if self.parts.is_dir():
                _fsync_dir(self.parts)  # the batches' manifest renames are durable from here on
            self._merge_tail()
            if len(self._log_records()) >= FOLD_RECORDS:
                self.fold()
            self._refresh_top()
        except (OSError, RuntimeError) as exc:
            raise StoreError(f"{self.path}: could not commit the store ({exc}); every row written so far is "
                             "kept, run again once the problem is fixed") from exc

    def maybe_commit(self) -> None:
        """Merge small segments of a long run now and then (keeps the number of files small)."""
        if self._session_segments >= 16:
            self._session_segments = 0
            try:
                self._merge_tail()
            except (OSError, RuntimeError) as exc:
                raise StoreError(f"{self.path}: could not merge segments ({exc}); every row written so far is "
                                 "kept, run again once the problem is fixed") from exc

    def close(self, commit: bool = True) -> None:
        try:
            if self.mode == "a" and commit and self._lock is not None:
                self.commit()
        finally:
            if self._lock is not None:
                self._lock.release()
                self._lock = None

    # ----------------------------------------------------------------- maintenance (store_cmds uses these)
    def merge(self, first: int, last: int) -> None:
        """Merge segments ``first..last`` (inclusive, manifest order) into one."""
        self._require_writer()
        segs = self._m["segments"]
        if last <= first:
            return
        merged = self._write_segment(lambda tmp: seglib.merge_segments(
            tmp, [self.parts / s["name"] for s in segs[first:last + 1]], self._set_dims()), None,
            sorted({n for s in segs[first:last + 1] for n in s["sets"]}),
            sum(s["rows"] for s in segs[first:last + 1]),
            est_bytes=sum(s["rows"] for s in segs[first:last + 1]) * (sum(self._set_dims().values()) * 4 + 200),
            point="merge-written")
        m = self._next_manifest()
        old = m["segments"][first:last + 1]
        m["segments"][first:last + 1] = [merged]
        m["layout"] += 1
        self._write_manifest(m)
        _crash_point("merge-manifest-renamed")
        for s in old:
            self._delete_segment(s["name"])
            _crash_point("merge-sources-deleted")

    def fold(self, forget: set[str] | None = None) -> None:
        """Fold the small records into one new metadata file (cost: the metadata, not the rows).

        ``forget``: contents whose labels, paths and verdicts are dropped (rows pruned away).
        """
        self._require_writer()
        self.flush()
        self._sync_from_disk()
        self._meta = None  # fold what is on disk (an interrupt may have cut a record's bookkeeping short)
        state = self._state()
        records = self._log_records()
        if not records and self._m.get("meta") and not forget:
            return
        if forget:
            state["labels"] = {k: v for k, v in state["labels"].items() if k not in forget}
            state["paths"] = {k: v for k, v in state["paths"].items() if k not in forget}
            state["verdicts"] = [v for v in state["verdicts"] if v.sha256 not in forget]
        last = max([self._m.get("log_seq", 0)] + [s for s, _ in records])
        body = {"format": "stylesift-store-meta", "log_seq": last,
                "labels": state["labels"], "paths": {k: [_b64(p) for p in v] for k, v in state["paths"].items()},
                "verdicts": [[v.sha256, v.label, v.reviewer, v.time, v.note, v.source] for v in state["verdicts"]],
                "failures": [[_b64(f.path), f.size, f.mtime, f.reason] for f in state["failures"].values()]}
        m = self._next_manifest()
        name = f"meta-{m['next_id']:06d}.json"
        m["next_id"] += 1
        _write_json_atomic(self.parts / name, body, self.parts)
        _crash_point("fold-meta-written")
        old_meta = m.get("meta")
        m["meta"], m["log_seq"] = name, last
        self._write_manifest(m)
        _crash_point("fold-manifest-renamed")
        for _, record in records:  # oldest first: a reader listing meanwhile sees a gap, and retries
            record.unlink(missing_ok=True)
            _crash_point("fold-records-deleted")
        if old_meta:
            (self.parts / old_meta).unlink(missing_ok=True)

    def compact(self, max_rows: int | None = None) -> None:
        """Merge neighbouring segments up to ``max_rows`` rows each (default: 4 × merge_rows) and fold records."""
        self._require_writer()
        limit = max_rows or 4 * self.merge_rows
        i = 0
        while i < len(self._m["segments"]):
            segs = self._m["segments"]
            j, total = i, segs[i]["rows"]
            while j + 1 < len(segs) and total + segs[j + 1]["rows"] <= limit:
                j += 1
                total += segs[j]["rows"]
            if j > i:
                self.merge(i, j)
            i += 1
        self.fold()
        self._refresh_top()

    def rewrite(self, keep: np.ndarray, reason: str) -> int:
        """Rewrite the store keeping only rows where ``keep`` is True (prune, repair); renumbers rows."""
        self._require_writer()
        keep = np.asarray(keep, bool)
        dropped = int((~keep).sum())
        if not dropped:
            return 0
        dims = self._set_dims()
        m = self._next_manifest()
        new_segments, start = [], 0
        for s in m["segments"]:
            mask = keep[start:start + s["rows"]]
            start += s["rows"]
            if mask.all():
                new_segments.append(s)
            elif mask.any():
                new_segments.append(self._write_segment(lambda tmp, s=s, mask=mask: seglib.merge_segments(
                    tmp, [self.parts / s["name"]], dims, keep=[mask]), None, s["sets"], int(mask.sum()),
                    est_bytes=int(mask.sum()) * (sum(dims.values()) * 4 + 200)))
        old_names = {s["name"] for s in m["segments"]} - {s["name"] for s in new_segments}
        # Patches refer to rows by number: rewrite them against the new numbering.
        renumber = np.cumsum(keep) - 1
        new_patches = []
        for p in m.get("patches", []):
            with h5py.File(self.parts / p["name"], "r") as f:
                rows, ids, X = f["row"][:], f["sha256"][:], f[f"sets/{p['set']}"][:]
            sel = keep[rows]
            if sel.any():
                name_ = f"patch-{m['next_id']:06d}.h5"
                m["next_id"] += 1
                tmp = self.parts / f".{name_}.{os.getpid()}.tmp"
                seglib.write_patch(tmp, renumber[rows[sel]], ids[sel], p["set"], X[sel])
                _fsync(tmp)
                os.replace(tmp, self.parts / name_)
                new_patches.append({"name": name_, "set": p["set"], "rows": int(sel.sum())})
            old_names.add(p["name"])
        m["next_id"] = max(m["next_id"], self._m["next_id"])
        m["segments"], m["patches"] = new_segments, new_patches
        m["rows"] = int(keep.sum())
        m["epoch"] = m.get("epoch", 0) + 1
        m["layout"] += 1
        self._write_manifest(m)
        for name in old_names:
            self._delete_segment(name)
        _LOG.info("%s: %s removed %d rows", self.path, reason, dropped)
        self._refresh_top()
        return dropped

    # ================================================================= internals: manifest
    def _reset_caches(self) -> None:
        self._sha = self._labels = None
        self._indexes: dict[str, np.ndarray] = {}
        self._paths_cache: dict[str, list[list[bytes]]] = {}
        self._labels_cache: dict[str, np.ndarray] = {}
        self._patch_rows: dict[str, np.ndarray] = {}
        self._meta: dict | None = None
        self._global = None
        self._lookups = 0

    def _exists(self) -> bool:
        return self.manifest_path.exists()

    def _read_manifest(self) -> dict:
        try:
            raw = self.manifest_path.read_bytes()
        except FileNotFoundError:
            return _empty_manifest()
        except OSError as exc:
            raise StoreError(f"{self.manifest_path}: cannot read the store's manifest ({exc.strerror or exc})") from None
        try:
            m = json.loads(raw)
            body = {k: v for k, v in m.items() if k != "checksum"}
            if m.get("checksum") != _checksum(body):
                raise ValueError("its checksum does not match its content")
            if m.get("format") != FORMAT:
                raise ValueError("not a stylesift store manifest")
        except (ValueError, AttributeError, TypeError) as exc:
            raise StoreError(f"{self.manifest_path}: damaged manifest of the store {self.path} ({exc}); "
                             f"restore the folder {self.parts} from a backup, or run "
                             f"`stylesift store check {self.path}` for details") from None
        if int(m.get("format_version", 0)) > FORMAT_VERSION:
            raise StoreError(f"{self.path}: store format {m['format_version']} is newer than this stylesift; upgrade it")
        return m

    def _adopt(self, m: dict) -> None:
        self._m = m
        self._n = int(m["rows"])
        self._starts = np.cumsum([0] + [s["rows"] for s in m["segments"]])

    def _sync_from_disk(self) -> None:
        """Adopt the manifest on disk (the truth under our lock): an interrupt may have landed between a
        manifest's rename and our noting it, and what is on disk must never be overwritten by an older view."""
        disk = self._read_manifest()
        if disk.get("generation") != self._m.get("generation"):
            next_id = max(disk["next_id"], self._m["next_id"])
            self._reset_caches()
            self._adopt(disk)
            self._m["next_id"] = next_id

    def _next_manifest(self) -> dict:
        if self._lock is not None:
            self._sync_from_disk()
        m = json.loads(json.dumps(self._m))
        if self._pending_fp:
            m["feature_sets"] = {**m.get("feature_sets", {}), **self._pending_fp}
        return m

    def _write_manifest(self, m: dict, sync_dir: bool = True) -> None:
        """Replace the manifest. ``sync_dir=False`` (a batch of rows): consistent after a power cut, but
        the batch may be lost with it (its images are featurized again); the commit syncs the folder."""
        m["generation"] = int(m.get("generation", 0)) + 1
        body = {k: v for k, v in m.items() if k != "checksum"}
        self.parts.mkdir(exist_ok=True)
        _write_json_atomic(self.manifest_path, {**body, "checksum": _checksum(body)}, self.parts,
                           point="manifest-tmp-written", sync_dir=sync_dir)
        _crash_point("manifest-renamed")
        self._pending_fp = {}
        self._adopt(m)
        self._sha = self._labels = None

    def _persist_sets(self) -> None:
        self._write_manifest(self._next_manifest())

    def _check_fingerprint(self, name: str, fingerprint: dict) -> bool:
        """Whether ``name`` is new (then remembered until the next manifest write)."""
        have = self.feature_sets.get(name)
        if have is None:
            self._pending_fp[name] = dict(fingerprint)
            return True
        require_same(have, fingerprint, str(self.path),
                     "Use a new --store for this featurizer, or the weights the store was built with.", FeatureSpaceMismatch)
        return False

    def _set_dim(self, name: str) -> int:
        fp = self.feature_sets.get(name)
        if fp is None:
            have = ", ".join(sorted(self.feature_sets)) or "none"
            raise StoreError(f"{self.path}: no feature set {name!r} in this store (it holds: {have}); add it with "
                             + _extract_hint(self.path, name))
        return int(fp["feature_dim"])

    def _set_dims(self) -> dict[str, int]:
        return {k: int(v["feature_dim"]) for k, v in self.feature_sets.items()}

    def _retry(self, fn):
        """Run a read; when a part vanished under it (a writer merged or folded), reread the manifest and retry."""
        for attempt in range(50):
            try:
                return fn()
            except (FileNotFoundError, _Stale) as exc:
                if self._lock is not None:
                    raise StoreError(f"{self.path}: a part of the store is missing ({getattr(exc, 'filename', '')}); "
                                     f"run `stylesift store check {self.path}`") from None
                time.sleep(min(0.01 * attempt, 0.2))
                self._refresh_reader()
        raise StoreError(f"{self.path}: the store keeps changing under the reader, or a part named by its "
                         f"manifest is missing; try again, and if no writer is running, run "
                         f"`stylesift store check {self.path}`")

    def _refresh_reader(self) -> None:
        m = self._read_manifest()
        if m.get("epoch", 0) != self._m.get("epoch", 0):
            raise StoreError(f"{self.path}: rows were removed (prune or repair) while the store was open; open it again")
        n = self._n
        self._reset_caches()
        self._adopt(m)
        self._n = min(n, int(m["rows"]))  # keep the snapshot: rows added meanwhile are not in this view

    # ================================================================= internals: reading
    def _check_row(self, row: int) -> int:
        row = int(row)
        if not 0 <= row < self._n:
            raise IndexError(f"{self.path}: row {row} is outside the store's {self._n} rows")
        return row

    def _segments_in(self, lo: int, hi: int):
        """(segment, start, first local row, last local row + 1) of the segments covering rows [lo, hi)."""
        segs = self._m["segments"]
        k = int(np.searchsorted(self._starts, lo, "right")) - 1
        while k < len(segs) and self._starts[k] < hi:
            start = int(self._starts[k])
            yield segs[k], start, max(lo, start) - start, min(hi, start + segs[k]["rows"]) - start
            k += 1

    @contextlib.contextmanager
    def _open(self, name: str) -> Iterator[h5py.File]:
        """A part of the store, open for reading; any sign of damage inside the block is one StoreError naming it."""
        path = self.parts / name
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
        return StoreError(f"{path}: damaged part of the store {self.path} ({_h5_reason(exc)}); run "
                          f"`stylesift store check {self.path} --repair` to move it aside (its images are "
                          "featurized again by the next extract)")

    def _read(self, f: h5py.File, dataset: str, sel, what: str):
        try:
            return f[dataset][sel]
        except (OSError, KeyError) as exc:
            raise StoreError(f"{f.filename}: {what} fail(s) their checksum or cannot be read ({_h5_reason(exc)}); "
                             f"run `stylesift store check {self.path} --repair` to move the damaged part aside "
                             "(its images are featurized again by the next extract)") from None

    def _column(self, name: str) -> np.ndarray:
        parts = []
        for seg, start, lo, hi in self._segments_in(0, self._n):
            with self._open(seg["name"]) as f:
                parts.append(self._read(f, name, slice(lo, hi), f"{name} of rows {start + lo}-{start + hi - 1}"))
        dtype = "S64" if name == "sha256" else np.float64
        return np.concatenate(parts) if parts else np.empty(0, dtype)

    def _index(self, seg: dict) -> np.ndarray:
        index = self._indexes.get(seg["name"])
        if index is None:
            file = self.parts / seg["name"]
            try:
                index = seglib.open_index(file, seg["rows"])
            except FileNotFoundError:
                raise
            except (OSError, KeyError, ValueError, TypeError):
                index = None
            if index is None:  # not mappable: build it in memory from the ids
                with self._open(seg["name"]) as f:
                    index = seglib.build_index(self._read(f, "sha256", slice(None), "the ids"))
            self._indexes[seg["name"]] = index
        return index

    def _lookup(self, queries: np.ndarray) -> np.ndarray:
        out = np.full(len(queries), -1, np.int64)
        self._lookups += len(queries)
        first = 0
        if self._global is None and self._lookups > 256 and self._n > 65536 and len(self._m["segments"]) > 4:
            self._global = self._build_global()  # many look-ups (an extract re-walking a folder): one sorted array
        if self._global is not None:
            prefix, keys, rows, first = self._global
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
        for seg, start, lo, hi in self._segments_in(first, self._n):
            todo = np.flatnonzero(out < 0)
            if not len(todo):
                break
            pos = seglib.lookup(self._index(seg), queries[todo])
            hit = (pos >= lo) & (pos < hi)
            out[todo[hit]] = start + pos[hit]
        return out

    def _build_global(self):
        keys, rows = [], []
        for seg, start, lo, hi in self._segments_in(0, self._n):
            index = self._index(seg)
            keep = np.asarray(index["pos"]) < hi
            keys.append(np.asarray(index["sha"])[keep])
            rows.append(start + np.asarray(index["pos"], np.int64)[keep])
        keys_all = np.concatenate(keys)
        prefix = seglib.hex_prefix(keys_all)
        order = np.argsort(prefix, kind="stable")
        return prefix[order], keys_all[order], np.concatenate(rows)[order], self._n

    def _sha_of(self, row: int) -> str:
        if self._sha is not None:
            return str(self._sha[row])
        for seg, start, lo, hi in self._segments_in(row, row + 1):
            with self._open(seg["name"]) as f:
                return self._read(f, "sha256", lo, f"the id of row {row}").decode()
        raise IndexError(row)

    def _base_paths(self, row: int) -> list[bytes]:
        for seg, start, lo, hi in self._segments_in(row, row + 1):
            cached = self._paths_cache.get(seg["name"])
            if cached is None:
                with self._open(seg["name"]) as f:
                    off = self._read(f, "paths_offsets", slice(None), "the path offsets")
                    data = self._read(f, "paths_data", slice(None), "the paths").tobytes()
                cached = self._paths_cache[seg["name"]] = seglib.decode_paths(off, data)
            return list(cached[lo])
        raise IndexError(row)

    def _segment_labels(self, seg: dict) -> np.ndarray:
        """The labels given at extract of every row of a segment (cached: extract asks per file)."""
        cached = self._labels_cache.get(seg["name"])
        if cached is None:
            with self._open(seg["name"]) as f:
                names = np.array([s.decode() for s in self._read(f, "label_names", slice(None), "the label names")],
                                 dtype=object)
                cached = self._labels_cache[seg["name"]] = names[self._read(f, "label_code", slice(None), "the labels")]
        return cached

    def _base_label(self, row: int) -> str:
        for seg, start, lo, hi in self._segments_in(row, row + 1):
            return str(self._retry(lambda seg=seg: self._segment_labels(seg))[lo])
        raise IndexError(row)

    def _compute_labels(self) -> np.ndarray:
        out = np.empty(self._n, dtype=object)
        for seg, start, lo, hi in self._segments_in(0, self._n):
            out[start + lo:start + hi] = self._segment_labels(seg)[lo:hi]
        state = self._state()
        latest = {v.sha256: v.label for v in state["verdicts"]}
        for source in (state["labels"], latest):
            if source:
                keys = list(source)
                rows = self._lookup(np.array(keys, "S64"))
                for key, row in zip(keys, rows):
                    if row >= 0:
                        out[row] = source[key]
        return out

    def _has(self, name: str) -> np.ndarray:
        out = np.zeros(self._n, bool)
        if name not in self.feature_sets:
            return out
        for seg, start, lo, hi in self._segments_in(0, self._n):
            if name in seg["sets"]:
                if seg.get("partial", {}).get(name):
                    with self._open(seg["name"]) as f:
                        out[start + lo:start + hi] = self._read(f, f"present/{name}", slice(lo, hi), "presence")
                else:
                    out[start + lo:start + hi] = True
        for p in self._m.get("patches", []):
            if p["set"] == name:
                rows = self._patch_index(p)
                out[rows[rows < self._n]] = True
        return out

    def _patch_index(self, p: dict) -> np.ndarray:
        rows = self._patch_rows.get(p["name"])
        if rows is None:
            with self._open(p["name"]) as f:
                rows = self._patch_rows[p["name"]] = self._read(f, "row", slice(None), "the patch rows")
        return rows

    def _read_rows(self, name: str, rows: np.ndarray, out: np.ndarray) -> None:
        order = np.argsort(rows, kind="stable")
        srt = rows[order]
        missing: list[np.ndarray] = []
        bounds = np.searchsorted(srt, self._starts)
        for k, seg in enumerate(self._m["segments"]):
            a, b = int(bounds[k]), int(bounds[k + 1])
            if a == b:
                continue
            start = int(self._starts[k])
            local, dest = srt[a:b] - start, order[a:b]
            if name not in seg["sets"]:
                missing.append(dest)
                continue
            with self._open(seg["name"]) as f:
                if seg.get("partial", {}).get(name):
                    present = self._read(f, f"present/{name}", slice(None), "presence")[local]
                    missing.append(dest[~present])
                    local, dest = local[present], dest[present]
                self._read_segment_rows(f, f"sets/{name}", local, dest, out, start)
        missing_rows = np.concatenate(missing) if missing else np.empty(0, np.int64)
        if len(missing_rows):
            found = np.zeros(len(missing_rows), bool)
            want = rows[missing_rows]
            for p in self._m.get("patches", []):
                if p["set"] != name:
                    continue
                prow = self._patch_index(p)
                at = np.minimum(np.searchsorted(prow, want), len(prow) - 1)
                hit = (prow[at] == want) & ~found
                if hit.any():
                    with self._open(p["name"]) as f:
                        self._read_segment_rows(f, f"sets/{name}", at[hit], missing_rows[hit], out, 0)
                    found |= hit
            if not found.all():
                raise StoreError(f"{self.path}: {int((~found).sum())} of the requested rows lack the feature set "
                                 f"{name!r}; add it with {_extract_hint(self.path, name)}")

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
                             f"cannot be read ({_h5_reason(exc)}); run `stylesift store check {self.path} --repair` "
                             "to move the damaged part aside (its images are featurized again by the next extract)") from None

    # ================================================================= internals: small records
    def _state(self) -> dict:
        if self._meta is None:
            self._meta = self._retry(self._load_state)
        return self._meta

    def _load_state(self) -> dict:
        state = {"labels": {}, "paths": {}, "verdicts": [], "failures": {}}
        meta = self._m.get("meta")
        if meta:
            body = _read_json(self.parts / meta, f"restore it from a backup, or delete it to lose the labels, "
                                                 f"verdicts and failures recorded before {time.ctime()}")
            state["labels"] = dict(body["labels"])
            state["paths"] = {k: [_unb64(p) for p in v] for k, v in body["paths"].items()}
            state["verdicts"] = [Verdict(*v) for v in body["verdicts"]]
            for p, size, mtime, reason in body["failures"]:
                raw = _unb64(p)
                state["failures"][raw] = Failure(os.fsdecode(raw), int(size), float(mtime), reason)
        records = self._log_records()
        seqs = [s for s, _ in records]
        base = int(self._m.get("log_seq", 0))
        if self._lock is None and seqs != list(range(base + 1, base + 1 + len(seqs))):
            raise _Stale  # a fold deleted records while we listed them
        for _, record in records:
            _apply(state, _read_json(record, "move it away to open the store without that record (a label, path, "
                                             "verdict or failure entry)"))
        return state

    def _log_records(self) -> list[tuple[int, Path]]:
        base = int(self._m.get("log_seq", 0))
        try:
            entries = list(self.log_dir.iterdir())
        except FileNotFoundError:
            return []
        out = []
        for entry in entries:
            stem, dot, ext = entry.name.partition(".")
            if ext == "json" and stem.isdigit() and int(stem) > base:
                out.append((int(stem), entry))
        return sorted(out)

    def _write_log(self, body: dict) -> None:
        records = self._log_records()
        seq = max([int(self._m.get("log_seq", 0))] + [s for s, _ in records]) + 1
        state = self._state()
        try:
            if not self._exists():  # a store whose first record is not a row (e.g. only failures so far)
                self._write_manifest(self._next_manifest())
            self.log_dir.mkdir(parents=True, exist_ok=True)
            _write_json_atomic(self.log_dir / f"{seq:012d}.json", body, self.log_dir, point="log-tmp-written")
        except OSError as exc:
            raise StoreError(f"{self.path}: cannot write to the store's folder {self.log_dir} ({exc}); "
                             "nothing of this batch was recorded") from exc
        _crash_point("log-renamed")
        _apply(state, body)
        self._labels = None

    # ================================================================= internals: writing
    def _require_writer(self) -> None:
        if self.mode != "a" or self._lock is None:
            raise StoreError(f"{self.path}: store is open read-only")

    def _require_space(self, nbytes: int) -> None:
        """Fail cleanly, before HDF5 writes anything, when the disk cannot hold what comes (HDF5 does not recover)."""
        need = int(nbytes * 1.1) + (1 << 15)
        try:
            free = shutil.disk_usage(self.parts if self.parts.exists() else self.path.parent).free
        except OSError:
            return
        if free < need:
            raise OSError(errno.ENOSPC, f"No space left on device: about {need >> 10} KiB needed, {free >> 10} KiB free")

    def _write_segment(self, writer, shas: np.ndarray | None, sets: list[str], rows: int, *, est_bytes: int,
                       point: str = "segment-tmp-written") -> dict:
        """Write a segment through ``writer(tmp)``, then its index; rename both into place; return its manifest entry."""
        self.parts.mkdir(exist_ok=True)
        seg_id = self._m["next_id"]
        self._m["next_id"] = seg_id + 1  # never reused, even if this write fails
        name = f"seg-{seg_id:06d}.h5"
        tmp = self.parts / f".{name}.{os.getpid()}.tmp"
        self._require_space(est_bytes + rows * 80)
        try:
            writer(tmp)
            with h5py.File(tmp, "r") as f:
                partial = {k[len("present/"):]: True for k in _names(f, "present")}
            _fsync(tmp)
            _crash_point(point)
            os.replace(tmp, self.parts / name)  # (the manifest's folder fsync makes this rename durable too)
        finally:
            tmp.unlink(missing_ok=True)
        if point == "segment-tmp-written":
            _crash_point("segment-renamed")
        entry = {"name": name, "rows": int(rows), "sets": list(sets)}
        if partial:
            entry["partial"] = partial
        return entry

    def _delete_segment(self, name: str) -> None:
        (self.parts / name).unlink(missing_ok=True)
        self._indexes.pop(name, None)
        self._paths_cache.pop(name, None)
        self._labels_cache.pop(name, None)

    def _merge_tail(self) -> None:
        """Merge trailing segments while the one before is no larger than all after it (binary counter)."""
        segs = self._m["segments"]
        if len(segs) < 2:
            return
        j, total = len(segs) - 1, segs[-1]["rows"]
        while j > 0 and segs[j - 1]["rows"] <= total and total + segs[j - 1]["rows"] <= self.merge_rows:
            j -= 1
            total += segs[j]["rows"]
        if j < len(segs) - 1:
            self.merge(j, len(segs) - 1)

    def _refresh_top(self) -> None:
        """Rewrite the plain-h5py top file when the segments changed since it was written."""
        if not self._exists():
            return
        layout = int(self._m["layout"])
        try:
            with h5py.File(self.path, "r") as f:
                if int(f.attrs.get("format_version", 0)) == FORMAT_VERSION and int(f.attrs.get("layout", -1)) == layout \
                        and int(f.attrs.get("rows", -1)) == self._n:
                    return
        except (OSError, ValueError):
            pass
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        self._require_space(len(self._m["segments"]) * 512)
        fp = self.fingerprint
        attrs = {"format": FORMAT, "format_version": FORMAT_VERSION, "rows": self._n, "layout": layout,
                 "parts": self.parts.name, "feature_sets": json.dumps(self.feature_sets, sort_keys=True)}
        if fp is not None:
            from stylesift.featurizer.space import fingerprint_id

            attrs["fingerprint"] = json.dumps(fp, sort_keys=True)
            attrs["fingerprint_id"] = fingerprint_id(fp)
        try:
            seglib.write_top(tmp, self.parts.name, self._m["segments"], self._n,
                             int(fp["feature_dim"]) if fp else None, attrs)
            _fsync(tmp)
            os.replace(tmp, self.path)
            _fsync_dir(self.path.parent)
        finally:
            tmp.unlink(missing_ok=True)
        _crash_point("top-renamed")

    # ================================================================= internals: lock, leftovers, upgrade
    def _acquire_lock(self, timeout: float) -> None:
        self._lock = acquire_writer_lock(self.path, timeout)

    def _remove_leftovers(self) -> None:
        """Delete what killed writers left behind; safe because we hold the lock."""
        # Matched by prefix and suffix, not glob: a store's name may contain glob characters.
        for tmp in self.path.parent.iterdir():
            if tmp.name.startswith(f".{self.path.name}.") and tmp.name.endswith(".tmp"):
                tmp.unlink(missing_ok=True)
        upgrading = self.path.with_name(f".{self.path.name}.parts.upgrading")
        if upgrading.is_dir():
            shutil.rmtree(upgrading, ignore_errors=True)
        if not self.parts.is_dir():
            return
        m = self._read_manifest()
        named = {"manifest.json", "log"} | {s["name"] for s in m["segments"]} | {p["name"] for p in m.get("patches", [])}
        if m.get("meta"):
            named.add(m["meta"])
        for entry in self.parts.iterdir():
            if entry.name.startswith(".") and entry.name.endswith(".tmp"):
                entry.unlink(missing_ok=True)
            elif entry.name not in named and (entry.name.startswith(("seg-", "patch-", "meta-"))):
                entry.unlink(missing_ok=True)  # written but never listed, or merged away and not yet deleted
        if self.log_dir.is_dir():
            base = int(m.get("log_seq", 0))
            for entry in self.log_dir.iterdir():
                stem = entry.name.partition(".")[0]
                if entry.name.startswith(".") and entry.name.endswith(".tmp"):
                    entry.unlink(missing_ok=True)
                elif stem.isdigit() and int(stem) <= base:
                    entry.unlink(missing_ok=True)  # folded by a commit killed before it deleted them

    def _upgrade_legacy(self) -> None:
        from stylesift.featurizer.store_upgrade import finish_upgrade, upgrade

        if self._exists():
            finish_upgrade(self)
        elif _is_legacy(self.path):
            upgrade(self)


class _Stale(Exception):
    """A fold removed small records while a reader listed them."""


class _V1Reader(FeatureStore):
    """A store of format_version 1, opened for reading as it is (writers upgrade it)."""

    def __init__(self, path, mode: str = "r", *, fingerprint: dict | None = None, **kwargs):
        from stylesift.featurizer.store_v1 import V1Store

        self.path = Path(path)
        self.mode = "r"
        self._lock = None
        self._v1 = V1Store(path, fingerprint=fingerprint)

    def __len__(self):
        return len(self._v1)

    @property
    def feature_sets(self):
        fp = self._v1.fingerprint
        return {"pooled": fp} if fp else {}

    @property
    def sha256(self):
        return self._v1.sha256

    @property
    def added(self):
        return np.asarray(self._v1._added, np.float64)

    @property
    def labels(self):
        return self._v1.labels

    def path_bytes(self, row):
        return [path_bytes(p) for p in self._v1.paths(row)]

    @property
    def failures(self):
        return self._v1.failures

    def rows_of(self, sha256s):
        return np.array([-1 if (r := self._v1.row_of(s)) is None else r for s in sha256s], np.int64)

    def has_features(self, name="pooled"):
        return np.full(len(self), name == "pooled" and bool(self.feature_sets))

    def features(self, rows=None, feature_set="pooled"):
        self._set_dim(feature_set)
        return self._v1.features(rows)

    def iter_features(self, block_rows=65536, feature_set="pooled"):
        for start in range(0, len(self), block_rows):
            yield self.features(np.arange(start, min(len(self), start + block_rows)), feature_set)

    def verdicts(self, sha256=None):
        return []

    def verdict_counts(self):
        return {}

    def close(self, commit: bool = True):
        pass


# ===================================================================== helpers
def finite_rows(features) -> np.ndarray:
    """Bool per row: every value of every set is finite (``add`` refuses the others)."""
    sets = features.values() if isinstance(features, dict) else [features]
    return np.logical_and.reduce([np.isfinite(np.asarray(X)).all(axis=1) for X in sets])


NONFINITE = "the network gave non-finite features (NaN or infinity) for this image; not stored"


def split_finite(sha256s: Sequence[str], features) -> tuple[list[str], object, list[str]]:
    """``(ok sha256s, their features, sha256s with non-finite rows)``: what to add, what to report as failed."""
    if not len(sha256s):
        return [], features, []
    good = finite_rows(features)
    if good.all():
        return list(sha256s), features, []
    pick = (lambda X: np.asarray(X)[good])
    kept = {k: pick(X) for k, X in features.items()} if isinstance(features, dict) else pick(features)
    return ([s for s, g in zip(sha256s, good) if g], kept, [s for s, g in zip(sha256s, good) if not g])


def _is_legacy(path: Path) -> bool:
    """A format_version 1 store (main file and/or journal) without a current manifest."""
    if (path.with_name(path.name + ".parts") / "manifest.json").exists():
        return False
    journal = path.with_name(path.name + ".journal")
    if journal.is_dir() and any(e.suffix == ".npz" for e in journal.iterdir()):
        return True
    if not path.is_file():
        return False
    try:
        with h5py.File(path, "r") as f:
            return f.attrs.get("format") == FORMAT and int(f.attrs.get("format_version", 0)) == 1
    except (OSError, ValueError):
        return False


def _check_top(path: Path, parts: Path) -> None:
    """Explain a top file that has no manifest beside it (never returns normally when it is a known case)."""
    try:
        with h5py.File(path, "r") as f:
            fmt, version = f.attrs.get("format"), int(f.attrs.get("format_version", 0))
    except OSError as exc:
        raise StoreError(f"{path}: not a readable HDF5 feature store ({_h5_reason(exc)})") from None
    except (ValueError, TypeError):
        raise StoreError(f"{path}: damaged store header; restore it from a backup") from None
    if fmt != FORMAT:
        raise StoreError(f"{path}: an HDF5 file, but not a stylesift feature store")
    if version >= 2:
        raise StoreError(f"{path}: the store's data folder {parts} is missing (this file only points into it); "
                         "restore the folder from a backup")


def _same_fs(a: Path, folder: Path) -> bool:
    try:
        return os.stat(a).st_dev == os.stat(folder).st_dev
    except OSError:
        return False


def _names(f: h5py.File, group: str) -> list[str]:
    return [f"{group}/{k}" for k in f[group]] if group in f else []


def _h5_reason(exc: BaseException) -> str:
    text = str(exc)
    if "filter returned failure" in text or "checksum" in text.lower():
        return "Fletcher32 checksum mismatch"
    return text.split("(", 1)[0].strip() or type(exc).__name__


def _apply(state: dict, body: dict) -> None:
    for upd in body.get("updates", []):
        if "label" in upd:
            state["labels"][upd["sha256"]] = upd["label"]
        if "paths" in upd:
            state["paths"][upd["sha256"]] = [_unb64(p) for p in upd["paths"]]
    for v in body.get("verdicts", []):
        state["verdicts"].append(Verdict(*v))
    for p, size, mtime, reason in body.get("failures", []):
        raw = _unb64(p)
        state["failures"][raw] = Failure(os.fsdecode(raw), int(size), float(mtime), reason)
    for p in body.get("clear", []):
        state["failures"].pop(_unb64(p), None)
