"""Measure the similarity index: build, update per 2,000 rows, warm query p50/p99, recall@10, memory.

Synthetic rows shaped like pooled CNN features (non-negative, a fast-decaying spectrum, clusters), made
deterministically block by block so a million 2048-d rows never sit in memory as float32.

Two modes:

- ``--mode store`` (up to ~100k rows): a real FeatureStore is written, and the index runs on it as
  ``stylesift similar`` does (re-ranking reads the store's float32 rows).
- ``--mode arrays`` (1M rows): writing a million-row store takes long and 8 GB of disk, so the rows
  live in a float16 memory-mapped file behind the store's read interface; everything else is the same
  code. ``--compare`` also times faiss IVF/HNSW and usearch HNSW on the same projected vectors.

Run: ``python benchmarks/index_bench.py --mode store --rows 100000`` and
``python benchmarks/index_bench.py --mode arrays --rows 1000000 --compare``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import resource
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from stylesift.featurizer.search import SimilarityIndex, normalise
from stylesift.featurizer.search import index as ix

DIM = 2048
BLOCK = 4096
FP = {"backbone": "bench", "feature_dim": DIM, "dtype": "float32"}


def make_block(b: int, dim: int = DIM, rows: int = BLOCK) -> np.ndarray:
    """Block ``b`` of the synthetic rows (the same numbers every time)."""
    basis = np.random.default_rng(12345)
    W = basis.standard_normal((128, dim)).astype(np.float32) / np.sqrt(128)
    centres = basis.standard_normal((512, 128)).astype(np.float32) * (1.0 / np.sqrt(np.arange(1, 129)))[None, :] * 3
    rng = np.random.default_rng(b)
    latent = centres[rng.integers(0, 512, rows)] + rng.standard_normal((rows, 128)).astype(np.float32) \
        * (1.0 / np.sqrt(np.arange(1, 129)))[None, :]
    X = latent @ W + 0.35 * rng.standard_normal((rows, dim)).astype(np.float32)
    return np.maximum(X, 0).astype(np.float32)


def sha_of(i: int) -> str:
    return f"{i:064x}"


class ArrayStore:
    """The read interface the index uses, over a float16 memory-mapped matrix (``visible`` rows shown)."""

    def __init__(self, path: Path, data: np.ndarray, visible: int):
        self.path, self._data, self.visible = path, data, visible
        self.feature_sets = {"pooled": FP}
        self.sha256 = np.array([sha_of(i) for i in range(len(data))])

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


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def percentile_ms(times, q):
    return round(float(np.percentile(np.asarray(times) * 1000, q)), 2)


def measure(store, reopen, n_queries: int, seed: int = 0) -> dict:
    """Build, query warm, recall against exact, then one 2,000-row update (``reopen`` shows the new rows)."""
    index = SimilarityIndex(store.path)
    report, build_s = timed(lambda: index.update(store))
    _, load_s = timed(index.load)
    rng = np.random.default_rng(seed)
    qrows = rng.choice(len(store), n_queries, replace=False)
    Q = store.features(np.sort(qrows))
    qrows = np.sort(qrows)
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
    return {"rows": len(store), "build_s": round(build_s, 2), "build": {k: v for k, v in report.items() if k != "seconds"},
            "cold_load_s": round(load_s, 2), "query_p50_ms": percentile_ms(times, 50), "query_p99_ms": percentile_ms(times, 99),
            "recall_at_10": round(recall, 4), "exact_ms_per_query": round(exact_s / n_queries * 1000, 1),
            "update_2000_s": round(update_s, 3), "update": {k: v for k, v in update.items() if k != "seconds"},
            "reload_after_update_s": round(reload_s, 2),
            "index_bytes_on_disk": sum(p.stat().st_size for p in index.folder.iterdir()),
            "lists_bytes_in_memory": int(index.load()[1].vectors.nbytes + index.load()[1].rows.nbytes),
            "ru_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
            "nprobe": ix.NPROBE,
            "rerank": ix.RERANK_LARGE if len(store) >= ix.LARGE_ROWS else ix.RERANK}


def store_mode(rows: int, tmp: Path, n_queries: int) -> dict:
    from stylesift.featurizer.store import FeatureStore

    path = tmp / "bench.h5"
    t = time.perf_counter()
    with FeatureStore(path, "a", fingerprint=FP) as st:
        for b in range((rows + 2000 + BLOCK - 1) // BLOCK):
            X = make_block(b)
            ids = [hashlib.sha256(f"row {b * BLOCK + i}".encode()).hexdigest() for i in range(BLOCK)]
            take = min(BLOCK, rows - b * BLOCK)
            if take <= 0:
                break
            st.add(ids[:take], X[:take], [[f"/bench/{b}/{i}.jpg"] for i in range(take)])
    written = time.perf_counter() - t
    extra = make_block(10_000_000)[:2000]

    def reopen():
        with FeatureStore(path, "a") as w:
            w.add([hashlib.sha256(f"extra {i}".encode()).hexdigest() for i in range(2000)], extra,
                  [["/bench/extra.jpg"]] * 2000)
        return FeatureStore(path)

    out = measure(FeatureStore(path), reopen, n_queries)
    out["store_write_s"] = round(written, 1)
    return out


def arrays_mode(rows: int, tmp: Path, n_queries: int, compare: bool) -> dict:
    total = rows + 2000
    data = np.lib.format.open_memmap(tmp / "rows.npy", "w+", np.float16, (total, DIM))
    t = time.perf_counter()
    for b in range((total + BLOCK - 1) // BLOCK):
        block = make_block(b)
        end = min(total, (b + 1) * BLOCK)
        data[b * BLOCK:end] = block[: end - b * BLOCK]
    data.flush()
    made = time.perf_counter() - t
    store = ArrayStore(tmp / "bench.h5", data, rows)
    out = measure(store, lambda: setattr(store, "visible", total) or store, n_queries)
    out["generate_s"] = round(made, 1)
    out["note"] = "rows in a float16 memmap behind the store's read interface (not an HDF5 store)"
    if compare:
        out["compare"] = compare_libraries(SimilarityIndex(store.path), store, n_queries)
    return out


def compare_libraries(index: SimilarityIndex, store, n_queries: int) -> dict:
    """faiss IVF-Flat / HNSW and usearch HNSW on the same projected vectors, same re-rank: query time and recall."""
    _, lists = index.load()
    Z, rows = lists.vectors, lists.rows
    q = lists.quantizer
    rng = np.random.default_rng(1)
    qrows = rng.choice(len(rows), n_queries, replace=False)
    Qfull = normalise(store.features(np.sort(rows[qrows])))
    Qz = q.project(Qfull).astype(np.float32)
    exact = index.search(store, Qfull, 10, exclude=np.sort(rows[qrows]), use_index=False)
    out = {}

    def run(name, build, query):
        try:
            obj, build_s = timed(build)
        except Exception as exc:  # noqa: BLE001 - a library missing or failing is a result here
            out[name] = {"error": repr(exc)}
            return
        times, rec = [], []
        for i in range(n_queries):
            (cand, t) = timed(lambda i=i: query(obj, Qz[i]))
            cand = rows[cand[cand >= 0]]
            t2 = time.perf_counter()
            cand = np.sort(cand[cand != np.sort(rows[qrows])[i]])
            sims = normalise(store.features(cand)) @ Qfull[i]
            best = cand[np.argsort(-sims)[:10]]
            times.append(t + time.perf_counter() - t2)
            rec.append(len(np.intersect1d(best, exact[i][0])) / 10)
        out[name] = {"build_s": round(build_s, 1), "query_p50_ms": percentile_ms(times, 50),
                     "query_p99_ms": percentile_ms(times, 99), "recall_at_10": round(float(np.mean(rec)), 4)}

    try:
        import faiss

        def ivf():
            quant = faiss.IndexFlatIP(Z.shape[1])
            idx = faiss.IndexIVFFlat(quant, Z.shape[1], q.nlist, faiss.METRIC_INNER_PRODUCT)
            idx.train(Z[:: max(1, len(Z) // 65536)])
            idx.add(Z)
            idx.nprobe = ix.NPROBE
            return idx

        run("faiss_ivf_flat", ivf, lambda o, z: o.search(z[None, :], ix.RERANK_LARGE)[1][0])

        def hnsw():
            idx = faiss.IndexHNSWFlat(Z.shape[1], 32, faiss.METRIC_INNER_PRODUCT)
            idx.hnsw.efConstruction = 80
            idx.add(Z)
            idx.hnsw.efSearch = 128
            return idx

        run("faiss_hnsw32", hnsw, lambda o, z: o.search(z[None, :], ix.RERANK_LARGE)[1][0])
    except ImportError as exc:
        out["faiss"] = {"error": repr(exc)}
    try:
        from usearch.index import Index

        def us():
            idx = Index(ndim=Z.shape[1], metric="ip", dtype="f16", connectivity=16, expansion_add=64, expansion_search=128)
            idx.add(np.arange(len(Z)), Z)
            return idx

        run("usearch_hnsw_f16", us, lambda o, z: np.asarray(o.search(z, ix.RERANK_LARGE).keys, np.int64))
    except ImportError as exc:
        out["usearch"] = {"error": repr(exc)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mode", choices=["store", "arrays"], default="store")
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--compare", action="store_true", help="also time faiss and usearch (arrays mode)")
    ap.add_argument("--nprobe", type=int, default=ix.NPROBE)
    ap.add_argument("--rerank", type=int, default=None, help="candidates re-ranked (default: the index's rule)")
    ap.add_argument("--tmp", type=Path, default=None, help="folder for the bench files (default: a temp folder)")
    args = ap.parse_args()
    ix.NPROBE = args.nprobe
    if args.rerank is not None:
        ix.RERANK = ix.RERANK_LARGE = args.rerank
    tmp = Path(tempfile.mkdtemp(prefix="index-bench-", dir=args.tmp))
    try:
        res = store_mode(args.rows, tmp, args.queries) if args.mode == "store" else \
            arrays_mode(args.rows, tmp, args.queries, args.compare)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps({"mode": args.mode, **res}, indent=1))


if __name__ == "__main__":
    main()
