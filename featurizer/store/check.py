"""``stylesift store check | compact | prune``: verify every checksum, merge segments, forget old rows.

Each problem is one line naming the file, what is wrong and what to do. ``check --repair`` rewrites
what can be rebuilt (indexes, the top file), and moves damaged or missing parts aside: rows of a
damaged segment leave the store (the next ``extract`` featurizes those images again), a damaged small
record is moved aside (the label, path or verdict it held is lost; the rest is kept).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import h5py
import numpy as np

from stylesift.featurizer.store import segments as seglib
from stylesift.featurizer.store.facade import FeatureStore
from stylesift.featurizer.store.files import FORMAT_VERSION, Layout, h5_reason
from stylesift.featurizer.store.manifest import read_manifest
from stylesift.featurizer.store.records import RecordLog
from stylesift.featurizer.store.types import StoreError


def _problem(file, problem: str, fix: str, rows=None, kind: str = "damaged") -> dict:
    return {"file": str(file), "problem": problem, "fix": fix, "rows": rows, "kind": kind}


def check(path, repair: bool = False, block_rows: int = 8192) -> dict:
    """Read every byte the manifest names, verifying checksums; with ``repair``, fix what can be fixed."""
    path = Path(path)
    layout = Layout(path)
    st = FeatureStore(path, "a" if repair else "r", lock_timeout=-1)
    problems: list[dict] = []
    try:
        if st.format_version == 1:
            return {"store": str(path), "healthy": True, "rows": len(st), "format_version": 1, "problems": [],
                    "note": "an old-format store: the next write (extract, or check --repair) upgrades it"}
        m = read_manifest(layout)
        rows_total = int(m["rows"])
        starts = np.cumsum([0] + [s["rows"] for s in m["segments"]])
        bad_rows = np.zeros(rows_total, bool)
        read_ids: list[tuple[int, np.ndarray]] = []  # (first row, sha256s) of every segment read whole
        for k, seg in enumerate(m["segments"]):
            start, n = int(starts[k]), seg["rows"]
            file = layout.parts / seg["name"]
            rows = [start, start + n - 1]
            if not file.exists():
                problems.append(_problem(file, "missing segment", "run `stylesift store check --repair`: its rows leave "
                                         "the store and the next extract featurizes those images again", rows, "missing"))
                bad_rows[start:start + n] = True
                continue
            try:
                with h5py.File(file, "r") as f:
                    if int(f.attrs["rows"]) != n:
                        raise OSError(f"holds {int(f.attrs['rows'])} rows, the manifest says {n}")
                    shas = f["sha256"][:]
                    for name in ("added", "label_code", "label_names", "paths_offsets", "paths_data"):
                        f[name][:]
                    for group in ("sets", "present"):
                        for name in (f[group] if group in f else []):
                            ds = f[f"{group}/{name}"]
                            for lo in range(0, ds.shape[0], block_rows):
                                try:
                                    ds[lo:lo + block_rows]
                                except OSError:
                                    raise OSError(f"{group}/{name} rows {start + lo}-"
                                                  f"{start + min(n, lo + block_rows) - 1} fail their Fletcher32 checksum")
            except (OSError, KeyError, ValueError, TypeError, IndexError, RuntimeError, UnicodeError) as exc:
                problems.append(_problem(file, f"damaged segment ({h5_reason(exc) if 'rows' not in str(exc) else exc})",
                                         "run `stylesift store check --repair`: its rows leave the store and the next "
                                         "extract featurizes those images again", rows))
                bad_rows[start:start + n] = True
                continue
            want = seglib.build_index(shas)
            try:
                have = seglib.open_index(file, n)
                ok = have is not None and all(np.array_equal(np.asarray(have[k]), want[k]) for k in want)
            except (OSError, ValueError, KeyError, TypeError):
                ok = False
            if not ok:
                problems.append(_problem(file, "damaged segment (its sha256 index does not match its ids)",
                                         "run `stylesift store check --repair`: its rows leave the store and the next "
                                         "extract featurizes those images again", rows))
                bad_rows[start:start + n] = True
            else:
                read_ids.append((start, shas))
        doubled = _doubled_rows(read_ids)
        if len(doubled):
            problems.append(_problem(path, f"{len(doubled)} row(s) repeat a content stored in an earlier row (written "
                                     "twice, e.g. by two writers without one lock)", "run `stylesift store check "
                                     "--repair`: the repeats leave the store, the first row of each content stays",
                                     [int(doubled[0]), int(doubled[-1])], "doubled"))
            bad_rows[doubled] = True
        for p in m.get("patches", []):
            try:
                with h5py.File(layout.parts / p["name"], "r") as f:
                    f["row"][:]
                    f[f"sets/{p['set']}"][:]
            except (OSError, KeyError, ValueError, TypeError) as exc:
                problems.append(_problem(layout.parts / p["name"], f"damaged or missing patch ({h5_reason(exc)})",
                                         "run `stylesift store check --repair`: the set is computed again by "
                                         f"`stylesift extract PATH --store {path} --features {p['set']}`", None, "patch"))
        log = RecordLog(layout)
        records = [(None, layout.parts / m["meta"])] if m.get("meta") else []
        records += log.records(int(m.get("log_seq", 0)))
        for _, rec in records:
            try:
                log.check(rec)
            except (StoreError, OSError) as exc:
                problems.append(_problem(rec, f"damaged record ({str(exc).split('(', 1)[-1].split(')')[0]})",
                                         "run `stylesift store check --repair` to move it aside (the labels, paths or "
                                         "verdicts it held are lost; the rest is kept)", None, "record"))
        top_ok = False
        try:
            with h5py.File(path, "r") as f:
                top_ok = int(f.attrs.get("layout", -1)) == int(m["layout"]) and int(f.attrs["rows"]) == rows_total
        except (OSError, KeyError, ValueError):
            pass
        if not top_ok and m["segments"]:
            # Derived data, like an index: every row is in the parts, and a writer killed between its
            # manifest and the top file's rewrite leaves exactly this, so it is reported, not damage.
            problems.append(_problem(path, "top file missing or older than the manifest (stylesift reads every row; "
                                     "plain h5py readers see old rows)",
                                     "run `stylesift store check --repair` (or any extract) to rewrite it", None, "top"))
        if repair:
            _repair(st, problems, bad_rows)
    finally:
        st.close(commit=False)
    fixed = repair and all(p["kind"] in ("index", "top", "missing", "damaged", "record", "patch", "doubled")
                           for p in problems)
    damage = [p for p in problems if p["kind"] != "top"]
    return {"store": str(path), "healthy": not damage, "repaired": bool(repair and problems and fixed),
            "rows": len(st), "segments": len(read_manifest(layout)["segments"]), "format_version": FORMAT_VERSION,
            "problems": problems}


def _doubled_rows(read_ids: list[tuple[int, np.ndarray]]) -> np.ndarray:
    """Sorted row numbers whose sha256 an earlier row already holds (the store's rows are distinct contents)."""
    if not read_ids:
        return np.zeros(0, np.int64)
    rows = np.concatenate([np.arange(start, start + len(ids)) for start, ids in read_ids])
    ids = np.concatenate([ids for _, ids in read_ids])
    _, first = np.unique(ids, return_index=True)
    repeat = np.ones(len(ids), bool)
    repeat[first] = False  # np.unique's index is each value's first occurrence
    return np.sort(rows[repeat])


def _repair(st: FeatureStore, problems: list[dict], bad_rows: np.ndarray) -> None:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    aside = st.path.with_name(f"{st.path.name}.damaged-{stamp}")
    for p in problems:
        if p["kind"] in ("damaged", "record", "patch") and Path(p["file"]).exists():
            aside.mkdir(exist_ok=True)
            os.replace(p["file"], aside / Path(p["file"]).name)
            p["moved_to"] = str(aside / Path(p["file"]).name)
    st.repair(~bad_rows, records=any(p["kind"] == "record" for p in problems))


def compact(path, max_rows: int | None = None) -> dict:
    layout = Layout(Path(path))
    with FeatureStore(path, "a") as st:
        before = len(read_manifest(layout)["segments"])
        st.compact(max_rows)
        return {"store": str(path), "rows": len(st), "segments_before": before,
                "segments": len(read_manifest(layout)["segments"])}


def prune(path, older_than_days: float, include_labelled: bool = False, dry_run: bool = False) -> dict:
    """Remove rows extracted more than ``older_than_days`` ago (labelled rows stay unless ``include_labelled``)."""
    if not np.isfinite(older_than_days) or older_than_days < 0:
        raise StoreError(f"--older-than must be a number of days >= 0, not {older_than_days}")
    cutoff = time.time() - older_than_days * 86400
    with FeatureStore(path, "a") as st:
        old = st.added < cutoff
        labelled = st.labels.astype(str) != ""
        drop = old & (include_labelled | ~labelled)
        result = {"store": str(path), "rows": len(st), "removed": int(drop.sum()),
                  "kept_labelled": int((old & labelled).sum()) if not include_labelled else 0, "dry_run": dry_run}
        if dry_run or not drop.any():
            return result
        gone = set(st.sha256[drop])
        st.rewrite(~drop, "prune")
        st.fold(forget=gone)  # their labels, paths and verdicts go too
        result["rows_after"] = len(st)
    return result


def main_json(result: dict) -> str:
    return json.dumps(result, indent=2)
