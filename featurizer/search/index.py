"""A similarity index beside a feature store, per feature set, kept in step with the store incrementally.

Derived data: :func:`rebuild` makes it again from the store at any time, and a search never depends on
it being current. Rows the index does not cover yet (added since the last :meth:`SimilarityIndex.update`,
or every row while the index is missing or damaged) are searched exactly, so a result is always over every row that holds the feature set.

Keeping in step: the store only appends rows (row ``i`` stays row ``i``) except when ``prune`` or
``check --repair`` renumber them. Each part file therefore records the store rows it covers, as runs,
and a few ``(row, sha256)`` checks; an update indexes only rows no part covers (its cost is that of the
run it adds) and a check that no longer holds (the store was renumbered) makes the next update rebuild.
Small trailing parts are merged like the store's segments (a binary counter, one merge an update, up to
:data:`MERGE_ROWS`), so the number of files stays logarithmic and no update rewrites much.

How a search uses it: the reduced vectors (float32, memory-mapped) pick ``RERANK`` candidates from the
nearest lists; an int8 copy of the candidates' full unit rows, kept in the part files, re-ranks them
to ``k + EXACT_MARGIN``; only those are read from the store, whose float32 rows give the exact cosines
returned. The store is thus read for a dozen rows a query, not a hundred (an HDF5 row read costs about
0.17 ms), and opening an index reads no vector.

When to refit the quantizer: a flat index (exact scan of the float32 unit rows, memory-mapped) up to :data:`FLAT_MAX`
rows with features; then a projection + inverted file fitted on a sample, refitted (a rebuild) each
time the store has grown :data:`REFIT_GROWTH` times past the rows it was fitted on.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import numpy as np

from stylesift.featurizer.search import files
from stylesift.featurizer.search.exact import TopK, exact_top_k, normalise, store_blocks
from stylesift.featurizer.search.files import IndexDamage
from stylesift.featurizer.search.ivf import MAPPED, InvertedLists, Quantizer, merge_arrays, part_arrays

__all__ = ["SimilarityIndex", "FLAT_MAX", "REFIT_GROWTH", "MERGE_ROWS", "FIT_SAMPLE", "NPROBE", "RERANK", "RERANK_LARGE",
           "LARGE_ROWS", "EXACT_MARGIN", "BUILD_ROWS", "NPROBE_LARGE"]

FLAT_MAX = 20_000      # below this an exact scan of the unit rows is as fast as any index
REFIT_GROWTH = 8       # refit once the store holds 8× the rows the quantizer was fitted on
MERGE_ROWS = 32_768    # largest part a merge makes: an update merges once at most, so it rewrites at most this
                       # many rows (3 KB each with the int8 rows: 64k-row merges in cascade took 1.9 s at 1M rows)
BUILD_ROWS = 4 * MERGE_ROWS  # parts a rebuild writes: a query scans each part's probed lists, so fewer is faster
FIT_SAMPLE = 32_768    # rows the quantizer is fitted on (contiguous runs spread over the store)
NPROBE = 24            # lists scanned per query (widened when a filter leaves too few candidates)
RERANK = 50            # candidates re-ranked with exact cosines on the stored float32 rows ...
RERANK_LARGE = 200     # ... and from LARGE_ROWS on, with NPROBE_LARGE lists: at 1M rows (int8 re-rank) recall@10
NPROBE_LARGE = 16      # was 0.937 with 24 lists / 60 candidates, 0.978 with 24 / 100, 0.997 with 16 / 200 (14 ms)
LARGE_ROWS = 250_000
EXACT_MARGIN = 5       # candidates beyond k re-read from the store after the int8 re-rank (its error is ~1e-3)
CHECKS = 8             # (row, sha256) pairs each part records to notice a renumbered store


class SimilarityIndex:
    """The index of one feature set of one store (files under ``<store>.index/<feature_set>/``).

    Parameters
    ----------
    store_path : path
        The store's ``.h5`` file.
    feature_set : str
        A stored feature set (``pooled``, ``style``).
    """

    def __init__(self, store_path, feature_set: str = "pooled"):
        self.store_path = Path(store_path)
        self.feature_set = feature_set
        self.folder = files.set_folder(self.store_path, feature_set)
        self._loaded: tuple[str, InvertedLists] | None = None  # (sidecar text, lists) of the last load
        self._checked: tuple | None = None  # ((store, rows, sidecar text), (doc, lists)) of the last check

    # ----------------------------------------------------------------- state
    def sidecar(self) -> dict | None:
        return files.read_sidecar(self.folder)

    def problems(self, store, deep: bool = False) -> list[str]:
        """Why the index cannot be used as it is (empty: usable). ``deep`` also checks every sha256."""
        try:
            doc = self.sidecar()
        except IndexDamage as exc:
            return [str(exc)]
        if doc is None:
            return [f"{self.folder}: no index yet"]
        out = []
        if doc.get("fingerprint") != store.feature_sets.get(self.feature_set):
            out.append(f"{self.folder}: built for another feature space than the store's {self.feature_set!r} set")
        for entry in [doc["quantizer"], *doc["parts"]]:
            problem = files.check_file(self.folder, entry, deep)
            if problem:
                out.append(problem)
        checks = [c for p in doc["parts"] for c in p["checks"]]
        if checks:
            rows = store.rows_of([sha for _, sha in checks]) if len(store) else np.full(len(checks), -1)
            if not np.array_equal(rows, [row for row, _ in checks]):
                out.append(f"{self.folder}: the store's rows were renumbered (pruned or repaired) since it was built")
        return out

    def coverage(self, store, doc: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(has, covered)``: bool over store rows, rows holding the set and rows the index covers."""
        n = len(store)
        has = store.has_features(self.feature_set) if n and self.feature_set in store.feature_sets else np.zeros(n, bool)
        covered = np.zeros(n, bool)
        for part in (doc or {}).get("parts", []):
            for a, b in part["runs"]:
                covered[a:min(b, n)] = True
        return has, covered & has

    def state(self, store, deep: bool = True) -> dict:
        """What ``info`` and ``store check`` show: usable, rows covered, rows pending, files, problems."""
        problems = self.problems(store, deep=deep)
        doc = None if problems and not self.folder.joinpath(files.SIDECAR).exists() else _quiet_sidecar(self)
        has, covered = self.coverage(store, doc if not problems else None)
        q = (doc or {}).get("quantizer", {})
        return {"feature_set": self.feature_set, "folder": str(self.folder), "ok": not problems,
                "problems": problems, "kind": q.get("kind"), "rows": int(has.sum()), "indexed": int(covered.sum()),
                "pending": int((has & ~covered).sum()), "files": 1 + len((doc or {}).get("parts", [])) if doc else 0,
                "bytes": sum(e["bytes"] for e in [q, *doc["parts"]]) if doc else 0}

    # ----------------------------------------------------------------- writing
    def update(self, store, *, lock_timeout: float = 10) -> dict:
        """Index the rows no part covers; rebuild when the index is damaged, stale or due a refit.

        Returns ``{"added", "rebuilt", "reason", "seconds"}``. Takes the index lock (not the store's):
        readers of the store and of the index are never blocked.
        """
        started = time.perf_counter()
        with self._lock(lock_timeout):
            problems = self.problems(store)
            doc = None if problems else self.sidecar()
            has, covered = self.coverage(store, doc)
            reason = "; ".join(problems) if problems else _refit_reason(doc, int(has.sum()))
            if reason:
                added = self._rebuild(store, has, reason)
                return {"added": added, "rebuilt": True, "reason": reason, "seconds": time.perf_counter() - started}
            pending = np.flatnonzero(has & ~covered)
            if len(pending):
                q = Quantizer.from_arrays(files.read_arrays(self.folder, doc["quantizer"]))
                doc["parts"].append(self._write_part(store, q, doc, pending))
                self._merge_tail(doc)
                files.write_sidecar(self.folder, doc)
                files.remove_unnamed(self.folder, doc)
            return {"added": int(len(pending)), "rebuilt": False, "reason": "",
                    "seconds": time.perf_counter() - started}

    def rebuild(self, store, *, lock_timeout: float = 10) -> dict:
        """Build the index again from the store (what ``store check --repair`` calls)."""
        started = time.perf_counter()
        with self._lock(lock_timeout):
            has, _ = self.coverage(store)
            added = self._rebuild(store, has, "asked")
        return {"added": added, "rebuilt": True, "reason": "asked", "seconds": time.perf_counter() - started}

    def _rebuild(self, store, has: np.ndarray, reason: str) -> int:
        self.folder.mkdir(parents=True, exist_ok=True)
        rows = np.flatnonzero(has)
        try:
            old = self.sidecar()
        except IndexDamage:
            old = None
        gen = int((old or {}).get("generation", 0)) + 1
        if len(rows) < FLAT_MAX:
            q, kind = Quantizer.flat(store.feature_sets[self.feature_set]["feature_dim"] if len(rows) == 0
                                     else store.features(rows[:1], self.feature_set).shape[1]), "flat"
        else:
            sample = _sample_rows(rows, FIT_SAMPLE)
            X = np.concatenate([normalise(X) for _, X in store_blocks(store, sample, self.feature_set)])
            q, kind = Quantizer.fit(X), "ivf"
        entry = files.write_arrays(self.folder / f"quantizer-{gen}{files.SUFFIX}", q.arrays())
        entry.update(kind=kind, fitted_rows=int(len(rows)), nlist=q.nlist, reduced_dim=q.reduced_dim)
        doc = {"format": files.FORMAT, "version": files.VERSION, "feature_set": self.feature_set,
               "fingerprint": store.feature_sets.get(self.feature_set), "generation": gen, "next_part": 0,
               "quantizer": entry, "parts": [], "built": time.time()}
        size = max(BUILD_ROWS, MERGE_ROWS)
        for start in range(0, len(rows), size):
            doc["parts"].append(self._write_part(store, q, doc, rows[start:start + size]))
        files.write_sidecar(self.folder, doc)
        files.remove_unnamed(self.folder, doc)
        self._loaded = None
        return int(len(rows))

    def _write_part(self, store, q: Quantizer, doc: dict, rows: np.ndarray) -> dict:
        # block by block (memory: one store block, not the part's float32 rows), then grouped by list
        blocks = [part_arrays(q, block, normalise(X)) for block, X in store_blocks(store, rows, self.feature_set)]
        arrays = blocks[0] if len(blocks) == 1 else merge_arrays(blocks, q.nlist)
        return self._save_part(doc, arrays, _checks(store, rows))

    def _save_part(self, doc, arrays: dict, checks) -> dict:
        name = f"part-{doc['generation']}-{doc['next_part']:06d}{files.SUFFIX}"
        doc["next_part"] += 1
        entry = files.write_arrays(self.folder / name, arrays, mapped=MAPPED)
        entry.update(rows=int(len(arrays["rows"])), runs=_runs(arrays["rows"]), checks=checks)
        return entry

    def _merge_tail(self, doc: dict) -> None:
        """Merge the last pair of parts whose first is no larger than its second (binary counter, one step).

        One merge an update, not the whole cascade: a cascade rewrote up to twice ``MERGE_ROWS`` rows in
        one update; one step a run keeps every update's cost bounded, and the next runs finish the cascade.
        """
        parts = doc["parts"]
        for i in range(len(parts) - 1, 0, -1):  # the pair nearest the end that a binary counter would merge
            a, b = parts[i - 1], parts[i]
            if a["rows"] <= b["rows"] and a["rows"] + b["rows"] <= MERGE_ROWS:
                merged = merge_arrays([files.read_arrays(self.folder, e) for e in (a, b)], int(doc["quantizer"]["nlist"]))
                checks = a["checks"][: CHECKS // 2] + b["checks"][-(CHECKS // 2):]
                parts[i - 1:i + 1] = [self._save_part(doc, merged, checks)]
                return

    def _lock(self, timeout: float):
        from filelock import FileLock, Timeout

        root = files.index_root(self.store_path)
        root.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(root / ".lock"), timeout=timeout)
        try:
            lock.acquire()
        except Timeout:
            raise IndexDamage(f"{root}: another process is updating the index (waited {timeout:g} s)") from None
        return _Held(lock)

    # ----------------------------------------------------------------- reading
    def load(self) -> tuple[dict, InvertedLists]:
        """The sidecar and the lists, their large arrays memory-mapped (kept while the sidecar stays the same).

        Opening checks sizes and the small arrays' crc32, not the sha256 of the vectors (see :mod:`.files`):
        a million-row index opens in milliseconds.
        """
        path = self.folder / files.SIDECAR
        for _ in range(3):  # a writer may merge parts away between reading the sidecar and the files
            text = path.read_text(encoding="utf-8")
            doc = files.parse_sidecar(path, text)
            if self._loaded and self._loaded[0] == text:
                return doc, self._loaded[1]
            try:
                q = Quantizer.from_arrays(files.read_arrays(self.folder, doc["quantizer"]))
                parts = [files.read_arrays(self.folder, p) for p in doc["parts"]]
            except FileNotFoundError:
                continue
            for entry, part in zip(doc["parts"], parts):
                if len(part["offsets"]) != q.nlist + 1 or (len(part["rows"]) and part["rows"].min() < 0):
                    raise IndexDamage(f"{self.folder / entry['file']}: its lists do not match the quantizer (damaged)")
            lists = InvertedLists(q, parts)
            self._loaded = (text, lists)
            return doc, lists
        raise IndexDamage(f"{self.folder}: its files kept changing while being read")

    def _usable(self, store) -> tuple[dict | None, InvertedLists | None]:
        """The loaded index if it holds for this store (checked once per sidecar and store state), else Nones."""
        key = (id(store), len(store), (self.folder / files.SIDECAR).read_text(encoding="utf-8")
               if self.folder.joinpath(files.SIDECAR).exists() else None)
        if self._checked is not None and self._checked[0] == key:
            return self._checked[1]
        found = (None, None) if self.problems(store) else self.load()
        self._checked = (key, found)
        return found

    def search(self, store, queries: np.ndarray, k: int = 10, *, allowed: np.ndarray | None = None,
               exclude: np.ndarray | None = None, nprobe: int | None = None, rerank: int | None = None,
               use_index: bool = True) -> list[tuple[np.ndarray, np.ndarray]]:
        """Top-``k`` cosine neighbours of each query among the store's rows holding the set.

        Parameters
        ----------
        store : FeatureStore
            Open store (its rows are read for rows the index does not cover and for re-ranking).
        queries : ndarray
            float32 ``(q, d)`` feature vectors (normalised here).
        allowed : ndarray, optional
            bool over store rows: only these may be returned (label, age filters).
        exclude : ndarray, optional
            int64 ``(q,)``: a row each query must not return (its own; -1 for none).
        use_index : bool
            False: an exact search over every allowed row (the reference).

        Returns
        -------
        list of (rows, similarities)
            Per query, best first; similarities are exact cosines.
        """
        Q = normalise(np.atleast_2d(queries))
        exclude = np.full(len(Q), -1, np.int64) if exclude is None else np.asarray(exclude, np.int64)
        doc, lists = (None, None)
        if use_index:
            try:
                doc, lists = self._usable(store)
            except (IndexDamage, OSError):
                doc, lists = None, None  # derived data: a broken index only makes this search exact
        has, covered = self.coverage(store, doc)
        mask = has if allowed is None else has & allowed
        top = TopK(len(Q), k)
        large = lists is not None and len(lists) >= LARGE_ROWS
        if rerank is None:
            rerank = RERANK_LARGE if large else RERANK
        if nprobe is None:
            nprobe = NPROBE_LARGE if large else NPROBE
        if lists is not None and len(lists):
            allowed_covered = mask & covered
            if allowed_covered.sum() <= max(4 * rerank, 2048):
                pending = np.flatnonzero(mask)  # a narrow filter: reading its rows beats scanning lists
            else:
                pending = np.flatnonzero(mask & ~covered)
                with _one_blas_thread():
                    self._push_index(store, Q, lists, top, allowed_covered, exclude, nprobe, max(rerank, k), k)
        else:
            pending = np.flatnonzero(mask)
        exact_top_k(Q, store_blocks(store, pending, self.feature_set), k, exclude=exclude, top=top)
        return top.result()

    def _push_index(self, store, Q, lists, top, allowed, exclude, nprobe, rerank, k):
        """Candidates of each query from the lists, re-ranked on the int8 rows, then exact cosines on the stored rows.

        A flat index's vectors are the unit rows themselves, so its candidates need no int8 re-rank; the
        ``k + EXACT_MARGIN`` kept are read from the store either way, so that a similarity returned is
        never one an index file holds (a damaged vector can cost recall, not a wrong number).
        """
        full = None if allowed.all() else allowed
        keep = k + EXACT_MARGIN
        picked = []
        for i, q in enumerate(Q):
            rows, sims, slots = lists.candidates(q, nprobe, rerank if lists.has_codes else keep, full, int(exclude[i]))
            if len(rows) > keep:
                approx = lists.full_rows(slots) @ q if lists.has_codes else sims
                rows = rows[np.argpartition(-approx, keep - 1)[:keep]]
            picked.append(rows)
        union = np.unique(np.concatenate(picked)) if picked else np.zeros(0, np.int64)
        if not len(union):
            return
        X = normalise(store.features(union, self.feature_set))  # one sorted read for every query
        _push_padded(top, picked, [X[np.searchsorted(union, f)] @ Q[i] for i, f in enumerate(picked)])


_BLAS = None  # the threadpoolctl controller, made on the first search (it inspects the loaded libraries once)


def _one_blas_thread():
    """A context with BLAS on one thread: a query is some hundred small products, and a threaded BLAS call
    waits for its helper threads each time (measured at a million rows on 2 busy cores: 99 ms a query
    with the default threads, 34 ms with one). The exact scan of pending rows keeps every thread."""
    global _BLAS
    if _BLAS is None:
        try:
            from threadpoolctl import ThreadpoolController
        except ImportError:  # it comes with scikit-learn; without it, only the speed differs
            _BLAS = False
        else:
            _BLAS = ThreadpoolController()
    return _BLAS.limit(limits=1, user_api="blas") if _BLAS else contextlib.nullcontext()


def _push_padded(top: TopK, rows: list, sims: list) -> None:
    """Offer each query its own candidates (padded to one width with row -1, similarity -inf)."""
    width = max((len(r) for r in rows), default=0)
    if not width:
        return
    R = np.full((len(rows), width), -1, np.int64)
    S = np.full((len(rows), width), -np.inf, np.float32)
    for i, (r, s) in enumerate(zip(rows, sims)):
        R[i, :len(r)], S[i, :len(s)] = r, s
    top.push(R, S)


class _Held:
    def __init__(self, lock):
        self.lock = lock

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.lock.release()


def _quiet_sidecar(index: SimilarityIndex) -> dict | None:
    try:
        return index.sidecar()
    except IndexDamage:
        return None


def _refit_reason(doc: dict, rows_with_set: int) -> str:
    q = doc["quantizer"]
    if q["kind"] == "flat" and rows_with_set >= FLAT_MAX:
        return f"the store outgrew a flat index ({rows_with_set} rows)"
    if q["kind"] == "ivf" and rows_with_set > REFIT_GROWTH * max(1, q["fitted_rows"]):
        return f"the store grew {REFIT_GROWTH}× past the {q['fitted_rows']} rows the index was fitted on"
    return ""


def _sample_rows(rows: np.ndarray, n: int, run: int = 256) -> np.ndarray:
    """About ``n`` of ``rows`` as contiguous runs spread evenly (cheap to read; a fair sample of the store)."""
    if len(rows) <= n:
        return rows
    starts = np.linspace(0, len(rows) - run, max(1, n // run)).astype(np.int64)
    return np.unique(np.concatenate([rows[s:s + run] for s in starts]))


def _runs(rows: np.ndarray) -> list[list[int]]:
    """Sorted rows as ``[start, end)`` runs (a JSON-small record of what a part covers)."""
    rows = np.sort(np.asarray(rows, np.int64))
    if not len(rows):
        return []
    breaks = np.flatnonzero(np.diff(rows) != 1)
    starts = np.r_[rows[0], rows[breaks + 1]]
    ends = np.r_[rows[breaks] + 1, rows[-1] + 1]
    return [[int(a), int(b)] for a, b in zip(starts, ends)]


def _checks(store, rows: np.ndarray) -> list[list]:
    picks = np.unique(rows[np.linspace(0, len(rows) - 1, min(CHECKS, len(rows))).astype(np.int64)]) if len(rows) else []
    if hasattr(store, "row_details"):  # a FeatureStore: read these few ids, not every row's (0.9 s at a million rows)
        return [[int(r), sha] for r, (sha, _) in zip(picks, store.row_details([int(r) for r in picks]))]
    sha = store.sha256
    return [[int(r), str(sha[r])] for r in picks]
