"""Measure the similarity index: build, update per 2,000 rows, warm query p50/p99, recall@10, memory.

Synthetic rows shaped like pooled CNN features (non-negative, a fast-decaying spectrum, clusters), made
deterministically block by block so a million 2048-d rows never sit in memory as float32.

Two modes:

- ``--mode store`` (up to ~100k rows): a real FeatureStore is written, and the index runs on it as
  ``stylesift similar`` does (re-ranking reads the store's float32 rows).
- ``--mode arrays`` (1M rows): writing a million-row store takes long and 8 GB of disk, so the rows
  live in a float16 memory-mapped file behind the store's read interface; everything else is the same
  code. ``--compare`` also times faiss IVF/HNSW and usearch HNSW on the same projected vectors.

The measuring is :mod:`stylesift.featurizer.search.bench` (``stylesift bench index``); this script adds
``--compare`` (faiss and usearch, which stylesift does not depend on) and the index's knobs.

Run: ``python benchmarks/index_bench.py --mode store --rows 100000`` and
``python benchmarks/index_bench.py --mode arrays --rows 1000000 --compare``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from stylesift.featurizer.search import SimilarityIndex, bench, normalise
from stylesift.featurizer.search import index as ix
from stylesift.featurizer.search.bench import percentile_ms, timed


def arrays_mode(rows: int, tmp: Path, n_queries: int, compare: bool) -> dict:
    res = bench.synthetic_arrays(rows, tmp, n_queries)
    if compare:
        total = rows + bench.UPDATE_ROWS
        data = np.load(tmp / "rows.npy", mmap_mode="r")
        res["compare"] = compare_libraries(SimilarityIndex(tmp / "bench.h5"), bench.ArrayStore(tmp / "bench.h5", data, total),
                                           n_queries)
    return res


def compare_libraries(index: SimilarityIndex, store, n_queries: int) -> dict:
    """faiss IVF-Flat / HNSW and usearch HNSW on the same projected vectors, same re-rank: query time and recall."""
    _, lists = index.load()
    Z, rows = lists.vectors(), lists.rows()
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
        res = bench.synthetic_store(args.rows, tmp, args.queries) if args.mode == "store" else \
            arrays_mode(args.rows, tmp, args.queries, args.compare)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps({"mode": args.mode, **res}, indent=1))


if __name__ == "__main__":
    main()
