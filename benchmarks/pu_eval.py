"""Time PUClassifier.fit on 1,000 labelled positives + 100,000 unlabelled rows of 2048 features.

Random data (a small shift on the positives so that there is something to learn); prints seconds.
Not a test: run it by hand, e.g. ``.venv/bin/python benchmarks/pu_eval.py --n-jobs 2``.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np

from stylesift.classifiers.pu import PUClassifier


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--positives", type=int, default=1000)
    parser.add_argument("--unlabelled", type=int, default=100_000)
    parser.add_argument("--features", type=int, default=2048)
    parser.add_argument("--shift", type=float, default=0.05, help="mean shift of the positives, per feature")
    parser.add_argument("--n-jobs", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    n = args.positives + args.unlabelled
    X = rng.standard_normal((n, args.features), dtype=np.float32)
    X[: args.positives] += args.shift
    s = np.arange(n) < args.positives
    print(f"{args.positives} positives + {args.unlabelled} unlabelled rows x {args.features} features, n_jobs={args.n_jobs}")
    for i in range(args.repeats):
        started = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # random data: the prior is clipped at its floor
            model = PUClassifier(n_jobs=args.n_jobs).fit(X, s)
        fit = time.perf_counter() - started
        started = time.perf_counter()
        model.score_samples(X)
        score = time.perf_counter() - started
        print(f"run {i + 1}: fit {fit:.2f} s (lbfgs iterations per fold {model.n_iter_.tolist()}, "
              f"{int(model.fold_background_rows_[0])} background rows per fold), score all rows {score:.2f} s, "
              f"prior {model.class_prior_:.4f}, c {model.label_frequency_:.4f}")


if __name__ == "__main__":
    main()
