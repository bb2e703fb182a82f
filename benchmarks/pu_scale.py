"""Benchmark: PUClassifier at feed scale (1,000 positives + 100,000 unlabelled rows), ranked on fresh rows.

    .venv/bin/python benchmarks/pu_scale.py --stores food.h5 nature.h5 camera.h5 --positive good \\
        --negative plain [--prior 0.38]

The stores' rows are split in two halves by a seed. From half A: 1,000 labelled positives and
100,000 unlabelled rows with ``--prior`` of them positive, all jittered copies (each value times
1 + 0.05 N(0, 1), absolute value, as benchmarks/train_process.py makes them). 20,000 jittered rows of
half B, images no model saw, are the fresh sample. Prints, per configuration, the fit's seconds, ROC
AUC and accuracy (at the model's own threshold) on the fresh sample, and the prior estimate.

The unlabelled rows repeat a few thousand originals, so out-of-fold scores say little here: the
fresh half is the measure. `compare` (distinct images, small stores) is the other half of the picture.
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

CONFIGS = {
    "first fit only, max_background 20000": dict(reweight=False, max_background=20000),
    "first fit only, max_background 5000": dict(reweight=False, max_background=5000),
    "refit, max_background 20000": dict(max_background=20000),
    "refit (defaults)": dict(),
}


def main() -> None:
    from stylesift.classifiers.pu import PUClassifier
    from stylesift.featurizer.store import FeatureStore

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stores", nargs="+", type=Path, required=True)
    parser.add_argument("--positive", default="positive")
    parser.add_argument("--negative", default="negative")
    parser.add_argument("--prior", type=float, default=0.38, help="share of positives among the unlabelled rows")
    args = parser.parse_args()
    Xs, ys = [], []
    for s in args.stores:
        X, labels, _ = FeatureStore(s).load([args.positive, args.negative])
        Xs.append(X)
        ys.append(labels == args.positive)
    X, y = np.vstack(Xs), np.concatenate(ys)
    rng = np.random.default_rng(0)
    half = rng.random(len(X)) < 0.5
    A, B = np.flatnonzero(half), np.flatnonzero(~half)

    def jitter(rows):
        return np.abs(X[rows] * (1 + 0.05 * rng.standard_normal((len(rows), X.shape[1])).astype(np.float32)))

    n_pos = int(args.prior * 100_000)
    unlabelled = np.concatenate([rng.choice(A[y[A]], n_pos), rng.choice(A[~y[A]], 100_000 - n_pos)])
    Xtr = np.vstack([jitter(rng.choice(A[y[A]], 1000)), jitter(unlabelled)])
    s = np.arange(len(Xtr)) < 1000
    fresh = rng.choice(B, 20_000)
    Xte, yte = jitter(fresh), y[fresh]
    print(f"{len(Xtr)} training rows ({n_pos} positives hidden among 100,000 unlabelled), {len(Xte)} fresh rows")
    for name, params in CONFIGS.items():
        started = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = PUClassifier(n_jobs=-1, **params).fit(Xtr, s)
        seconds = time.perf_counter() - started
        scores = model.score_samples(Xte)
        print(f"{name:40s} fit {seconds:5.2f} s   fresh ROC AUC {roc_auc_score(yte, scores):.4f}   "
              f"accuracy {np.mean((scores >= model.offset_) == yte):.3f}   prior {model.class_prior_:.3f}", flush=True)


if __name__ == "__main__":
    main()
