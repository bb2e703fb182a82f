"""Benchmark: `stylesift train` as a whole process (imports, store load, fit, bundle save) for every method.

    .venv/bin/python benchmarks/train_process.py --stores food.h5 nature.h5 camera.h5 --positive good \\
        --negative plain --out /tmp/train-process [--repeat 2] [--methods pu head ...]

Builds two stores of jittered copies of the given stores' rows (as benchmarks/classifiers.py makes
its vectors: each value times 1 + 0.05 N(0, 1), absolute value): 10,000 labelled rows, and 1,000
labelled positives + 100,000 unlabelled rows for ``pu``. Then runs `stylesift train` under
``/usr/bin/time`` and prints wall, user and system seconds, peak memory and the load average before
each run (the issue #20 targets: ≤ 7 s for 10,000 vectors, ≤ 10 s for pu on 101,000 rows).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
METHODS = ("two-class", "one-class", "nearest-positives", "head")


def _jitter(X, rows, rng):
    return np.abs(X[rows] * (1 + 0.05 * rng.standard_normal((len(rows), X.shape[1])).astype(np.float32)))


def build(stores, positive, negative, out: Path) -> tuple[Path, Path]:
    from stylesift.featurizer.store import FeatureStore

    Xs, ys = [], []
    for s in stores:
        X, labels, _ = FeatureStore(s).load([positive, negative])
        Xs.append(X)
        ys.append(labels == positive)
    X, y, fp = np.vstack(Xs), np.concatenate(ys), FeatureStore(stores[0]).fingerprint
    rng = np.random.default_rng(0)

    def write(path, parts):
        with FeatureStore(path, "a", fingerprint=fp) as st:
            for prefix, Z, label in parts:
                for a in range(0, len(Z), 10000):
                    ids = range(a, min(len(Z), a + 10000))
                    st.add([hashlib.sha256(f"{prefix}{i}".encode()).hexdigest() for i in ids], Z[a:a + 10000],
                           [[f"/jitter/{prefix}{i}.jpg"] for i in ids], label=label)

    labelled, feed = out / "train10k.h5", out / "pu100k.h5"
    if not labelled.with_suffix(".h5.parts").exists():
        rows = rng.choice(len(X), 10000)
        Z = _jitter(X, rows, rng)
        write(labelled, [("p", Z[y[rows]], positive), ("n", Z[~y[rows]], negative)])
    if not feed.with_suffix(".h5.parts").exists():
        write(feed, [("P", _jitter(X, rng.choice(np.flatnonzero(y), 1000), rng), positive),
                     ("U", _jitter(X, rng.choice(len(X), 100000), rng), None)])
    return labelled, feed


def timed(args: list[str]) -> dict:
    load = os.getloadavg()[0]
    run = subprocess.run(["/usr/bin/time", "-v", str(REPO / ".venv/bin/stylesift"), *args], capture_output=True, text=True)
    if run.returncode:
        raise SystemExit(run.stderr[-2000:])
    field = lambda name: re.search(rf"{name}: (.*)", run.stderr).group(1)  # noqa: E731
    m, s = field(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\)").rsplit(":", 1)
    summary = json.loads(run.stdout)
    return {"wall": round(float(m) * 60 + float(s), 2), "user": float(field("User time \\(seconds\\)")),
            "sys": float(field("System time \\(seconds\\)")), "max_rss_mb": int(field("Maximum resident set size \\(kbytes\\)")) // 1024,
            "fit_seconds": summary["fit_seconds"], "load_before": round(load, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stores", nargs="+", type=Path, required=True)
    parser.add_argument("--positive", default="positive")
    parser.add_argument("--negative", default="negative")
    parser.add_argument("--out", type=Path, required=True, help="folder for the jittered stores and the bundles")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--methods", nargs="+", default=[*METHODS, "pu"], choices=[*METHODS, "pu"])
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    labelled, feed = build(args.stores, args.positive, args.negative, args.out)
    result = {}
    for method in args.methods:
        store, negative = (feed, []) if method == "pu" else (labelled, ["--negative", args.negative])
        result[method] = [timed(["train", "--store", str(store), "--positive", args.positive, *negative, "--method", method,
                                 "--out", str(args.out / f"{method}.ssmodel"), "--json"]) for _ in range(args.repeat)]
        print(method, result[method], flush=True)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
