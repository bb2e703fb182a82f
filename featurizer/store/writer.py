"""The store's writer: holds the lock, writes segments, patches, manifests and the top file.

Everything here runs under ``STORE.h5.lock``; the manifest on disk is the truth, so each new manifest
starts from the one on disk (:meth:`SegmentWriter.next_manifest`). Also the checks a batch passes
before anything of it is written (widths, finite values, one row per content).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
from pathlib import Path
from typing import Callable, Sequence

import h5py
import numpy as np

from stylesift.atomic import atomic_path, fsync_dir, is_temp_name
from stylesift.featurizer.space import fingerprint_id
from stylesift.featurizer.store import segments as seglib
from stylesift.featurizer.store.files import (
    FORMAT,
    FORMAT_VERSION,
    Layout,
    crash_point,
    h5_reason,
)
from stylesift.featurizer.store.manifest import ManifestView, read_manifest, write_manifest
from stylesift.featurizer.store.types import FeatureSpaceMismatch, StoreError, display_path

__all__ = ["SegmentWriter", "remove_leftovers", "write_errors", "check_batch", "first_new", "refuse_nonfinite",
           "check_patch", "check_segment_file", "same_fs", "finite_rows", "split_finite", "NONFINITE"]

NONFINITE = "the network gave non-finite features (NaN or infinity) for this image; not stored"


class SegmentWriter:
    """The one writer of a store: takes the lock on creation, releases it in :meth:`release`.

    Parameters
    ----------
    layout : Layout
        Where the store's parts live.
    view : ManifestView
        The manifest the store works from (shared with its reader).
    lock : filelock.FileLock
        The writer lock, held (:func:`~stylesift.featurizer.store.files.acquire_writer_lock`); released by
        :meth:`release`.
    on_written : callable
        Called with each manifest once it is on disk: the store adopts it.
    on_synced : callable
        Called with the manifest on disk when it is newer than the view's (a write the store did not
        get to note): the store drops its caches and adopts it.
    """

    def __init__(self, layout: Layout, view: ManifestView, lock, on_written: Callable[[dict], None],
                 on_synced: Callable[[dict], None]):
        self.layout = layout
        self.view = view
        self._on_written = on_written
        self._on_synced = on_synced
        self._lock = lock
        self._attempted: int | None = None

    def release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    # ----------------------------------------------------------------- manifests
    def sync_from_disk(self) -> None:
        """Adopt the manifest on disk (the truth under our lock): an interrupt may have landed between a
        manifest's rename and our noting it, and what is on disk must never be overwritten by an older view."""
        disk = read_manifest(self.layout)
        if disk.get("generation") != self.view.current.get("generation"):
            if disk.get("generation") != self._attempted:
                # Not our own write landing late: someone wrote the manifest although we hold the lock
                # (a process that took another lock file). Writing on would commit over their rows.
                raise StoreError(
                    f"{self.layout.path}: the store's manifest changed under this writer (generation "
                    f"{self.view.current.get('generation')} -> {disk.get('generation')}) although it holds the "
                    f"lock {self.layout.path}.lock: another process wrote the store without that lock. Nothing "
                    f"more of this run is committed; run `stylesift store check {self.layout.path}`")
            next_id = max(disk["next_id"], self.view.current["next_id"])
            self._on_synced(disk)
            self.view.current["next_id"] = next_id

    def next_manifest(self) -> dict:
        """A copy of the manifest on disk (plus declared sets) to change and pass to :meth:`write_manifest`."""
        self.sync_from_disk()
        return self.view.next_manifest()

    def write_manifest(self, m: dict, sync_dir: bool = True) -> None:
        self._attempted = int(m.get("generation", 0)) + 1  # what the disk says if this write lands
        write_manifest(self.layout, m, sync_dir=sync_dir)
        self.view.pending_sets = {}
        self._on_written(m)

    def append_segment(self, seg: dict, sync_dir: bool = True) -> None:
        """List a written segment after the others (its rows follow the store's)."""
        m = self.next_manifest()
        m["segments"].append(seg)
        m["rows"] += seg["rows"]
        m["layout"] += 1
        self.write_manifest(m, sync_dir=sync_dir)

    # ----------------------------------------------------------------- rows from elsewhere, patches
    def attach(self, file: Path, rows_of: Callable[[np.ndarray], np.ndarray]) -> int:
        """Add the rows of segment ``file`` (another process wrote it) that ``rows_of`` (-1: absent) does not know."""
        dims = self.view.set_dims()
        shas, sets = check_segment_file(file, dims)
        known = rows_of(shas.astype(str))
        keep = np.zeros(len(shas), bool)
        keep[np.unique(shas, return_index=True)[1]] = True  # one row per content
        keep &= known < 0
        if not keep.any():
            file.unlink(missing_ok=True)
            return 0
        rows = int(keep.sum())
        with write_errors(self.layout.path, "nothing was added", f"cannot attach {file}"):
            if keep.all():
                seg = self.write_segment(lambda tmp: shutil.copyfile(file, tmp) if not same_fs(file, tmp.parent)
                                         else os.replace(file, tmp), sets, rows, est_bytes=0)
            else:
                seg = self.write_segment(lambda tmp: seglib.merge_segments(tmp, [file], dims, keep=[keep]), sets, rows,
                                         est_bytes=rows * (sum(dims.values()) * 4 + 200))
            self.append_segment(seg)
        file.unlink(missing_ok=True)
        return seg["rows"]

    def add_patch(self, name: str, sha256s: Sequence[str], X: np.ndarray, rows: np.ndarray, has: np.ndarray) -> None:
        """Write set ``name`` of ``rows`` (ids ``sha256s``, features ``X``) that lack it (``has`` per store row)."""
        keep = np.flatnonzero(~has[rows])
        keep = keep[np.sort(np.unique(rows[keep], return_index=True)[1])]
        if not len(keep):
            return
        order = keep[np.argsort(rows[keep])]
        with write_errors(self.layout.path, "nothing of this batch was recorded, run again once the problem is fixed"):
            patch_id = self.view.current["next_id"]
            patch = f"patch-{patch_id:06d}.h5"
            self.require_space(X.shape[1] * 4 * len(order))
            self.write_patch(patch, rows[order], np.array([sha256s[i] for i in order], "S64"), name, X[order])
            m = self.next_manifest()
            m["next_id"] = max(m["next_id"], patch_id + 1)
            m.setdefault("patches", []).append({"name": patch, "set": name, "rows": int(len(order))})
            self.write_manifest(m)

    # ----------------------------------------------------------------- parts
    def require_space(self, nbytes: int) -> None:
        """Fail cleanly, before HDF5 writes anything, when the disk cannot hold what comes (HDF5 does not recover)."""
        need = int(nbytes * 1.1) + (1 << 15)
        parts = self.layout.parts
        try:
            free = shutil.disk_usage(parts if parts.exists() else self.layout.path.parent).free
        except OSError:
            return
        if free < need:
            raise OSError(errno.ENOSPC, f"No space left on device: about {need >> 10} KiB needed, {free >> 10} KiB free")

    def write_segment(self, writer: Callable[[Path], object], sets: list[str], rows: int, *, est_bytes: int,
                      point: str = "segment-tmp-written") -> dict:
        """Write a segment through ``writer(tmp)`` (rows and index); rename it into place; return its manifest entry."""
        self.layout.parts.mkdir(exist_ok=True)
        name = f"seg-{self.view.take_id():06d}.h5"
        self.require_space(est_bytes + rows * 80)
        # (the manifest's folder fsync makes the rename durable too)
        with atomic_path(self.layout.parts / name, sync_dir=False, before_rename=lambda tmp: crash_point(point)) as tmp:
            writer(tmp)
            with h5py.File(tmp, "r") as f:
                partial = {k[len("present/"):]: True for k in _names(f, "present")}
        if point == "segment-tmp-written":
            crash_point("segment-renamed")
        entry = {"name": name, "rows": int(rows), "sets": list(sets)}
        if partial:
            entry["partial"] = partial
        return entry

    def write_patch(self, name: str, rows: np.ndarray, ids: np.ndarray, feature_set: str, X: np.ndarray) -> None:
        """Write patch file ``name``: set ``feature_set`` of the (sorted) global ``rows``."""
        with atomic_path(self.layout.parts / name, sync_dir=False) as tmp:
            seglib.write_patch(tmp, rows, ids, feature_set, X)

    def delete(self, name: str) -> None:
        (self.layout.parts / name).unlink(missing_ok=True)

    def refresh_top(self) -> None:
        """Rewrite the plain-h5py top file when the segments changed since it was written."""
        if not self.layout.manifest.exists():
            return
        m, rows, path = self.view.current, self.view.rows, self.layout.path
        layout = int(m["layout"])
        try:
            with h5py.File(path, "r") as f:
                if int(f.attrs.get("format_version", 0)) == FORMAT_VERSION and int(f.attrs.get("layout", -1)) == layout \
                        and int(f.attrs.get("rows", -1)) == rows:
                    return
        except (OSError, ValueError):
            pass
        self.require_space(len(m["segments"]) * 512)
        sets = self.view.feature_sets
        fp = sets.get("pooled")
        attrs = {"format": FORMAT, "format_version": FORMAT_VERSION, "rows": rows, "layout": layout,
                 "parts": self.layout.parts.name, "feature_sets": json.dumps(sets, sort_keys=True)}
        if fp is not None:
            attrs["fingerprint"] = json.dumps(fp, sort_keys=True)
            attrs["fingerprint_id"] = fingerprint_id(fp)
        with atomic_path(path) as tmp:
            seglib.write_top(tmp, self.layout.parts.name, m["segments"], rows, int(fp["feature_dim"]) if fp else None,
                             attrs)
        crash_point("top-renamed")

    def sync_folder(self) -> None:
        """Make the batches' manifest renames durable."""
        if self.layout.parts.is_dir():
            fsync_dir(self.layout.parts)


def remove_leftovers(layout: Layout) -> None:
    """Delete what killed writers left behind; safe only under the writer lock."""
    path, parts, log_dir = layout.path, layout.parts, layout.log_dir
    # Matched by prefix and suffix, not glob: a store's name may contain glob characters.
    for tmp in path.parent.iterdir():
        if is_temp_name(tmp.name, path.name):
            tmp.unlink(missing_ok=True)
    if layout.upgrading.is_dir():
        shutil.rmtree(layout.upgrading, ignore_errors=True)
    if not parts.is_dir():
        return
    m = read_manifest(layout)
    named = {"manifest.json", "log"} | {s["name"] for s in m["segments"]} | {p["name"] for p in m.get("patches", [])}
    if m.get("meta"):
        named.add(m["meta"])
    for entry in parts.iterdir():
        if is_temp_name(entry.name):
            entry.unlink(missing_ok=True)
        elif entry.name not in named and (entry.name.startswith(("seg-", "patch-", "meta-"))):
            entry.unlink(missing_ok=True)  # written but never listed, or merged away and not yet deleted
    if log_dir.is_dir():
        base = int(m.get("log_seq", 0))
        for entry in log_dir.iterdir():
            stem = entry.name.partition(".")[0]
            if is_temp_name(entry.name):
                entry.unlink(missing_ok=True)
            elif stem.isdigit() and int(stem) <= base:
                entry.unlink(missing_ok=True)  # folded by a commit killed before it deleted them


@contextlib.contextmanager
def write_errors(path, tail: str, what: str | None = None):
    """A failed write (full disk, read-only folder; h5py says RuntimeError for some) as one StoreError."""
    try:
        yield
    except (OSError, RuntimeError) as exc:
        what = what or f"cannot write to the store's folder {Layout(Path(path)).parts}"
        raise StoreError(f"{path}: {what} ({exc}); {tail}") from exc


# ===================================================================== checks of what is added
def check_batch(path, sha256s: Sequence[str], features, paths: Sequence, feature_sets: dict) -> dict[str, np.ndarray]:
    """``{set: float32 (n, d)}`` of an :meth:`~stylesift.featurizer.store.FeatureStore.add` call, checked against the
    store's ``feature_sets``: ValueError when shapes do not line up, FeatureSpaceMismatch for a wrong width."""
    sets = dict(features) if isinstance(features, dict) else {"pooled": features}
    n = len(sha256s)
    if len(paths) != n:
        raise ValueError(f"{n} hashes and {len(paths)} path lists do not line up")
    for name in list(sets):
        X = np.asarray(sets[name], dtype=np.float32)
        if X.ndim != 2 or len(X) != n:
            raise ValueError(f"features {X.shape} of set {name!r} and {n} hashes do not line up")
        sets[name] = X
        fp = feature_sets.get(name)
        if fp is None:
            raise StoreError(f"{path}: open the store with a fingerprint (or declare_set({name!r}, ...)) "
                             "before adding features")
        if X.shape[1] != int(fp["feature_dim"]):
            raise FeatureSpaceMismatch(f"{path}: rows of {X.shape[1]} features, set {name!r} holds "
                                       f"{fp['feature_dim']}")
    return sets


def first_new(sha256s: Sequence[str], known: np.ndarray) -> list[int]:
    """Indexes of the contents to add: not in the store (``known`` < 0), first occurrence of each."""
    keep, seen = [], set()
    for i, s in enumerate(sha256s):
        if known[i] < 0 and s not in seen:  # one row per content, first occurrence wins
            keep.append(i)
            seen.add(s)
    return keep


def check_patch(path, name: str, fp: dict | None, sha256s: Sequence[str], features, rows: np.ndarray):
    """``(float32 features, rows)`` of an ``add_features`` call, checked: the set declared, widths, rows present, finite."""
    if fp is None:
        raise StoreError(f"{path}: declare the feature set {name!r} before adding it")
    X = np.asarray(features, np.float32)
    if X.ndim != 2 or len(X) != len(sha256s) or X.shape[1] != int(fp["feature_dim"]):
        raise FeatureSpaceMismatch(f"{path}: {X.shape} features for {len(sha256s)} rows of set {name!r} "
                                   f"({fp['feature_dim']}-d)")
    if (rows < 0).any():
        missing = [sha256s[i] for i in np.flatnonzero(rows < 0)[:3]]
        raise StoreError(f"{path}: no rows for {', '.join(missing)}: add them with `add` first")
    if not np.isfinite(X).all():
        raise StoreError(f"{path}: refused non-finite {name!r} features; nothing was recorded")
    return X, rows


def refuse_nonfinite(path, keep: list[int], sets: dict, sha256s, paths) -> None:
    """StoreError naming the files of rows (among ``keep``) with a non-finite value."""
    bad = [i for i in keep if not all(np.isfinite(X[i]).all() for X in sets.values())]
    if bad:
        names = ", ".join(display_path(paths[i][0]) if paths[i] else sha256s[i] for i in bad[:5])
        raise StoreError(f"{path}: refused {len(bad)} row(s) with non-finite features (NaN or infinity) "
                         f"from {names}{' ...' if len(bad) > 5 else ''}; nothing of this batch was recorded")


def check_segment_file(file: Path, dims: dict[str, int]) -> tuple[np.ndarray, list[str]]:
    """``(ids, set names)`` of a segment another process wrote, after checking its sets' widths and values."""
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
            return shas, sorted(f["sets"])
    except (StoreError, FeatureSpaceMismatch):
        raise
    except (OSError, KeyError, ValueError) as exc:
        raise StoreError(f"{file}: unreadable segment ({h5_reason(exc)}); nothing was added") from None


def same_fs(a: Path, folder: Path) -> bool:
    try:
        return os.stat(a).st_dev == os.stat(folder).st_dev
    except OSError:
        return False


def _names(f: h5py.File, group: str) -> list[str]:
    return [f"{group}/{k}" for k in f[group]] if group in f else []


def finite_rows(features) -> np.ndarray:
    """Bool per row: every value of every set is finite (``add`` refuses the others)."""
    sets = features.values() if isinstance(features, dict) else [features]
    return np.logical_and.reduce([np.isfinite(np.asarray(X)).all(axis=1) for X in sets])


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
