"""The index benchmark (``stylesift bench index``): build, update per 2,000-row run, warm query p50/p99, recall@10, memory.

Three kinds of rows:

- ``store`` (synthetic, up to ~100k rows): a real FeatureStore is written and the index runs on it as
  ``stylesift similar`` does (the re-rank reads the store's float32 rows);
- ``arrays`` (synthetic, 1M rows): writing a million-row store takes long and 8 GB of disk, so the rows
  live in a float16 memory-mapped file behind the store's read interface; everything else is the same code;
- a real store (``store_path``): its rows, all but the last 2,000 indexed first, the last 2,000 as the
  update; the index files go to the benchmark's folder, never beside the real store.

Synthetic rows are shaped like pooled CNN features (non-negative, a fast-decaying spectrum, clusters),
made deterministically block by block so a million 2048-d rows never sit in memory as float32.
"""

from __future__ import annotations

import hashlib
import resource
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

from stylesift.featurizer.search import index as ix
from stylesift.featurizer.search.index import SimilarityIndex

__all__ = ["run", "make_block", "measure", "ArrayStore", "PrefixStore", "table"]

DIM = 2048
BLOCK = 4096
UPDATE_ROWS = 2000
FP = {"backbone": "bench", "feature_dim": DIM, "dtype": "float32"}


def make_block(b: int, dim: int = DIM, rows: int = BLOCK) -> np.ndarray:
    """Block ``b`` of the synthetic rows, float32 ``(rows, dim)`` (the same numbers every time)."""
    basis = np.random.default_rng(12345)
    W = basis.standard_normal((128, dim)).astype(np.float32) / np.sqrt(128)
    decay = (1.0 / np.sqrt(np.arange(1, 129)))[None, :]
    centres = basis.standard_normal((512, 128)).astype(np.float32) * decay * 3
    rng = np.random.default_rng(b)
    latent = centres[rng.integers(0, 512, rows)] + rng.standard_normal((rows, 128)).astype(np.float32) * decay
    X = latent @ W + 0.35 * rng.standard_normal((rows, dim)).astype(np.float32)
    return np.maximum(X, 0).astype(np.float32)


class ArrayStore:
    """The read interface the index uses, over a float16 memory-mapped matrix (the first ``visible`` rows shown)."""

    def __init__(self, path: Path, data: np.ndarray, visible: int):
        self.path, self._data, self.visible = path, data, visible
        self.feature_sets = {"pooled": FP}
        self.sha256 = np.array([f"{i:064x}" for i in range(len(data))])

    def __len__(self):
        return self.visible

    def has_features(self, name="pooled"):
        return np.ones(self.visible, bool)

    def features(self, rows, feature_set="pooled"):
        return np.asarray(self._data[np.asarray(rows)], np.float32)

    def rows_of(self, shas):
        out = np.array([int(s, 16) for s in shas], np.int64)
        out[out >= self.visible] = -1
        return out


class PrefixStore:
    """A real store seen through its first ``visible`` rows, its index placed at ``path`` (not beside the store)."""

    def __init__(self, store, path: Path, visible: int):
        self._store, self.path, self.visible = store, path, visible
        self.feature_sets = store.feature_sets

    def __len__(self):
        return self.visible

    @property
    def sha256(self):
        return self._store.sha256[:self.visible]

    def has_features(self, name="pooled"):
        return self._store.has_features(name)[:self.visible]

    def features(self, rows, feature_set="pooled"):
        return self._store.features(rows, feature_set)

    def rows_of(self, shas):
        out = np.asarray(self._store.rows_of(list(shas)), np.int64)
        out[out >= self.visible] = -1
        return out


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def percentile_ms(times, q):
    return round(float(np.percentile(np.asarray(times) * 1000, q)), 2)


def measure(store, reopen: Callable[[], object], n_queries: int, seed: int = 0) -> dict:
    """Build, query warm, recall against exact, then one 2,000-row update (``reopen`` shows the new rows)."""
    report, build_s = timed(lambda: SimilarityIndex(store.path).update(store))
    index = SimilarityIndex(store.path)  # a new object: opening as a fresh process does (the page cache is warm)
    _, load_s = timed(index.load)
    rng = np.random.default_rng(seed)
    qrows = np.sort(rng.choice(len(store), min(n_queries, len(store)), replace=False))
    n_queries = len(qrows)
    Q = store.features(qrows)
    index.search(store, Q[:2], 10, exclude=qrows[:2])  # warm: first BLAS call, page cache
    times, got = [], []
    for i in range(n_queries):
        res, t = timed(lambda i=i: index.search(store, Q[i:i + 1], 10, exclude=qrows[i:i + 1]))
        times.append(t)
        got.append(res[0][0])
    exact, exact_s = timed(lambda: index.search(store, Q, 10, exclude=qrows, use_index=False))
    recall = float(np.mean([len(np.intersect1d(g, e[0])) / max(1, len(e[0])) for g, e in zip(got, exact)]))
    store = reopen()
    update, update_s = timed(lambda: index.update(store))
    _, reload_s = timed(index.load)
    lists = index.load()[1]
    return {"rows": len(store), "build_s": round(build_s, 2), "build": {k: v for k, v in report.items() if k != "seconds"},
            "cold_load_s": round(load_s, 3), "query_p50_ms": percentile_ms(times, 50), "query_p99_ms": percentile_ms(times, 99),
            "recall_at_10": round(recall, 4), "exact_ms_per_query": round(exact_s / n_queries * 1000, 1),
            "update_2000_s": round(update_s, 3), "update": {k: v for k, v in update.items() if k != "seconds"},
            "reload_after_update_s": round(reload_s, 2),
            "index_bytes_on_disk": sum(p.stat().st_size for p in index.folder.iterdir()),
            "lists_bytes_in_memory": lists.nbytes,  # memory-mapped: only the pages queries read are resident
            "rss_mb": _rss_mb(), "ru_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
            "nprobe": ix.NPROBE_LARGE if len(store) >= ix.LARGE_ROWS else ix.NPROBE,
            "rerank": ix.RERANK_LARGE if len(store) >= ix.LARGE_ROWS else ix.RERANK}


def _rss_mb() -> int | None:
    """Resident memory now (Linux), MiB: the mapped index pages the queries touched count here."""
    try:
        return int(Path("/proc/self/status").read_text().split("VmRSS:")[1].split()[0]) // 1024
    except (OSError, IndexError, ValueError):
        return None


def synthetic_store(rows: int, tmp: Path, n_queries: int) -> dict:
    from stylesift.featurizer.store import FeatureStore

    path = tmp / "bench.h5"
    t = time.perf_counter()
    with FeatureStore(path, "a", fingerprint=FP) as st:
        for b in range((rows + BLOCK - 1) // BLOCK):
            take = min(BLOCK, rows - b * BLOCK)
            ids = [hashlib.sha256(f"row {b * BLOCK + i}".encode()).hexdigest() for i in range(take)]
            st.add(ids, make_block(b)[:take], [[f"/bench/{b}/{i}.jpg"] for i in range(take)])
    written = time.perf_counter() - t
    extra = make_block(10_000_000)[:UPDATE_ROWS]

    def reopen():
        with FeatureStore(path, "a") as w:
            w.add([hashlib.sha256(f"extra {i}".encode()).hexdigest() for i in range(UPDATE_ROWS)], extra,
                  [["/bench/extra.jpg"]] * UPDATE_ROWS)
        return FeatureStore(path)

    return {**measure(FeatureStore(path), reopen, n_queries), "store_write_s": round(written, 1)}


def synthetic_arrays(rows: int, tmp: Path, n_queries: int) -> dict:
    total = rows + UPDATE_ROWS
    data = np.lib.format.open_memmap(tmp / "rows.npy", "w+", np.float16, (total, DIM))
    t = time.perf_counter()
    for b in range((total + BLOCK - 1) // BLOCK):
        end = min(total, (b + 1) * BLOCK)
        data[b * BLOCK:end] = make_block(b)[: end - b * BLOCK]
    data.flush()
    made = time.perf_counter() - t
    store = ArrayStore(tmp / "bench.h5", data, rows)
    out = measure(store, lambda: setattr(store, "visible", total) or store, n_queries)
    return {**out, "generate_s": round(made, 1),
            "note": "rows in a float16 memmap behind the store's read interface (not an HDF5 store)"}


def _real(store_path: Path, tmp: Path, n_queries: int) -> dict:
    from stylesift.featurizer.store import FeatureStore, StoreError

    st = FeatureStore(store_path)
    if len(st) < UPDATE_ROWS + 100:
        raise StoreError(f"{store_path}: {len(st)} rows; a real-store index benchmark needs at least "
                         f"{UPDATE_ROWS + 100} (the last {UPDATE_ROWS} are the update)")
    view = PrefixStore(st, tmp / "bench.h5", len(st) - UPDATE_ROWS)
    return {**measure(view, lambda: setattr(view, "visible", len(st)) or view, n_queries), "store": str(store_path)}


def run(rows: list[int], *, mode: str = "store", store_path: Path | None = None, queries: int = 100,
        folder: Path | None = None, log: Callable[[str], None] = lambda m: None) -> list[dict]:
    """One measurement per size in ``rows`` (synthetic ``mode`` ``store`` or ``arrays``), or of ``store_path``."""
    out = []
    for n in ([None] if store_path is not None else rows):
        tmp = Path(tempfile.mkdtemp(prefix="index-bench-", dir=folder))
        try:
            log(f"index bench: {store_path or f'{n:,} synthetic rows ({mode})'} ...")
            if store_path is not None:
                res = {"mode": "real", **_real(Path(store_path), tmp, queries)}
            elif mode == "arrays":
                res = {"mode": mode, **synthetic_arrays(n, tmp, queries)}
            else:
                res = {"mode": mode, **synthetic_store(n, tmp, queries)}
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        out.append(res)
    return out


def table(results: list[dict]) -> str:
    """The results as a text table for people."""
    head = f"{'rows':>10} {'mode':>7} {'build s':>8} {'open s':>6} {'update 2k s':>11} {'p50 ms':>7} {'p99 ms':>7} " \
           f"{'recall@10':>9} {'exact ms':>8} {'index MB':>8} {'RSS MB':>7}"
    lines = [head]
    for r in results:
        lines.append(f"{r['rows']:>10,} {r['mode']:>7} {r['build_s']:>8} {r['cold_load_s']:>6} {r['update_2000_s']:>11} "
                     f"{r['query_p50_ms']:>7} {r['query_p99_ms']:>7} {r['recall_at_10']:>9} {r['exact_ms_per_query']:>8} "
                     f"{r['lists_bytes_in_memory'] / 1e6:>8.1f} {r['rss_mb'] or '-':>7}")
    return "\n".join(lines)
