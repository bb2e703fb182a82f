"""Compare candidate feature sets from the style cache with the project's compare (5 folds, mean of seeds).

Usage: python benchmarks/style_eval.py CACHE_DIR TASK[,TASK] CANDIDATE[,CANDIDATE] [--methods two-class,head]
       [--seeds 0,1,2] [--json OUT.jsonl]

A candidate is blocks joined by '+', optionally followed by ':transform' (raw, blockl2, sqrt, log),
e.g. ``s1_mean+s1_std+s2_mean+s2_std:blockl2``. Shorthand: ``S123`` = mean+std of s1..s3, ``M123`` =
means only. Developer research tool (issue #14).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np


def expand(name: str) -> list[str]:
    out = []
    for part in name.split("+"):
        m = re.fullmatch(r"([SMDKA])(\d+)", part)
        if m:
            stats = {"S": ["mean", "std"], "M": ["mean"], "D": ["std"], "K": ["mean", "std", "skew"],
                     "A": ["mean", "std", "active"]}[m.group(1)]
            out += [f"s{d}_{s}" for d in m.group(2) for s in stats]
        else:
            out.append(part)
    return out


def features(cache: Path, candidate: str) -> np.ndarray:
    name, _, transform = candidate.partition(":")
    blocks = []
    for b in expand(name):
        x = np.load(cache / f"{b}.npy").astype(np.float32)
        if transform == "sqrt":
            x = np.sign(x) * np.sqrt(np.abs(x))
        elif transform == "log" and b.endswith(("_std", "_mean")):
            x = np.log(np.abs(x) + 1e-3)
        if transform == "blockl2" or transform == "sqrtl2":
            if transform == "sqrtl2":
                x = np.sign(x) * np.sqrt(np.abs(x))
            x = x / (np.linalg.norm(x, axis=1, keepdims=True) + 1e-8)
        elif transform == "zs":  # per-block standardised with the task's own statistics (upper bound, leaks)
            x = (x - x.mean(0)) / (x.std(0) + 1e-6)
        blocks.append(x)
    return np.concatenate(blocks, axis=1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("cache")
    ap.add_argument("tasks")
    ap.add_argument("candidates")
    ap.add_argument("--methods", default="two-class,head")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--json")
    args = ap.parse_args()
    from stylesift.classifiers.compare import compare

    methods = args.methods.split(",")
    seeds = [int(s) for s in args.seeds.split(",")]
    for task in args.tasks.split(","):
        cache = Path(args.cache) / task
        y = np.load(cache / "labels.npy")
        for cand in args.candidates.split(","):
            X = features(cache, cand)
            t0 = time.time()
            res = {m: {"accuracy": [], "roc_auc": []} for m in methods}
            for seed in seeds:
                c = compare(X, y, folds=5, methods=methods, n_jobs=1, random_state=seed)
                for m in methods:
                    s = c.summary(m)
                    res[m]["accuracy"].append(s["accuracy"])
                    res[m]["roc_auc"].append(s["roc_auc"])
            line = {"task": task, "candidate": cand, "dim": X.shape[1], "seconds": round(time.time() - t0, 1)}
            for m in methods:
                line[m] = [round(float(np.mean(res[m]["accuracy"])), 4), round(float(np.mean(res[m]["roc_auc"])), 4)]
            print(json.dumps(line), flush=True)
            if args.json:
                with open(args.json, "a") as fh:
                    fh.write(json.dumps(line) + "\n")


if __name__ == "__main__":
    main()
