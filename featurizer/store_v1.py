"""The feature store as versions before 2 wrote it (format_version 1): read, and upgraded on the first write.

Kept verbatim apart from its name so old stores (and their journals) open without loss; see
:mod:`stylesift.featurizer.store` for the current layout. The original description follows.

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
the named points below (see :func:`_crash_point`); the crash tests use it to kill at exact moments.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import shutil
import time
import zipfile
from pathlib import Path
from typing import Iterable, Sequence

import h5py
import numpy as np

from stylesift.featurizer.space import require_same
from stylesift.featurizer.store_files import acquire_writer_lock
from stylesift.featurizer.store_files import crash_point as _crash_point
from stylesift.featurizer.store_files import fsync as _fsync
from stylesift.featurizer.store_files import fsync_dir as _fsync_dir
from stylesift.featurizer.store_types import Failure, FeatureSpaceMismatch, StoreError

FORMAT = "stylesift-store"
FORMAT_VERSION = 1
_STR = h5py.string_dtype("utf-8")
_LOG = logging.getLogger("stylesift.store")
# Fault-injection points, in the order a batch and a commit pass them.
CRASH_POINTS = ("journal-tmp-written", "journal-renamed", "commit-copied", "commit-rows-written",
                "commit-h5-closed", "commit-renamed", "commit-record-deleted")




class V1Store:
    """One HDF5 file of image features, opened for reading (``"r"``) or appending (``"a"``).

    Parameters
    ----------
    path : path
        The ``.h5`` file. In ``"a"`` mode it is created on first commit.
    mode : {"r", "a"}
        ``"a"`` takes the writer lock, waiting up to ``lock_timeout`` seconds (-1: forever).
    fingerprint : dict, optional
        Feature-space fingerprint of the featurizer that will add rows; must equal the store's.
    """

    def __init__(self, path, mode: str = "r", *, fingerprint: dict | None = None, lock_timeout: float = -1,
                 compact_rows: int = 4096):
        if mode not in ("r", "a"):
            raise ValueError(f"mode must be 'r' or 'a', not {mode!r}")
        self.path = Path(path)
        self.mode = mode
        self.journal_dir = self.path.with_name(self.path.name + ".journal")
        self.compact_rows = compact_rows
        self._lock = None
        if mode == "r" and not self.path.exists() and not self.journal_dir.is_dir():
            raise StoreError(f"{self.path}: no such feature store (create one with `stylesift extract ... --store {self.path}`)")
        if mode == "a":
            self._acquire_lock(lock_timeout)
        try:
            self._load()
            if fingerprint is not None:
                self._check_fingerprint(fingerprint)
        except BaseException:
            self.close()
            raise

    # ----------------------------------------------------------------- reading
    def __len__(self) -> int:
        return len(self._sha)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        # Commit even when interrupted: every journaled batch is good and should not wait for a rerun.
        self.close()

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

    # ----------------------------------------------------------------- writing
    def add(self, sha256s: Sequence[str], features: np.ndarray, paths: Sequence[Sequence[str]],
            label: str | None = None) -> None:
        """Add new rows (contents not yet in the store) as one journal record.

        ``features`` is float32 of shape ``(len(sha256s), d)``; ``paths[i]`` lists where row i was seen.
        """
        self._require_writer()
        features = np.asarray(features, dtype=np.float32)
        if features.ndim != 2 or len(features) != len(sha256s) or len(paths) != len(sha256s):
            raise ValueError(f"features {features.shape}, {len(sha256s)} hashes and {len(paths)} path lists do not line up")
        if self._fingerprint is None:
            raise StoreError(f"{self.path}: open the store with a fingerprint before adding features")
        if features.shape[1] != self._fingerprint["feature_dim"]:
            raise FeatureSpaceMismatch(f"{self.path}: rows of {features.shape[1]} features, store holds {self._fingerprint['feature_dim']}")
        now = time.time()
        keep, seen = [], set()
        for i, s in enumerate(sha256s):
            if s not in self._index and s not in seen:  # one row per content, first occurrence wins
                keep.append(i)
                seen.add(s)
        rows = [{"sha256": sha256s[i], "paths": list(paths[i]), "label": label or "", "added": now} for i in keep]
        if rows:
            self._write_record({"rows": rows}, features[keep])

    def update(self, sha256: str, *, path: str | None = None, label: str | None = None) -> bool:
        """Record a new path and/or label for an existing row. Returns whether anything changed."""
        self._require_writer()
        row = self._index[sha256]
        paths, old_label = self._paths[row], self._label[row]
        new_paths = paths if path is None or path in paths else [*paths, path]
        new_label = old_label if label is None else label
        if new_paths == paths and new_label == old_label:
            return False
        self._staged_updates[sha256] = {"sha256": sha256, "paths": new_paths, "label": new_label}
        self._paths[row], self._label[row] = new_paths, new_label
        return True

    def set_failures(self, failures: Iterable[Failure] = (), clear: Iterable[str] = ()) -> None:
        """Record failed files (replacing older records of the same path) and forget ``clear`` paths."""
        self._require_writer()
        failures, clear = list(failures), [c for c in clear if c in self._failures]
        if failures or clear:
            self._write_record({"failures": [f.__dict__ for f in failures], "clear": clear})

    def flush(self) -> None:
        """Write staged path/label updates as a journal record (durable from here on)."""
        if self._staged_updates:
            updates, self._staged_updates = list(self._staged_updates.values()), {}
            self._write_record({"updates": updates})

    def commit(self) -> None:
        """Merge the journal into the main file (copy, append, fsync, atomic rename)."""
        self._require_writer()
        self.flush()
        # Rebuild the overlay from disk: the journal, not memory, is what gets merged (an interrupt
        # between a record's rename and its bookkeeping must not lose that record's rows).
        self._load()
        records = self._journal_records()
        if not records and self.path.exists():
            return
        if self._fingerprint is None:
            return  # nothing was ever added: do not create an empty file
        tmp = self._commit_tmp()
        try:
            if self.path.exists():
                shutil.copyfile(self.path, tmp)
            else:
                h5py.File(tmp, "w").close()
            self._reserve(tmp)
            _crash_point("commit-copied")
            with h5py.File(tmp, "a") as f:
                self._write_main(f, records)
            _crash_point("commit-h5-closed")
            _fsync(tmp)
            os.replace(tmp, self.path)
            _fsync_dir(self.path.parent)
            _crash_point("commit-renamed")
        except (OSError, RuntimeError) as exc:  # h5py reports some write failures as RuntimeError
            tmp.unlink(missing_ok=True)
            raise StoreError(f"{self.path}: could not commit the store ({exc}); the journal in "
                             f"{self.journal_dir} keeps every row, run again once the problem is fixed") from exc
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        # Newest first, so a reader that lists the folder sees a prefix of it until it is empty.
        for seq, record in sorted(records, reverse=True):
            record.unlink(missing_ok=True)
            _crash_point("commit-record-deleted")
        self._load()

    def _reserve(self, tmp: Path) -> None:
        """Allocate room for what the commit appends, so a full disk fails here, cleanly, not inside HDF5.

        (HDF5 does not recover from a failed write: it can leave its file object in a state that
        crashes the process later.) HDF5 truncates the file to its real end when it closes it.
        """
        strings = sum(len(label) + len(json.dumps(paths)) + 48 for label, paths in zip(self._label, self._paths))
        strings += sum(len(f.path) + len(f.reason) + 64 for f in self._failures.values())
        extra = int(1.5 * (len(self._pending_rows) * (self._dim() * 4 + 128) + strings)) + 2**20
        with open(tmp, "ab") as fh:
            size = fh.seek(0, os.SEEK_END)
            try:
                os.posix_fallocate(fh.fileno(), size, extra)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    return  # a file system without fallocate: go ahead unreserved
                raise OSError(errno.ENOSPC, f"No space left on device: the commit needs about {extra >> 10} KiB, "
                              f"{shutil.disk_usage(tmp.parent).free >> 10} KiB are free") from None

    def maybe_commit(self) -> None:
        """Commit when the journal has grown large relative to the main file (keeps total copying linear)."""
        if len(self._pending_rows) >= max(self.compact_rows, self._n_main // 4):
            self.commit()

    def close(self, commit: bool = True) -> None:
        try:
            if self.mode == "a" and commit and self._lock is not None:
                self.commit()
        finally:
            if self._lock is not None:
                self._lock.release()
                self._lock = None

    # ----------------------------------------------------------------- internals
    def _acquire_lock(self, timeout: float) -> None:
        self._lock = acquire_writer_lock(self.path, timeout)
        self._remove_leftovers()

    def _commit_tmp(self) -> Path:
        return self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")

    def _remove_leftovers(self) -> None:
        """Delete what killed writers left behind; safe because we hold the lock."""
        # Matched by prefix and suffix, not glob: a store's name may contain glob characters.
        for tmp in self.path.parent.iterdir():
            if tmp.name.startswith(f".{self.path.name}.") and tmp.name.endswith(".tmp"):
                tmp.unlink(missing_ok=True)
        if self.journal_dir.is_dir():
            for tmp in self.journal_dir.iterdir():
                if tmp.name.startswith(".") and tmp.name.endswith(".tmp"):
                    tmp.unlink(missing_ok=True)

    def _require_writer(self) -> None:
        if self.mode != "a" or self._lock is None:
            raise StoreError(f"{self.path}: store is open read-only")

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
            except (FileNotFoundError, _Stale):
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
        if self._lock is None and (not contiguous or _file_id(self.path) != main_id):
            raise _Stale  # a commit replaced the main file while we read: our view would be out of date
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
        if self.mode == "a" and self._lock is not None:
            self._remove_merged_records()

    def _remove_merged_records(self) -> None:
        """Records a killed commit had merged but not yet deleted (their seq is <= journal_seq)."""
        if self.journal_dir.is_dir():
            for entry in self.journal_dir.glob("*.npz"):
                if entry.stem.isdigit() and int(entry.stem) <= self._journal_seq:
                    entry.unlink(missing_ok=True)

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

    def _write_record(self, meta: dict, features: np.ndarray | None = None) -> None:
        existing = self._journal_records()
        seq = max([self._journal_seq] + [s for s, _ in existing]) + 1
        meta = {**meta, "fingerprint": self._fingerprint}
        target = self.journal_dir / f"{seq:012d}.npz"
        tmp = self.journal_dir / f".{seq:012d}.{os.getpid()}.tmp"
        try:
            self.journal_dir.mkdir(exist_ok=True)
            with open(tmp, "wb") as fh:
                arrays = {"meta": np.array(json.dumps(meta))}
                if features is not None:
                    arrays["features"] = features
                np.savez(fh, **arrays)
                fh.flush()
                _crash_point("journal-tmp-written")
                os.fsync(fh.fileno())
            os.replace(tmp, target)
            _fsync_dir(self.journal_dir)
            _crash_point("journal-renamed")
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            raise StoreError(f"{self.path}: cannot write to the store's journal {self.journal_dir} ({exc}); "
                             "nothing of this batch was recorded") from exc
        self._apply(meta, target)

    def _record_features(self, record: Path) -> np.ndarray:
        if self._cache is None or self._cache[0] != record:
            with np.load(record, allow_pickle=False) as data:
                self._cache = (record, data["features"])
        return self._cache[1]

    def _write_main(self, f: h5py.File, records: list[tuple[int, Path]]) -> None:
        dim = self._dim()
        if "features" not in f:
            f.attrs["format"] = FORMAT
            f.attrs["format_version"] = FORMAT_VERSION
            f.attrs["fingerprint"] = json.dumps(self._fingerprint, sort_keys=True)
            from stylesift.featurizer.backbone import fingerprint_id
            f.attrs["fingerprint_id"] = fingerprint_id(self._fingerprint)
            f.create_dataset("features", (0, dim), np.float32, maxshape=(None, dim), chunks=(64, dim))
            f.create_dataset("sha256", (0,), "S64", maxshape=(None,), chunks=(4096,))
            f.create_dataset("label", (0,), _STR, maxshape=(None,), chunks=(4096,))
            f.create_dataset("paths", (0,), _STR, maxshape=(None,), chunks=(4096,))
            f.create_dataset("added", (0,), np.float64, maxshape=(None,), chunks=(4096,))
        n_old = int(f.attrs.get("rows", 0))
        n_new = len(self._sha)
        new = slice(n_old, n_new)
        for name in ("features", "sha256", "label", "paths", "added"):
            f[name].resize(n_new, axis=0)
        added = np.empty(n_new - n_old, np.float64)
        pending = set(self._pending_rows)
        for seq, record in records:
            with np.load(record, allow_pickle=False) as data:
                meta = json.loads(str(data["meta"]))
                # The rows this record contributed to the overlay (see _apply): first occurrences only.
                keep = [i for i, r in enumerate(meta.get("rows", [])) if (record, i) in pending]
                if not keep:
                    continue
                feats = data["features"][keep]
            rows = [meta["rows"][i] for i in keep]
            targets = np.array([self._index[r["sha256"]] for r in rows])
            start = int(targets[0])
            if np.array_equal(targets, np.arange(start, start + len(targets))):
                f["features"][start:start + len(rows)] = feats  # the usual case: one slice write per record
            else:
                for t, feat in zip(targets, feats):
                    f["features"][int(t)] = feat
            added[targets - n_old] = [r["added"] for r in rows]
            _crash_point("commit-rows-written")
        if n_new > n_old:
            f["sha256"][new] = np.array(self._sha[n_old:], dtype="S64")
            f["added"][new] = added
        # Labels and paths may change on old rows too; rewriting them whole is cheap next to features.
        f["label"][...] = np.array(self._label, dtype=object)
        f["paths"][...] = np.array([json.dumps(p) for p in self._paths], dtype=object)
        if "failures" in f:
            del f["failures"]
        g = f.create_group("failures")
        fails = list(self._failures.values())
        g.create_dataset("path", data=np.array([x.path for x in fails], dtype=object), dtype=_STR)
        g.create_dataset("size", data=np.array([x.size for x in fails], dtype=np.int64))
        g.create_dataset("mtime", data=np.array([x.mtime for x in fails], dtype=np.float64))
        g.create_dataset("reason", data=np.array([x.reason for x in fails], dtype=object), dtype=_STR)
        f.attrs["journal_seq"] = max([self._journal_seq] + [s for s, _ in records])
        f.attrs["rows"] = n_new  # written last: the committed row count


class _Stale(Exception):
    """The main file a reader opened is older than the journal it then listed."""


def _file_id(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns
