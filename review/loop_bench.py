"""The review loop simulated on a labelled store: suggestions against random picks, round by round.

Start from ``start`` positive and ``start`` negative labels; each round trains the method on the
labels so far (the same estimator `train` fits), then adds ``per_round`` labels taken from the
ground truth, chosen either by :func:`~stylesift.review.suggest.suggest` (what ``stylesift suggest``
lists) or at random. After every training, accuracy (at the model's own threshold) and ROC AUC are
measured twice:

- on the **unlabelled rest** (every row not labelled yet), as a team would see it;
- on a **fixed held-out split** that is never offered for labelling. Suggestions take the hardest
  images out of the "rest", which flatters them there; the held-out split compares both
  strategies on the same images.
"""

from __future__ import annotations

import time

import numpy as np
from sklearn.metrics import roc_auc_score


def _metrics(est, X, y) -> dict:
    if len(y) == 0 or y.all() or not y.any():
        return {"accuracy": None, "roc_auc": None}
    scores = est.score_samples(X)
    return {"accuracy": round(float(np.mean((scores >= est.threshold_) == y)), 4),
            "roc_auc": round(float(roc_auc_score(y, scores)), 4)}


def simulate(X: np.ndarray, y: np.ndarray, *, strategy: str = "suggest", method: str = "two-class", start: int = 10,
             rounds: int = 5, per_round: int = 20, seed: int = 0, held_out: float = 0.3) -> list[dict]:
    """One run of the loop; returns one dict per training (``labels``, ``rest`` and ``held_out`` metrics, ``seconds``).

    Parameters
    ----------
    X : ndarray of shape (n, d)
    y : ndarray of bool, shape (n,)
        Ground truth (True = positive).
    strategy : {"suggest", "random"}
    """
    from stylesift.classifiers.methods import get_method
    from stylesift.review.suggest import suggest

    rng = np.random.default_rng(seed)
    n = len(y)
    test = np.zeros(n, bool)
    for cls in (True, False):
        idx = np.flatnonzero(y == cls)
        test[rng.choice(idx, int(round(held_out * len(idx))), replace=False)] = True
    pool = np.flatnonzero(~test)
    labelled = np.zeros(n, bool)
    for cls in (True, False):
        labelled[rng.choice(pool[y[pool] == cls], start, replace=False)] = True
    out = []
    for r in range(rounds + 1):
        est = get_method(method).make(n_jobs=1, random_state=seed)
        started = time.perf_counter()
        est.fit(X[labelled], y[labelled])
        seconds = time.perf_counter() - started
        rest = ~labelled & ~test
        out.append({"round": r, "labels": int(labelled.sum()), "seconds": round(seconds, 3),
                    "rest": _metrics(est, X[rest], y[rest]), "held_out": _metrics(est, X[test], y[test])})
        if r == rounds:
            break
        candidates = np.flatnonzero(rest)
        if strategy == "suggest":
            picks = suggest(X[candidates], est.score_samples(X[candidates]), est.threshold_, per_round,
                            labelled=X[labelled])
            chosen = candidates[[p.row for p in picks]]
        elif strategy == "random":
            chosen = rng.choice(candidates, min(per_round, len(candidates)), replace=False)
        else:
            raise ValueError(f"strategy must be 'suggest' or 'random', not {strategy!r}")
        labelled[chosen] = True
    return out


def bench_loop(stores: dict[str, object], *, positive: str = "positive", negative: str = "negative",
               method: str = "two-class", seeds: int = 3, rounds: int = 5, per_round: int = 20, start: int = 10,
               feature_set: str = "pooled", progress=None) -> dict:
    """:func:`simulate` for both strategies and ``seeds`` seeds on each store (task name -> store path).

    Returns ``{"tasks": {task: {"suggest": [...], "random": [...]}}}`` where each list holds, per
    round, the mean over seeds of the labels and of each metric (and every seed's numbers).
    """
    from stylesift.classifiers.train import load_labelled

    result = {"method": method, "feature_set": feature_set, "seeds": seeds, "rounds": rounds, "per_round": per_round, "start": start, "tasks": {}}
    for task, store in stores.items():
        data = load_labelled(store, positive, negative, feature_set=feature_set)
        X, y = data.X, data.positive
        task_out = {"rows": int(len(y)), "positives": int(y.sum())}
        for strategy in ("suggest", "random"):
            runs = []
            for seed in range(seeds):
                runs.append(simulate(X, y, strategy=strategy, method=method, start=start, rounds=rounds,
                                     per_round=per_round, seed=seed))
                if progress:
                    progress(task, strategy, seed)
            task_out[strategy] = [_mean_round([run[r] for run in runs]) for r in range(rounds + 1)]
        result["tasks"][task] = task_out
    return result


def _mean_round(rows: list[dict]) -> dict:
    out = {"labels": rows[0]["labels"], "seconds": round(float(np.mean([r["seconds"] for r in rows])), 3)}
    for part in ("rest", "held_out"):
        out[part] = {}
        for m in ("accuracy", "roc_auc"):
            vals = [r[part][m] for r in rows if r[part][m] is not None]
            out[part][m] = round(float(np.mean(vals)), 4) if vals else None
            out[part][f"{m}_seeds"] = [r[part][m] for r in rows]
    return out
