"""Benchmark: does the int8 feature space classify as well as float32? Same images, same folds, 3 seeds.

    .venv/bin/python benchmarks/int8_quality.py --float32 /work/stores --int8 /work/stores_int8 [--seeds 0 1 2] [--json]

Each folder holds ``<task>.h5`` stores of ../shared/data/<task>/{positive,negative} (labels ``positive``
and ``negative``), one extracted with ``--precision float32`` and one with ``--precision int8``. Rows are
matched by content sha256, so both spaces see exactly the same images in the same folds. Prints, per
task and method, mean accuracy and ROC AUC over the seeds for both spaces and their difference (the
target: within 0.01), and the per-image cosine between the two spaces.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path

import numpy as np

TASKS = ("food-vs-snapshots", "nature-vs-urban", "camera-vs-screenshot", "film-grade", "sharp-vs-soft")
METHODS = ("two-class", "one-class", "nearest-positives", "head")


def load(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from stylesift import FeatureStore

    with FeatureStore(path) as st:
        X, labels, sha = st.load(["positive", "negative"])
    order = np.argsort(sha)
    return X[order], labels[order] == "positive", sha[order]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--float32", type=Path, required=True)
    parser.add_argument("--int8", type=Path, required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    from stylesift import compare

    flags = sorted({f for line in open("/proc/cpuinfo") if line.startswith("flags") for f in line.split()[2:]
                    if f in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_int8")})
    out = {"machine": f"{platform.machine()}, {os.cpu_count()} CPUs ({' '.join(flags)}), load {os.getloadavg()[0]:.1f}",
           "seeds": args.seeds, "folds": args.folds, "tasks": {}}
    for task in TASKS:
        Xf, yf, sf = load(args.float32 / f"{task}.h5")
        Xi, yi, si = load(args.int8 / f"{task}.h5")
        common = np.intersect1d(sf, si)
        Xf, yf = Xf[np.isin(sf, common)], yf[np.isin(sf, common)]
        Xi, yi = Xi[np.isin(si, common)], yi[np.isin(si, common)]
        assert (yf == yi).all()
        cos = np.sum(Xf * Xi, 1) / (np.linalg.norm(Xf, axis=1) * np.linalg.norm(Xi, axis=1))
        row = {"images": int(len(common)), "cosine_min": float(cos.min()), "cosine_mean": float(cos.mean()),
               "below_0_99": int((cos < 0.99).sum()), "methods": {}}
        for space, X in (("float32", Xf), ("int8", Xi)):
            for seed in args.seeds:
                result = compare(X, yf, folds=args.folds, methods=list(METHODS), random_state=seed).to_dict()["methods"]
                for m, s in result.items():
                    acc = row["methods"].setdefault(m, {}).setdefault(space, {"accuracy": [], "roc_auc": []})
                    acc["accuracy"].append(s["accuracy"])
                    acc["roc_auc"].append(s["roc_auc"])
        for m, spaces in row["methods"].items():
            for space in spaces.values():
                space["accuracy"], space["roc_auc"] = float(np.mean(space["accuracy"])), float(np.mean(space["roc_auc"]))
            spaces["difference"] = {k: spaces["int8"][k] - spaces["float32"][k] for k in ("accuracy", "roc_auc")}
            d = spaces["difference"]
            print(f"{task:<22} {m:<18} float32 {spaces['float32']['accuracy']:.4f}/{spaces['float32']['roc_auc']:.4f}  "
                  f"int8 {spaces['int8']['accuracy']:.4f}/{spaces['int8']['roc_auc']:.4f}  "
                  f"diff {d['accuracy']:+.4f}/{d['roc_auc']:+.4f}", flush=True)
        print(f"{task:<22} cosine min {row['cosine_min']:.4f}, mean {row['cosine_mean']:.4f}, "
              f"{row['below_0_99']} of {row['images']} below 0.99", flush=True)
        out["tasks"][task] = row
    worst = max(abs(v) for t in out["tasks"].values() for m in t["methods"].values() for v in m["difference"].values())
    out["largest_difference"] = worst
    print(f"largest |difference| over tasks, methods, accuracy and ROC AUC: {worst:.4f} (target ≤ 0.01); {out['machine']}")
    if args.json:
        print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
