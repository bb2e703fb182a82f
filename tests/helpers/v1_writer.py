"""The writing half of the format_version 1 store, kept only to fabricate old stores in tests.

stylesift itself only reads such stores (:class:`stylesift.featurizer.store.legacy.v1.V1Reader`) and
upgrades them on the first write; this is the code that wrote them, as it was (journal records,
commit by copy-append-rename, its fault-injection points), so that the upgrade is tested against
stores made the old way.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import time
from pathlib import Path
from typing import Iterable, Sequence

import h5py
import numpy as np

from stylesift.featurizer.store.files import acquire_writer_lock
from stylesift.featurizer.store.files import crash_point as _crash_point
from stylesift.featurizer.store.files import fsync as _fsync
from stylesift.featurizer.store.files import fsync_dir as _fsync_dir
from stylesift.featurizer.store.legacy.v1 import FORMAT_VERSION, V1Reader
from stylesift.featurizer.store.types import Failure, FeatureSpaceMismatch, StoreError

FORMAT = "stylesift-store"
_STR = h5py.string_dtype("utf-8")


class V1Store(V1Reader):
    """A format_version 1 store opened for reading (``"r"``) or appending (``"a"``), as versions before 2 did.

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

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        # Commit even when interrupted: every journaled batch is good and should not wait for a rerun.
        self.close()

    def _locked(self) -> bool:
        return self._lock is not None

    def _after_load(self) -> None:
        if self.mode == "a" and self._lock is not None:
            self._remove_merged_records()

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


    def _remove_merged_records(self) -> None:
        """Records a killed commit had merged but not yet deleted (their seq is <= journal_seq)."""
        if self.journal_dir.is_dir():
            for entry in self.journal_dir.glob("*.npz"):
                if entry.stem.isdigit() and int(entry.stem) <= self._journal_seq:
                    entry.unlink(missing_ok=True)

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

    def _write_main(self, f: h5py.File, records: list[tuple[int, Path]]) -> None:
        dim = self._dim()
        if "features" not in f:
            f.attrs["format"] = FORMAT
            f.attrs["format_version"] = FORMAT_VERSION
            f.attrs["fingerprint"] = json.dumps(self._fingerprint, sort_keys=True)
            from stylesift.featurizer.backbones import fingerprint_id
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


