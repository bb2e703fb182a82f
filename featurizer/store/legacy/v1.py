"""The feature store as versions before 2 wrote it (format_version 1): read as it is, upgraded on the first write.

Only the reading half is kept, so that old stores (and their journals) open without loss; writers
upgrade them (:mod:`stylesift.featurizer.store.legacy.upgrade`), and the tests fabricate old stores
with ``tests/helpers/v1_writer.py``. See :mod:`stylesift.featurizer.store.facade` for the current
layout. The original description follows.

The HDF5 feature store: one row per distinct image content, written so that a crash loses nothing.

Layout of ``STORE.h5`` (readable with plain h5py; row ``i`` of every dataset is one image)::

    /features   float32 (n, 2048)  pooled ResNet50 features
    /sha256     S64     (n,)       hex sha256 of the file bytes (the row's identity)
    /label      str     (n,)       free-form label, "" for none; changeable without re-extraction
    /paths      str     (n,)       JSON list of the paths this content was last seen under
    /added      float64 (n,)       unix time the row was extracted
    /failures/{path, size, mtime, reason}   files that could not be featurized (size in bytes,
                                            mtime in unix seconds), retried only once they change
    attrs: format="stylesift-store", format_version, fingerprint (JSON), fingerprint_id, rows,
           journal_seq (last journal record merged)

Crash safety (HDF5 has no journal of its own, and a killed writer can leave its B-trees torn):
``STORE.h5`` is never modified in place. Each batch a writer produces is first written to
``STORE.h5.journal/<seq>.npz`` (temp file, fsync, rename: a record exists whole or not at all).
Readers overlay the journal on the main file. Commit ("compaction") copies the main file, appends
the journal into the copy, fsyncs it and renames it over ``STORE.h5``; only then are the records
deleted (newest first). A kill at any moment leaves a main file that opens, plus records that the
next open merges; the next writer removes the leftovers of a killed one (temp files, merged records).

Readers take no lock. They see the main file plus the records numbered ``journal_seq + 1, + 2, ...``
without a gap; a gap, or a record vanishing while it is read, means a commit happened meanwhile, and
the reader starts over. Rows are only ever appended, in journal order, so row ``i`` of an older view
is row ``i`` of every newer one. One writer at a time holds ``STORE.h5.lock`` (filelock).

``STYLESIFT_CRASH_AT=<point>[:<n>]`` makes a process SIGKILL itself the n-th time it reaches one of
the points :data:`CRASH_POINTS` names (see :func:`~stylesift.featurizer.store.files.crash_point`); the crash tests use it to kill at exact moments.
"""

from __future__ import annotations

import json
import os
import time
import zipfile
from pathlib import Path
from typing import Iterable, Sequence

import h5py
import numpy as np

from stylesift.featurizer.space import require_same
from stylesift.featurizer.store.files import FORMAT, Stale
from stylesift.featurizer.store.types import Failure, FeatureSpaceMismatch, StoreError

__all__ = ["V1Reader", "FORMAT_VERSION", "CRASH_POINTS"]

FORMAT_VERSION = 1
# Fault-injection points, in the order a batch and a commit pass them (the tests' v1 writer passes them).
CRASH_POINTS = ("journal-tmp-written", "journal-renamed", "commit-copied", "commit-rows-written",
                "commit-h5-closed", "commit-renamed", "commit-record-deleted")


class V1Reader:
    """One HDF5 file of image features plus its journal, as format_version 1 wrote them, open for reading.

    Parameters
    ----------
    path : path
        The ``.h5`` file.
    fingerprint : dict, optional
        Feature-space fingerprint the caller expects; must equal the store's (taken as the store's when it
        has none yet).
    """

    mode = "r"

    def __init__(self, path, *, fingerprint: dict | None = None):
        self.path = Path(path)
        self.journal_dir = self.path.with_name(self.path.name + ".journal")
        if not self.path.exists() and not self.journal_dir.is_dir():
            raise StoreError(f"{self.path}: no such feature store (create one with `stylesift extract ... --store {self.path}`)")
        self._load()
        if fingerprint is not None:
            self._check_fingerprint(fingerprint)

    # ----------------------------------------------------------------- reading
    def __len__(self) -> int:
        return len(self._sha)

    @property
    def fingerprint(self) -> dict | None:
        return self._fingerprint

    @property
    def sha256(self) -> np.ndarray:
        """Hex sha256 of each row, shape ``(n,)``, dtype str."""
        return np.asarray(self._sha, dtype=str)

    @property
    def labels(self) -> np.ndarray:
        """Label of each row, shape ``(n,)``, dtype object (``""`` = unlabelled)."""
        return np.asarray(self._label, dtype=object)

    def paths(self, row: int) -> list[str]:
        return list(self._paths[row])

    @property
    def failures(self) -> list[Failure]:
        return list(self._failures.values())

    def row_of(self, sha256: str) -> int | None:
        return self._index.get(sha256)

    def label_counts(self) -> dict[str, int]:
        values, counts = np.unique(self.labels.astype(str), return_counts=True) if len(self) else ([], [])
        return {str(v): int(c) for v, c in zip(values, counts)}

    def features(self, rows: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
        """Feature matrix of the given rows (all rows when None), float32 of shape ``(len(rows), d)``."""
        rows = np.arange(len(self)) if rows is None else np.asarray(rows, dtype=np.int64)
        dim = self._dim()
        out = np.empty((len(rows), dim), np.float32)
        if len(rows) == 0:
            return out
        main = rows < self._n_main
        if main.any():
            # h5py wants increasing, unique indices; a large selection is cheaper as one full read.
            uniq, inverse = np.unique(rows[main], return_inverse=True)
            with h5py.File(self.path, "r") as f:
                ds = f["features"]
                block = ds[: self._n_main][uniq] if len(uniq) > self._n_main // 4 else ds[uniq]
            out[main] = block[inverse]
        pending = np.flatnonzero(~main)
        try:
            for i in pending:
                record, index = self._pending_rows[rows[i] - self._n_main]
                out[i] = self._record_features(record)[index]
        except FileNotFoundError:
            # A writer committed since we loaded: the rows are in the new main file, at the same index.
            self._read_committed(rows[pending], out, pending)
        return out

    def load(self, labels: Iterable[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Rows carrying any of ``labels``: ``(X, y, sha256)`` with X float32 ``(n, d)``, y the label strings."""
        labels = list(labels)
        mask = np.isin(self.labels.astype(str), labels)
        rows = np.flatnonzero(mask)
        return self.features(rows), self.labels[rows].astype(str), self.sha256[rows]

    @property
    def added(self) -> np.ndarray:
        """Unix time each row was extracted, float64 ``(n,)``."""
        return np.asarray(self._added, np.float64)

    # ----------------------------------------------------------------- internals
    def _locked(self) -> bool:
        """Whether this object holds the writer lock (a reader never does; the tests' writer overrides it)."""
        return False

    def _after_load(self) -> None:
        """Hook run after each load (the tests' writer removes merged records there)."""

    def _dim(self) -> int:
        return int(self._fingerprint["feature_dim"]) if self._fingerprint else 0

    def _check_fingerprint(self, fingerprint: dict) -> None:
        if self._fingerprint is None:
            self._fingerprint = dict(fingerprint)
            return
        require_same(self._fingerprint, fingerprint, str(self.path),
                     "Use a new --store for this featurizer, or the weights the store was built with.", FeatureSpaceMismatch)

    def _load(self) -> None:
        for attempt in range(50):  # a writer committed while we read: start over
            try:
                self._load_once()
                return
            except (FileNotFoundError, Stale):
                time.sleep(min(0.01 * attempt, 0.2))
        raise StoreError(f"{self.path}: the store keeps changing under the reader (or its journal {self.journal_dir} "
                         "lacks a record); try again, and if no writer is running, any `stylesift extract` "
                         "into this store repairs it")

    def _load_once(self) -> None:
        self._fingerprint, self._sha, self._label, self._paths, self._added = None, [], [], [], []
        self._failures: dict[str, Failure] = {}
        self._pending_rows: list[tuple[Path, int]] = []
        self._staged_updates: dict[str, dict] = {}
        self._cache: tuple[Path, np.ndarray] | None = None
        self._journal_seq = 0
        main_id = _file_id(self.path)
        if main_id is not None:
            try:
                f = h5py.File(self.path, "r")
            except OSError as exc:
                raise StoreError(f"{self.path}: not a readable HDF5 feature store ({exc})") from None
            with f:
                if f.attrs.get("format") != FORMAT:
                    raise StoreError(f"{self.path}: an HDF5 file, but not a stylesift feature store")
                if int(f.attrs["format_version"]) > FORMAT_VERSION:
                    raise StoreError(f"{self.path}: store format {f.attrs['format_version']} is newer than this stylesift; upgrade it")
                self._fingerprint = json.loads(f.attrs["fingerprint"])
                self._journal_seq = int(f.attrs.get("journal_seq", 0))
                n = int(f.attrs["rows"])
                self._sha = [s.decode() for s in f["sha256"][:n]]
                self._label = [s.decode() if isinstance(s, bytes) else s for s in f["label"][:n]]
                self._paths = [json.loads(p) for p in f["paths"][:n]]
                self._added = [float(t) for t in f["added"][:n]]
                g = f["failures"]
                for p, s, m, r in zip(g["path"][...], g["size"][...], g["mtime"][...], g["reason"][...]):
                    p = p.decode()
                    self._failures[p] = Failure(p, int(s), float(m), r.decode())
        self._n_main = len(self._sha)
        self._index = {s: i for i, s in enumerate(self._sha)}
        records = self._journal_records()
        contiguous = [seq for seq, _ in records] == list(range(self._journal_seq + 1, self._journal_seq + 1 + len(records)))
        if not self._locked() and (not contiguous or _file_id(self.path) != main_id):
            raise Stale  # a commit replaced the main file while we read: our view would be out of date
        for seq, record in records:
            try:
                with np.load(record, allow_pickle=False) as data:
                    meta = json.loads(str(data["meta"]))
            except FileNotFoundError:
                raise
            except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
                raise StoreError(f"{record}: damaged journal record of {self.path} ({exc}); move it away to open "
                                 "the store without that batch, whose images the next extract featurizes again") from None
            self._apply(meta, record)
        self._after_load()

    def _read_committed(self, rows: np.ndarray, out: np.ndarray, where: np.ndarray) -> None:
        with h5py.File(self.path, "r") as f:
            n = int(f.attrs["rows"])
            if len(rows) and int(rows.max()) >= n:
                raise StoreError(f"{self.path}: rows vanished from the journal but are not in the store; reopen it")
            uniq, inverse = np.unique(rows, return_inverse=True)
            sha = [s.decode() for s in f["sha256"][uniq]]
            if sha != [self._sha[r] for r in uniq]:
                raise StoreError(f"{self.path}: the store changed in an unexpected way while open; reopen it")
            out[where] = f["features"][uniq][inverse]

    def _journal_records(self) -> list[tuple[int, Path]]:
        if not self.journal_dir.is_dir():
            return []
        records = []
        for entry in self.journal_dir.iterdir():
            if entry.suffix == ".npz" and entry.stem.isdigit() and int(entry.stem) > self._journal_seq:
                records.append((int(entry.stem), entry))
        return sorted(records)

    def _apply(self, meta: dict, record: Path | None) -> None:
        if self._fingerprint is None and meta.get("fingerprint"):
            self._fingerprint = meta["fingerprint"]
        for i, row in enumerate(meta.get("rows", [])):
            if row["sha256"] in self._index:
                continue  # already merged (a commit that died before deleting its records)
            self._index[row["sha256"]] = len(self._sha)
            self._sha.append(row["sha256"])
            self._label.append(row["label"])
            self._paths.append(row["paths"])
            self._added.append(float(row.get("added", 0.0)))
            self._pending_rows.append((record, i))
        for upd in meta.get("updates", []):
            row = self._index.get(upd["sha256"])
            if row is not None:
                self._paths[row], self._label[row] = upd["paths"], upd["label"]
        for fail in meta.get("failures", []):
            self._failures[fail["path"]] = Failure(**fail)
        for path in meta.get("clear", []):
            self._failures.pop(path, None)


    def _record_features(self, record: Path) -> np.ndarray:
        if self._cache is None or self._cache[0] != record:
            with np.load(record, allow_pickle=False) as data:
                self._cache = (record, data["features"])
        return self._cache[1]


def _file_id(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns
