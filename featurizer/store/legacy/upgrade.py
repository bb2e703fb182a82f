"""Upgrade of a format_version 1 store (one HDF5 file + journal) to segments + manifest, keeping the old file.

Crash-safe: the new parts are built in a hidden folder that is renamed into place in one step; only
then is the old file moved aside as ``STORE.h5.v1-backup`` (a writer that finds parts beside a v1 main
file finishes that step). Called by :class:`~stylesift.featurizer.store.FeatureStore` under its lock.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import h5py
import numpy as np

from stylesift.featurizer.store import segments as seglib
from stylesift.featurizer.store.files import (
    FORMAT_VERSION,
    Layout,
    b64,
    crash_point,
    empty_manifest,
    fsync,
    fsync_dir,
    write_json_atomic,
)
from stylesift.featurizer.store.legacy.adapter import is_legacy
from stylesift.featurizer.store.legacy.v1 import V1Reader
from stylesift.featurizer.store.types import StoreError, path_bytes

__all__ = ["upgrade_if_needed", "upgrade", "finish_upgrade"]

_LOG = logging.getLogger("stylesift.store")
BLOCK_ROWS = 32768


def _backup_name(path: Path, suffix: str) -> Path:
    target = path.with_name(path.name + suffix)
    k = 1
    while target.exists():
        k += 1
        target = path.with_name(f"{path.name}{suffix}.{k}")
    return target


def upgrade_if_needed(layout: Layout) -> None:
    """Bring an old store (or one whose upgrade was killed) to the current format; a no-op for a current one."""
    if layout.manifest.exists():
        finish_upgrade(layout)
    elif is_legacy(layout.path):
        upgrade(layout)


def finish_upgrade(layout: Layout) -> None:
    """Move a v1 main file (and journal) aside when parts exist already (an upgrade killed after its rename)."""
    path = layout.path
    if path.is_file():
        try:
            with h5py.File(path, "r") as f:
                old = int(f.attrs.get("format_version", 0)) == 1
        except (OSError, ValueError):
            old = False
        if old:
            backup = _backup_name(path, ".v1-backup")
            os.replace(path, backup)
            _LOG.warning("%s: upgraded to store format %d; the old file is kept as %s", path, FORMAT_VERSION, backup)
    if layout.journal.is_dir():
        os.replace(layout.journal, _backup_name(layout.journal, ".v1-backup"))


def upgrade(layout: Layout) -> None:
    """Write the rows, labels, paths and failures of the v1 store at ``layout.path`` as current parts."""
    old = V1Reader(layout.path)
    work = layout.upgrading
    if work.exists():
        shutil.rmtree(work)
    work.mkdir()
    n = len(old)
    fp = old.fingerprint
    need = n * (int(fp["feature_dim"]) * 4 + 300) if fp else 0
    free = shutil.disk_usage(work).free
    if free < need * 1.2:
        shutil.rmtree(work, ignore_errors=True)
        raise StoreError(f"{layout.path}: upgrading this store to the current format needs about {need >> 20} MiB "
                         f"free, {free >> 20} MiB are; free some space and run again (nothing was changed)")
    m = empty_manifest()
    if fp:
        m["feature_sets"] = {"pooled": fp}
    sha_all = np.asarray(old.sha256, dtype="S64")
    labels, added = old.labels, old.added
    for lo in range(0, n, BLOCK_ROWS):
        hi = min(n, lo + BLOCK_ROWS)
        name = f"seg-{m['next_id']:06d}.h5"
        m["next_id"] += 1
        # Written in place: the hidden folder is renamed in one step once all of it is durable.
        seglib.write_segment(work / name, sha_all[lo:hi], {"pooled": old.features(np.arange(lo, hi))},
                             [str(x) for x in labels[lo:hi]],
                             [[path_bytes(p) for p in old.paths(row)] for row in range(lo, hi)], added[lo:hi])
        fsync(work / name)
        m["segments"].append({"name": name, "rows": hi - lo, "sets": ["pooled"]})
    m["rows"] = n
    m["layout"] = 1
    failures = old.failures
    if failures:
        name = f"meta-{m['next_id']:06d}.json"
        m["next_id"] += 1
        write_json_atomic(work / name, {"format": "stylesift-store-meta", "log_seq": 0, "labels": {}, "paths": {},
                                        "verdicts": [], "failures": [[b64(f.path), f.size, f.mtime, f.reason]
                                                                     for f in failures]})
        m["meta"] = name
    m["generation"] = 1
    write_json_atomic(work / "manifest.json", m)
    fsync_dir(work)
    os.replace(work, layout.parts)
    fsync_dir(layout.path.parent)
    crash_point("upgrade-parts-renamed")
    finish_upgrade(layout)
    crash_point("upgrade-old-moved")
    _LOG.info("%s: upgraded %d rows (%s)", layout.path, n, json.dumps({"segments": len(m["segments"])}))
