"""Benchmark: the tuned methods' `train` time on 10,000 vectors and their cross-validated quality, against an
earlier revision of the same code, in one run (so a loaded machine slows both alike).

    .venv/bin/python benchmarks/train_speed.py --stores /work/stores/{food-vs-snapshots,nature-vs-urban,camera-vs-screenshot}.h5 \\
        --baseline 415144a [--folds 5] [--json]

``--baseline REV`` loads ``classifiers/one_class.py`` and ``classifiers/two_class.py`` as they were at
git revision REV (the code before the fast searches) beside today's. 10,000 vectors are the stores'
real vectors plus jittered copies, as in benchmarks/classifiers.py. Quality: accuracy at each
model's threshold and ROC AUC, mean over the same stratified folds for old and new.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def _machine() -> str:
    flags = ""
    try:
        cpu = Path("/proc/cpuinfo").read_text()
        have = set(next(line for line in cpu.splitlines() if line.startswith("flags")).split())
        flags = " ".join(f for f in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile") if f in have)
    except (OSError, StopIteration):
        pass
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs ({flags}), "
            f"load average {os.getloadavg()[0]:.1f}")


def _old_module(rev: str, name: str, tmp: Path):
    source = subprocess.run(["git", "-C", str(REPO), "show", f"{rev}:classifiers/{name}.py"], check=True,
                            capture_output=True, text=True).stdout
    path = tmp / f"baseline_{name}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(f"baseline_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _score(est, X):
    from stylesift.classifiers.base import StyleScorer

    # Today's methods score with score_samples; the baseline's scored with decision_function.
    return est.score_samples(X) if isinstance(est, StyleScorer) else est.decision_function(X)


def _quality(make, X, y, folds: int) -> dict:
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold

    acc, auc = [], []
    for train, test in StratifiedKFold(folds, shuffle=True, random_state=0).split(X, y):
        est = make().fit(X[train], y[train])
        scores = _score(est, X[test])
        acc.append(float(np.mean((scores >= est.threshold_) == y[test])))
        auc.append(float(roc_auc_score(y[test], scores)))
    return {"accuracy": round(float(np.mean(acc)), 4), "roc_auc": round(float(np.mean(auc)), 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stores", nargs="+", type=Path, required=True)
    parser.add_argument("--baseline", required=True, help="git revision of the code to compare with")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--vectors", type=int, default=10000)
    parser.add_argument("--skip-quality", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    spec = importlib.util.spec_from_file_location("bench_classifiers", REPO / "benchmarks" / "classifiers.py")
    bench_classifiers = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench_classifiers)
    _vectors = bench_classifiers._vectors

    from stylesift.classifiers import one_class, two_class
    from stylesift.classifiers.distance import NearestPositives
    from stylesift.classifiers.head import OutputLayerHead
    from stylesift.featurizer.store import FeatureStore

    tmp = Path(tempfile.mkdtemp(prefix="stylesift-bench-"))
    old_one, old_two = _old_module(args.baseline, "one_class", tmp), _old_module(args.baseline, "two_class", tmp)
    methods = {
        "two-class": (lambda: two_class.TwoClassSVM(), lambda: old_two.TwoClassSVM()),
        "one-class": (lambda: one_class.OneClassSVMModel(), lambda: old_one.OneClassSVMModel()),
        "nearest-positives": (lambda: NearestPositives(), None),
        "head": (lambda: OutputLayerHead(), None),
    }
    result = {"machine": _machine(), "baseline": args.baseline, "train_seconds": {}, "quality": {}}
    X, y = _vectors(args.stores, args.vectors)
    for name, (new, old) in methods.items():
        row = {}
        for label, make in (("new", new), ("baseline", old)):
            if make is None:
                continue
            t0, c0 = time.perf_counter(), time.process_time()
            make().fit(X, y)
            row[label] = round(time.perf_counter() - t0, 2)
            row[f"{label}_cpu"] = round(time.process_time() - c0, 2)  # all threads; robust to other load
        if "baseline" in row:
            row["speed-up"] = round(row["baseline"] / row["new"], 1)
        result["train_seconds"][name] = row
        print(f"train on {len(X)} vectors, {name}: {row}", file=sys.stderr, flush=True)
    result["machine_after_timing"] = _machine()
    if not args.skip_quality:
        for store in args.stores:
            Xs, labels, _ = FeatureStore(store).load(["positive", "negative"])
            ys = labels == "positive"
            task = {}
            for name in ("two-class", "one-class"):
                new, old = methods[name]
                task[name] = {"new": _quality(new, Xs, ys, args.folds), "baseline": _quality(old, Xs, ys, args.folds)}
                print(f"{store.stem} {name}: {task[name]}", file=sys.stderr, flush=True)
            result["quality"][store.stem] = task
    result["machine_after"] = _machine()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
