"""Rewriting a store's parts under the writer lock: merge segments, fold small records, compact, rewrite rows.

Each step writes its new parts first, then the manifest that names them, then deletes what the old
manifest named (a kill in between leaves parts the next writer removes); see
:mod:`stylesift.featurizer.store.facade` for the protocol.
"""

from __future__ import annotations

import logging

import h5py
import numpy as np

from stylesift.featurizer.store import segments as seglib
from stylesift.featurizer.store.files import crash_point
from stylesift.featurizer.store.reader import Snapshot
from stylesift.featurizer.store.records import RecordLog
from stylesift.featurizer.store.writer import SegmentWriter

__all__ = ["merge", "merge_tail", "fold", "compact", "rewrite", "drop_missing_parts"]

_LOG = logging.getLogger("stylesift.store")


def _row_bytes(dims: dict[str, int]) -> int:
    return sum(dims.values()) * 4 + 200


def merge(writer: SegmentWriter, reader: Snapshot, first: int, last: int) -> None:
    """Merge segments ``first..last`` (inclusive, manifest order) into one."""
    segs = writer.view.segments
    if last <= first:
        return
    dims = writer.view.set_dims()
    sources = segs[first:last + 1]
    rows = sum(s["rows"] for s in sources)
    merged = writer.write_segment(lambda tmp: seglib.merge_segments(
        tmp, [writer.layout.parts / s["name"] for s in sources], dims), sorted({n for s in sources for n in s["sets"]}),
        rows, est_bytes=rows * _row_bytes(dims), point="merge-written")
    m = writer.next_manifest()
    old = m["segments"][first:last + 1]
    m["segments"][first:last + 1] = [merged]
    m["layout"] += 1
    writer.write_manifest(m)
    crash_point("merge-manifest-renamed")
    for s in old:
        writer.delete(s["name"])
        reader.forget(s["name"])
        crash_point("merge-sources-deleted")


def merge_tail(writer: SegmentWriter, reader: Snapshot, merge_rows: int) -> None:
    """Merge trailing segments while the one before is no larger than all after it (binary counter)."""
    segs = writer.view.segments
    if len(segs) < 2:
        return
    j, total = len(segs) - 1, segs[-1]["rows"]
    while j > 0 and segs[j - 1]["rows"] <= total and total + segs[j - 1]["rows"] <= merge_rows:
        j -= 1
        total += segs[j]["rows"]
    if j < len(segs) - 1:
        merge(writer, reader, j, len(segs) - 1)


def fold(writer: SegmentWriter, log: RecordLog, state: dict, forget: set[str] | None = None) -> None:
    """Fold the small records into one new metadata file (cost: the metadata, not the rows).

    ``state`` is what the manifest on disk and its records hold; ``forget``: contents whose labels,
    paths and verdicts are dropped (rows pruned away).
    """
    current = writer.view.current
    records = log.records(int(current.get("log_seq", 0)))
    if not records and current.get("meta") and not forget:
        return
    m = writer.next_manifest()
    old_meta = m.get("meta")
    log.fold(m, state, records, forget)
    writer.write_manifest(m)
    crash_point("fold-manifest-renamed")
    log.remove_folded(records, old_meta)


def compact(writer: SegmentWriter, reader: Snapshot, limit: int) -> None:
    """Merge neighbouring segments up to ``limit`` rows each."""
    i = 0
    while i < len(writer.view.segments):
        segs = writer.view.segments
        j, total = i, segs[i]["rows"]
        while j + 1 < len(segs) and total + segs[j + 1]["rows"] <= limit:
            j += 1
            total += segs[j]["rows"]
        if j > i:
            merge(writer, reader, i, j)
        i += 1


def rewrite(writer: SegmentWriter, reader: Snapshot, keep: np.ndarray, reason: str) -> int:
    """Rewrite the store keeping only rows where ``keep`` is True (prune, repair); renumbers rows."""
    keep = np.asarray(keep, bool)
    dropped = int((~keep).sum())
    if not dropped:
        return 0
    view, parts = writer.view, writer.layout.parts
    dims = view.set_dims()
    m = writer.next_manifest()
    new_segments, start = [], 0
    for s in m["segments"]:
        mask = keep[start:start + s["rows"]]
        start += s["rows"]
        if mask.all():
            new_segments.append(s)
        elif mask.any():
            new_segments.append(writer.write_segment(lambda tmp, s=s, mask=mask: seglib.merge_segments(
                tmp, [parts / s["name"]], dims, keep=[mask]), s["sets"], int(mask.sum()),
                est_bytes=int(mask.sum()) * _row_bytes(dims)))
    old_names = {s["name"] for s in m["segments"]} - {s["name"] for s in new_segments}
    # Patches refer to rows by number: rewrite them against the new numbering.
    renumber = np.cumsum(keep) - 1
    new_patches = []
    for p in m.get("patches", []):
        with h5py.File(parts / p["name"], "r") as f:
            rows, ids, X = f["row"][:], f["sha256"][:], f[f"sets/{p['set']}"][:]
        sel = keep[rows]
        if sel.any():
            name = f"patch-{m['next_id']:06d}.h5"
            m["next_id"] += 1
            writer.write_patch(name, renumber[rows[sel]], ids[sel], p["set"], X[sel])
            new_patches.append({"name": name, "set": p["set"], "rows": int(sel.sum())})
        old_names.add(p["name"])
    m["next_id"] = max(m["next_id"], view.current["next_id"])
    m["segments"], m["patches"] = new_segments, new_patches
    m["rows"] = int(keep.sum())
    m["epoch"] = m.get("epoch", 0) + 1
    m["layout"] += 1
    writer.write_manifest(m)
    for name in old_names:
        writer.delete(name)
        reader.forget(name)
    _LOG.info("%s: %s removed %d rows", writer.layout.path, reason, dropped)
    writer.refresh_top()
    return dropped


def drop_missing_parts(writer: SegmentWriter) -> None:
    """Forget the meta file and patches the manifest names but that are gone (``check --repair`` moved them aside)."""
    m = writer.next_manifest()
    parts = writer.layout.parts
    patches = [p for p in m.get("patches", []) if (parts / p["name"]).exists()]
    meta_gone = bool(m.get("meta")) and not (parts / m["meta"]).exists()
    if meta_gone or len(patches) != len(m.get("patches", [])):
        if meta_gone:
            m["meta"] = None
        m["patches"] = patches
        writer.write_manifest(m)
