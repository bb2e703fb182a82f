"""The feature store: one row per distinct image content; each write costs what it adds; a crash loses nothing.

Layout (format_version 2) of a store ``STORE.h5``::

    STORE.h5                  top file for plain h5py: /features (pooled set) and /sha256, /added as
                              virtual datasets over the segments; rewritten when segments change
    STORE.h5.parts/
        manifest.json         the truth: segments in row order, patches, feature sets and their
                              fingerprints, the folded metadata file, generation; replaced atomically
        seg-<id>.h5           immutable rows (see :mod:`stylesift.featurizer.store.segments`), Fletcher32,
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
(:mod:`stylesift.featurizer.store.legacy`) and are upgraded by the first writer, which keeps the old file
as ``STORE.h5.v1-backup`` (and its journal as ``STORE.h5.journal.v1-backup``).

The package: :class:`FeatureStore` (here) is the one entry; it works through parts that talk by
their public methods: :mod:`~stylesift.featurizer.store.manifest` (the manifest file and the view of
it), :mod:`~stylesift.featurizer.store.reader` (rows, ids, labels, features of one manifest, retried
when a writer changes parts), :mod:`~stylesift.featurizer.store.records` (the small JSON records),
:mod:`~stylesift.featurizer.store.writer` (the lock, segments, manifests, the top file) and
:mod:`~stylesift.featurizer.store.maintenance` (merge, fold, compact, rewrite).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from stylesift.featurizer.store import maintenance
from stylesift.featurizer.store import segments as seglib
from stylesift.featurizer.store.files import CRASH_POINTS, FORMAT, FORMAT_VERSION, Layout, acquire_writer_lock, b64, crash_point
from stylesift.featurizer.store.legacy import V1Adapter, is_legacy, upgrade_if_needed
from stylesift.featurizer.store.manifest import check_top, read_manifest
from stylesift.featurizer.store.reader import StoreReader
from stylesift.featurizer.store.records import apply, failures_body, verdicts_body
from stylesift.featurizer.store.types import Failure, StoreError, Verdict, path_bytes
from stylesift.featurizer.store.writer import (
    SegmentWriter,
    check_batch,
    check_patch,
    first_new,
    refuse_nonfinite,
    remove_leftovers,
    write_errors,
)

__all__ = ["FeatureStore", "FOLD_RECORDS", "MERGE_ROWS", "CRASH_POINTS", "FORMAT", "FORMAT_VERSION"]

FOLD_RECORDS = 32
MERGE_ROWS = 32768


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

    def __init__(self, path, mode: str = "r", *, fingerprint: dict | None = None, lock_timeout: float = -1,
                 compact_rows: int | None = None, merge_rows: int = MERGE_ROWS):
        if mode not in ("r", "a"):
            raise ValueError(f"mode must be 'r' or 'a', not {mode!r}")
        layout = self._layout = Layout(Path(path))
        self.path = layout.path  # the real path (see Layout): one store, one lock, whatever name it is given
        self.mode = mode
        self.parts, self.log_dir, self.manifest_path = layout.parts, layout.log_dir, layout.manifest
        self.merge_rows = int(merge_rows)
        self._writer: SegmentWriter | None = None
        self._staged: dict[str, dict] = {}
        self._session_segments = 0
        if self.path.is_dir():
            raise StoreError(f"{self.path}: is a folder, not a feature store; give the store's .h5 file "
                             "(e.g. --store features.h5)")
        if mode == "r" and is_legacy(self.path):
            self._reader = V1Adapter(self.path, fingerprint)  # read as it is; a writer upgrades it
            return
        if mode == "r" and not self.manifest_path.exists():
            if self.path.exists():
                check_top(self.path, self.parts)
            raise StoreError(f"{self.path}: no such feature store (create one with "
                             f"`stylesift extract ... --store {self.path}`)")
        if mode == "a" and self.path.is_file() and not self.manifest_path.exists() and not is_legacy(self.path):
            check_top(self.path, self.parts)  # e.g. the .h5 copied without its parts folder: never start over
        lock = None
        try:
            if mode == "a":
                lock = acquire_writer_lock(self.path, lock_timeout)
                upgrade_if_needed(layout)
                remove_leftovers(layout)
            self._reader = StoreReader(layout, read_manifest(layout), writer=lock is not None)
            if lock is not None:
                self._writer = SegmentWriter(layout, self._reader.view, lock, on_written=lambda m: self._adopt(m),
                                             on_synced=lambda m: self._reader.reload(m))
                lock = None
            if fingerprint is not None:
                self._reader.view.check_fingerprint("pooled", fingerprint)
        except BaseException:
            if lock is not None:
                lock.release()
            self.close(commit=False)
            raise

    # ================================================================= reading
    def __len__(self) -> int:
        return len(self._reader)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        # Commit even when interrupted: every written segment and record is good.
        self.close()

    @property
    def feature_sets(self) -> dict[str, dict]:
        """Name -> fingerprint of every feature set the store holds (``"pooled"`` is the 2048-d default)."""
        return self._reader.feature_sets

    @property
    def fingerprint(self) -> dict | None:
        """Fingerprint of the ``pooled`` set (None for a store that holds nothing yet)."""
        return self.feature_sets.get("pooled")

    @property
    def generation(self) -> int | None:
        """The manifest generation this object reads: it changes with every write (None for an old store)."""
        return self._reader.generation

    @property
    def format_version(self) -> int:
        """1 for an old store opened for reading as it is, else :data:`FORMAT_VERSION`."""
        return self._reader.format_version

    @property
    def sha256(self) -> np.ndarray:
        """Hex sha256 of each row, shape ``(n,)``, dtype str."""
        return self._reader.sha256

    @property
    def added(self) -> np.ndarray:
        """Unix time each row was extracted, float64 ``(n,)``."""
        return self._reader.added

    @property
    def labels(self) -> np.ndarray:
        """Label of each row, dtype object (``""`` = unlabelled): the latest verdict, else the label given at extract."""
        return self._reader.labels.copy()

    def paths(self, row: int) -> list[str]:
        """Where row ``row`` was seen, as ``os.fsdecode`` strings (``os.fsencode`` gives the exact bytes)."""
        return [os.fsdecode(p) for p in self.path_bytes(row)]

    def path_bytes(self, row: int) -> list[bytes]:
        return self._reader.path_bytes(row)

    def row_details(self, rows: Sequence[int]) -> list[tuple[str, str]]:
        """``(sha256, label)`` of a few rows, reading only those (``sha256`` and ``labels`` build every row's:
        seconds at a million rows). The label is the one ``labels`` gives: the latest verdict, else the label set."""
        reader = self._reader
        if not hasattr(reader, "snapshot"):  # a format-1 store read as it is: its columns are in memory anyway
            sha, labels = self.sha256, self.labels
            return [(str(sha[r]), str(labels[r])) for r in rows]
        state = reader.state()
        votes = {v.sha256: v.label for v in state["verdicts"]}
        out = []
        for r in rows:
            sha = reader.retry(lambda r=r: reader.snapshot.sha_of(reader.snapshot.check_row(r)))
            label = votes.get(sha, state["labels"].get(sha))
            out.append((sha, reader.base_label(int(r)) if label is None else label))
        return out

    @property
    def failures(self) -> list[Failure]:
        return self._reader.failures

    def row_of(self, sha256: str) -> int | None:
        """Row holding the content ``sha256``, or None."""
        row = int(self.rows_of([sha256])[0])
        return None if row < 0 else row

    def rows_of(self, sha256s: Sequence[str]) -> np.ndarray:
        """Rows of many contents at once (int64, -1 where absent)."""
        return self._reader.rows_of(sha256s)

    def label_counts(self) -> dict[str, int]:
        if not len(self):
            return {}
        values, counts = np.unique(self.labels.astype(str), return_counts=True)
        return {str(v): int(c) for v, c in zip(values, counts)}

    def has_features(self, name: str = "pooled") -> np.ndarray:
        """Whether each row holds feature set ``name``: bool ``(n,)``."""
        return self._reader.has_features(name)

    def features(self, rows: Sequence[int] | np.ndarray | None = None, feature_set: str = "pooled") -> np.ndarray:
        """Features of the given rows (all when None), float32 ``(len(rows), d)``, in the order asked."""
        n = len(self)
        rows = np.arange(n, dtype=np.int64) if rows is None else np.asarray(rows, dtype=np.int64).reshape(-1)
        if len(rows) and (rows.min() < 0 or rows.max() >= n):
            raise IndexError(f"{self.path}: row {int(rows.max() if rows.max() >= n else rows.min())} "
                             f"is outside the store's {n} rows")
        return self._reader.features(rows, feature_set)

    def iter_features(self, block_rows: int = 65536, feature_set: str = "pooled") -> Iterator[np.ndarray]:
        """All rows' features in order, as float32 blocks of ``block_rows`` rows (block k starts at row k * block_rows)."""
        for start in range(0, len(self), block_rows):
            yield self.features(np.arange(start, min(len(self), start + block_rows)), feature_set)

    def load(self, labels: Iterable[str], feature_set: str = "pooled") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Rows carrying any of ``labels``: ``(X, y, sha256)``; reads only those rows' features."""
        current = self.labels.astype(str)
        rows = np.flatnonzero(np.isin(current, list(labels)))
        return self.features(rows, feature_set), current[rows], self.sha256[rows]

    def verdicts(self, sha256: str | None = None) -> list[Verdict]:
        """The verdict log (oldest first), of one content when ``sha256`` is given."""
        return [v for v in self._reader.verdicts() if sha256 is None or v.sha256 == sha256]

    def verdict_counts(self) -> dict[str, int]:
        """Rows per label of their latest verdict."""
        latest = {v.sha256: v.label for v in self._reader.verdicts()}
        counts: dict[str, int] = {}
        for label in latest.values():
            counts[label] = counts.get(label, 0) + 1
        return counts

    # ================================================================= writing
    def declare_set(self, name: str, fingerprint: dict) -> None:
        """Declare feature set ``name``; FeatureSpaceMismatch if it exists with another fingerprint."""
        writer = self._require_writer()
        if not name or "/" in name:
            raise StoreError(f"{self.path}: {name!r} is not a valid feature set name")
        if self._reader.view.check_fingerprint(name, fingerprint) and self.manifest_path.exists():
            writer.write_manifest(writer.next_manifest())

    def add(self, sha256s: Sequence[str], features, paths: Sequence[Sequence[str | bytes]],
            label: str | None = None) -> None:
        """Add rows for contents not yet in the store, as one new segment (durable when this returns).

        ``features`` is float32 ``(n, d)`` (the ``pooled`` set) or ``{set name: (n, d_set)}``;
        ``paths[i]`` lists where row i was seen (str or bytes). Contents already stored are skipped.
        Rows with a non-finite value are refused (StoreError naming their files); nothing is written then.
        """
        writer = self._require_writer()
        sets = check_batch(self.path, sha256s, features, paths, self.feature_sets)
        keep = first_new(sha256s, self.rows_of(list(sha256s)) if len(self) else np.full(len(sha256s), -1))
        if not keep:
            return
        refuse_nonfinite(self.path, keep, sets, sha256s, paths)
        shas = np.array([sha256s[i] for i in keep], dtype="S64")
        with write_errors(self.path, "nothing of this batch was recorded, run again once the problem is fixed"):
            seg = writer.write_segment(lambda tmp: seglib.write_segment(
                tmp, shas, {k: X[keep] for k, X in sets.items()}, [label or ""] * len(keep),
                [[path_bytes(p) for p in paths[i]] for i in keep], np.full(len(keep), time.time())),
                sorted(sets), len(keep), est_bytes=sum(X.shape[1] * 4 for X in sets.values()) * len(keep))
            writer.append_segment(seg, sync_dir=False)
        self._session_segments += 1

    @property
    def incoming(self) -> Path:
        """Folder where other processes sharing this file system (e.g. Ray workers) write whole segments
        (:func:`stylesift.featurizer.store.segments.write_segment`) for :meth:`attach_segment`."""
        return self._layout.incoming

    def attach_segment(self, file: str | os.PathLike) -> int:
        """Add the rows of a segment another process wrote (its file is moved into the store).

        The file is checked as any row is: its feature sets and their widths, finite values, one row per
        content; contents the store already holds are dropped. Returns the number of rows added.
        """
        writer = self._require_writer()
        return writer.attach(Path(file), lambda shas: self.rows_of(shas) if len(self) else np.full(len(shas), -1))

    def add_features(self, name: str, sha256s: Sequence[str], features: np.ndarray) -> None:
        """Fill feature set ``name`` for rows that exist already (rows that hold it are skipped)."""
        writer = self._require_writer()
        X, rows = check_patch(self.path, name, self.feature_sets.get(name), sha256s, features, self.rows_of(list(sha256s)))
        stored = self._reader.view.current.get("feature_sets", {})
        has = self.has_features(name) if name in stored else np.zeros(len(self), bool)
        writer.add_patch(name, sha256s, X, rows, has)

    def update(self, sha256: str, *, path: str | bytes | None = None, label: str | None = None) -> bool:
        """Record a new path and/or label for an existing row (staged until :meth:`flush`). Returns whether anything changed."""
        self._require_writer()
        row = self.row_of(sha256)
        if row is None:
            raise StoreError(f"{self.path}: no row for content {sha256}")
        reader = self._reader
        state = reader.state()
        override = state["paths"].get(sha256)
        paths = list(override) if override is not None else reader.base_paths(row)
        new_paths = paths if path is None or path_bytes(path) in paths else [*paths, path_bytes(path)]
        old_label = state["labels"].get(sha256)
        old_label = reader.base_label(row) if old_label is None else old_label
        new_label = old_label if label is None else label
        if new_paths == paths and new_label == old_label:
            return False
        entry = self._staged.setdefault(sha256, {"sha256": sha256})
        if new_paths != paths:
            entry["paths"] = [b64(p) for p in new_paths]
            state["paths"][sha256] = new_paths
        if new_label != old_label:
            entry["label"] = new_label
            state["labels"][sha256] = new_label
            reader.records_changed()
        return True

    def set_failures(self, failures: Iterable[Failure] = (), clear: Iterable[str | bytes] = ()) -> None:
        """Record failed files (replacing older records of the same path) and forget ``clear`` paths."""
        self._require_writer()
        current = self._reader.state()["failures"]
        failures = list(failures)
        clear = [path_bytes(c) for c in clear if path_bytes(c) in current]
        if failures or clear:
            self._write_log(failures_body(failures, clear))

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
        self._write_log(verdicts_body(verdicts))

    def flush(self) -> None:
        """Write staged path/label updates as one record (durable from here on)."""
        if self._staged:
            updates, self._staged = list(self._staged.values()), {}
            self._write_log({"updates": updates})

    def commit(self) -> None:
        """Flush, merge small trailing segments, fold many small records, refresh the top file."""
        writer = self._require_writer()
        self.flush()
        writer.sync_from_disk()
        with write_errors(self.path, "every row written so far is kept, run again once the problem is fixed",
                          "could not commit the store"):
            writer.sync_folder()  # the batches' manifest renames are durable from here on
            maintenance.merge_tail(writer, self._reader.snapshot, self.merge_rows)
            if len(self._reader.log.records(int(self._reader.view.current.get("log_seq", 0)))) >= FOLD_RECORDS:
                self.fold()
            writer.refresh_top()

    def maybe_commit(self) -> None:
        """Merge small segments of a long run now and then (keeps the number of files small)."""
        if self._session_segments >= 16:
            self._session_segments = 0
            with write_errors(self.path, "every row written so far is kept, run again once the problem is fixed",
                              "could not merge segments"):
                maintenance.merge_tail(self._require_writer(), self._reader.snapshot, self.merge_rows)

    def close(self, commit: bool = True) -> None:
        try:
            if self.mode == "a" and commit and self._writer is not None:
                self.commit()
        finally:
            if self._writer is not None:
                self._writer.release()
                self._writer = None

    # ----------------------------------------------------------------- maintenance (store check/compact/prune)
    def merge(self, first: int, last: int) -> None:
        """Merge segments ``first..last`` (inclusive, manifest order) into one."""
        maintenance.merge(self._require_writer(), self._reader.snapshot, first, last)

    def fold(self, forget: set[str] | None = None) -> None:
        """Fold the small records into one new metadata file; ``forget``: contents whose labels, paths and
        verdicts are dropped (rows pruned away)."""
        writer = self._require_writer()
        self.flush()
        writer.sync_from_disk()
        self._reader.forget_state()  # fold what is on disk (an interrupt may have cut a record's bookkeeping short)
        maintenance.fold(writer, self._reader.log, self._reader.state(), forget)

    def compact(self, max_rows: int | None = None) -> None:
        """Merge neighbouring segments up to ``max_rows`` rows each (default: 4 × merge_rows) and fold records."""
        writer = self._require_writer()
        with write_errors(self.path, "the store is as it was: free some space and run `stylesift store compact` again"):
            maintenance.compact(writer, self._reader.snapshot, max_rows or 4 * self.merge_rows)
            self.fold()
            writer.refresh_top()

    def rewrite(self, keep: np.ndarray, reason: str) -> int:
        """Rewrite the store keeping only rows where ``keep`` is True (prune, repair); renumbers rows."""
        return maintenance.rewrite(self._require_writer(), self._reader.snapshot, keep, reason)

    def repair(self, keep: np.ndarray | None = None, records: bool = False) -> None:
        """After ``store check --repair`` moved damaged parts aside: forget the missing meta file and patches,
        fold the records that remain (``records``: one was moved aside), drop the rows ``keep`` excludes,
        rewrite the top file."""
        writer = self._require_writer()
        maintenance.drop_missing_parts(writer)
        if records:
            self._reader.forget_state()
            self.fold()
        if keep is not None and not keep.all():
            self.rewrite(keep, "repair")
        writer.refresh_top()

    # ================================================================= internals
    def _adopt(self, m: dict) -> None:
        """Note a manifest this store object wrote (the one place it does: an interrupt before it leaves
        the object's view older than the disk, which the next write then adopts first)."""
        self._reader.adopt(m)

    def _require_writer(self) -> SegmentWriter:
        if self.mode != "a" or self._writer is None:
            raise StoreError(f"{self.path}: store is open read-only")
        return self._writer

    def _write_log(self, body: dict) -> None:
        writer, reader = self._require_writer(), self._reader
        state = reader.state()
        try:
            if not self.manifest_path.exists():  # a store whose first record is not a row (e.g. only failures so far)
                writer.write_manifest(writer.next_manifest())
            reader.log.append(body, int(reader.view.current.get("log_seq", 0)))
        except OSError as exc:
            raise StoreError(f"{self.path}: cannot write to the store's folder {self.log_dir} ({exc}); "
                             "nothing of this batch was recorded") from exc
        crash_point("log-renamed")
        apply(state, body)
        reader.records_changed()
