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

import h5py
import numpy as np

from stylesift.featurizer import segments as seglib
from stylesift.featurizer import store_files as F
from stylesift.featurizer.store_types import StoreError, path_bytes

_LOG = logging.getLogger("stylesift.store")
BLOCK_ROWS = 32768


def _backup_name(path, suffix: str):
    target = path.with_name(path.name + suffix)
    k = 1
    while target.exists():
        k += 1
        target = path.with_name(f"{path.name}{suffix}.{k}")
    return target


def finish_upgrade(store) -> None:
    """Move a v1 main file (and journal) aside when parts exist already (an upgrade killed after its rename)."""
    if store.path.is_file():
        try:
            with h5py.File(store.path, "r") as f:
                old = int(f.attrs.get("format_version", 0)) == 1
        except (OSError, ValueError):
            old = False
        if old:
            backup = _backup_name(store.path, ".v1-backup")
            os.replace(store.path, backup)
            _LOG.warning("%s: upgraded to store format %d; the old file is kept as %s", store.path,
                         F.FORMAT_VERSION, backup)
    journal = store.path.with_name(store.path.name + ".journal")
    if journal.is_dir():
        os.replace(journal, _backup_name(journal, ".v1-backup"))


def upgrade(store) -> None:
    from stylesift.featurizer.store_v1 import V1Store

    try:
        old = V1Store(store.path)
    except StoreError:
        raise
    work = store.path.with_name(f".{store.path.name}.parts.upgrading")
    if work.exists():
        shutil.rmtree(work)
    work.mkdir()
    n = len(old)
    fp = old.fingerprint
    need = n * (int(fp["feature_dim"]) * 4 + 300) if fp else 0
    free = shutil.disk_usage(work).free
    if free < need * 1.2:
        shutil.rmtree(work, ignore_errors=True)
        raise StoreError(f"{store.path}: upgrading this store to the current format needs about {need >> 20} MiB "
                         f"free, {free >> 20} MiB are; free some space and run again (nothing was changed)")
    m = F.empty_manifest()
    if fp:
        m["feature_sets"] = {"pooled": fp}
    sha_all = np.asarray(old._sha, dtype="S64")
    for lo in range(0, n, BLOCK_ROWS):
        hi = min(n, lo + BLOCK_ROWS)
        name = f"seg-{m['next_id']:06d}.h5"
        m["next_id"] += 1
        seglib.write_segment(work / name, sha_all[lo:hi], {"pooled": old.features(np.arange(lo, hi))},
                             list(old._label[lo:hi]), [[path_bytes(p) for p in ps] for ps in old._paths[lo:hi]],
                             np.asarray(old._added[lo:hi], np.float64))
        F.fsync(work / name)
        m["segments"].append({"name": name, "rows": hi - lo, "sets": ["pooled"]})
    m["rows"] = n
    m["layout"] = 1
    failures = old.failures
    if failures:
        name = f"meta-{m['next_id']:06d}.json"
        m["next_id"] += 1
        F.write_json_atomic(work / name, {"format": "stylesift-store-meta", "log_seq": 0, "labels": {}, "paths": {},
                                           "verdicts": [], "failures": [[F.b64(f.path), f.size, f.mtime, f.reason]
                                                                        for f in failures]}, work)
        m["meta"] = name
    m["generation"] = 1
    body = {k: v for k, v in m.items() if k != "checksum"}
    F.write_json_atomic(work / "manifest.json", body, work)
    F.fsync_dir(work)
    os.replace(work, store.parts)
    F.fsync_dir(store.path.parent)
    F.crash_point("upgrade-parts-renamed")
    finish_upgrade(store)
    F.crash_point("upgrade-old-moved")
    _LOG.info("%s: upgraded %d rows (%s)", store.path, n, json.dumps({"segments": len(m["segments"])}))
