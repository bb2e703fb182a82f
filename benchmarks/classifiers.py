"""Benchmark: `train` on 1,000 and 10,000 cached vectors, and rescoring 2,000 cached images.

    .venv/bin/python benchmarks/classifiers.py --stores /work/stores/*.h5 [--json]

Each timing comes with a baseline measured in the same run on the same data, so the ratio means
something on a loaded machine: training is compared with one fit of the article default (no
search); rescoring with reading and hashing the same files, the least any rescoring can do.
10,000 vectors are the stores' real vectors plus jittered copies (features x (1 + 5% noise)).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np


def _machine() -> str:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load average {load:.1f}"


def _vectors(stores: list[Path], n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    from stylesift.featurizer.store import FeatureStore

    Xs, ys = [], []
    for s in stores:
        X, y, _ = FeatureStore(s).load(["positive", "negative"])
        Xs.append(X)
        ys.append(y == "positive")
    X, y = np.vstack(Xs), np.concatenate(ys)
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(X), n, replace=n > len(X))
    X, y = X[idx].copy(), y[idx]
    if n > len(Xs[0]):
        X *= 1 + 0.05 * rng.standard_normal(X.shape).astype(np.float32)
    return np.abs(X), y


def bench_train(stores: list[Path], sizes=(1000, 10000)) -> list[dict]:
    from stylesift.classifiers.methods import METHODS

    rows = []
    for n in sizes:
        X, y = _vectors(stores, n)
        timings = {}
        for name in ("two-class-default", "two-class", "one-class", "nearest-positives", "head"):
            est = METHODS[name].make()
            t0 = time.perf_counter()
            est.fit(X, y)
            timings[name] = time.perf_counter() - t0
        base = timings["two-class-default"]
        rows.append({"vectors": n, "seconds": {k: round(v, 2) for k, v in timings.items()},
                     "ratio_to_one_article_fit": {k: round(v / base, 2) for k, v in timings.items()}})
    return rows


def bench_rescore(stores: list[Path], n_images: int = 2000) -> dict:
    """Merge the stores into a scratch copy, train a bundle, then score ``n_images`` cached files twice."""
    from stylesift.classifiers.predict import Predictor
    from stylesift.classifiers.train import train
    from stylesift.featurizer.extract import Featurizer
    from stylesift.featurizer.store import FeatureStore

    scratch = Path(tempfile.mkdtemp(prefix="stylesift-bench-"))
    try:
        featurizer = Featurizer()
        merged = scratch / "merged.h5"
        paths = []
        with FeatureStore(merged, "a", fingerprint=featurizer.fingerprint) as out:
            for s in stores:
                st = FeatureStore(s)
                out.add(list(st.sha256), st.features(), [st.paths(i) for i in range(len(st))])
                for i, label in enumerate(st.labels):
                    out.update(st.sha256[i], label=str(label))
                paths += [st.paths(i)[0] for i in range(len(st)) if Path(st.paths(i)[0]).exists()]
        paths = sorted(paths)[:n_images]
        bundle = train(merged, "positive", "negative", "two-class")
        model = bundle.save(scratch / "model.joblib")
        t0 = time.perf_counter()
        for p in paths:
            hashlib.sha256(Path(p).read_bytes()).hexdigest()
        hash_only = time.perf_counter() - t0
        t0 = time.perf_counter()
        predictor = Predictor.load(model, merged, featurizer=featurizer)
        load_s = time.perf_counter() - t0
        timings = []
        for _ in range(2):
            t0 = time.perf_counter()
            result = predictor.score(paths)
            timings.append(time.perf_counter() - t0)
        assert len(result.rows) == len(paths) and not result.failed
        return {"images": len(paths), "load_bundle_s": round(load_s, 3), "rescore_s": [round(t, 3) for t in timings],
                "hash_only_s": round(hash_only, 3), "ratio_to_hash_only": round(min(timings) / hash_only, 2),
                "per_image_ms": round(1000 * min(timings) / len(paths), 3)}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stores", nargs="+", type=Path, required=True, help="stores with positive/negative labels")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = {"machine": _machine(), "train": bench_train(args.stores), "rescore": bench_rescore(args.stores)}
    result["machine_after"] = _machine()
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"machine: {result['machine']}")
    for row in result["train"]:
        print(f"train on {row['vectors']} vectors: " + ", ".join(f"{k} {v} s ({row['ratio_to_one_article_fit'][k]}x)"
                                                               for k, v in row["seconds"].items()))
    r = result["rescore"]
    print(f"rescore {r['images']} cached images: {r['rescore_s']} s (hashing alone {r['hash_only_s']} s, "
          f"ratio {r['ratio_to_hash_only']}), bundle load {r['load_bundle_s']} s")
    print(f"machine after: {result['machine_after']}")


if __name__ == "__main__":
    main()
