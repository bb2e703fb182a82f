"""Run every method on identical stratified folds and report the same metrics for each."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.model_selection import StratifiedKFold

from stylesift.classifiers.methods import METHODS, get_method
from stylesift.classifiers.search import positives_mask

REVIEW_BUDGET = 0.05  # share of a test split that a person reviews: precision there is "precision@5%"
METRICS = ("accuracy", "roc_auc", "average_precision", "precision_at_5pct", "recall", "specificity", "fit_seconds")


def outer_splits(positive: np.ndarray, folds: int, random_state: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """The stratified (train, test) index pairs every method is evaluated on."""
    k = min(int(folds), int(positive.sum()), int((~positive).sum()))
    if k < 2:
        raise ValueError(f"compare needs at least 2 positives and 2 negatives for {folds} folds; "
                         f"got {int(positive.sum())} and {int((~positive).sum())}")
    return list(StratifiedKFold(k, shuffle=True, random_state=random_state).split(positive, positive))


def fold_metrics(positive: np.ndarray, scores: np.ndarray, threshold: float) -> dict:
    """Metrics of one test split: ``positive`` and ``scores`` of shape ``(n,)``, selection = ``scores >= threshold``."""
    selected = scores >= threshold
    top = max(1, math.ceil(REVIEW_BUDGET * len(scores)))
    order = np.argsort(-scores, kind="stable")[:top]
    return {
        "accuracy": float(np.mean(selected == positive)),
        "roc_auc": float(roc_auc_score(positive, scores)),
        "average_precision": float(average_precision_score(positive, scores)),
        "precision_at_5pct": float(np.mean(positive[order])),
        "recall": float(np.mean(selected[positive])),
        "specificity": float(np.mean(~selected[~positive])),
    }


@dataclass
class Comparison:
    """What :func:`compare` measured.

    ``folds[name]`` lists per-fold metrics (plus ``threshold`` and ``params``); ``scores[name]`` and
    ``selected[name]`` are out-of-fold arrays of shape ``(n_samples,)`` aligned with ``positive``.
    """

    positive: np.ndarray
    folds: dict[str, list[dict]] = field(default_factory=dict)
    scores: dict[str, np.ndarray] = field(default_factory=dict)
    selected: dict[str, np.ndarray] = field(default_factory=dict)
    descriptions: dict[str, str] = field(default_factory=dict)
    test_folds: list[np.ndarray] = field(default_factory=list)
    n_folds: int = 0
    seconds: float = 0.0
    pu_hidden: float = 0.67
    positives_only: tuple[str, ...] = ()

    def summary(self, name: str) -> dict:
        """Mean of each metric over the folds, with ``"std"`` holding the spread."""
        rows = self.folds[name]
        out = {m: round(float(np.mean([r[m] for r in rows])), 4) for m in METRICS}
        out["std"] = {m: round(float(np.std([r[m] for r in rows])), 4) for m in METRICS}
        out["thresholds"] = [r["threshold"] for r in rows]
        out["params"] = [r["params"] for r in rows]
        out["description"] = self.descriptions[name]
        return out

    def best_positives_only(self) -> str | None:
        """The method that needs no negative label (one-class, pu, ...) with the best mean accuracy, then AUC."""
        names = [n for n in self.folds if n in self.positives_only]
        if not names:
            return None
        return max(names, key=lambda n: (self.summary(n)["accuracy"], self.summary(n)["roc_auc"]))

    def to_dict(self) -> dict:
        return {"methods": {name: self.summary(name) for name in self.folds},
                "folds": self.n_folds, "positives": int(self.positive.sum()),
                "negatives": int((~self.positive).sum()), "review_budget": REVIEW_BUDGET,
                "pu_hidden": self.pu_hidden, "best_positives_only": self.best_positives_only(),
                "seconds": round(self.seconds, 2)}


def compare(X, y, *, folds: int = 5, methods: Sequence[str] | None = None, target_recall: float = 0.9,
            n_jobs: int | None = -1, random_state: int = 0, pu_hidden: float = 0.67,
            progress: Callable[[int, int], None] | None = None) -> Comparison:
    """Fit and score each method on the same stratified folds.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
    y : ndarray of shape (n_samples,)
        1/True for positives, 0/False for negatives.
    folds : int
        Outer folds (capped by the smaller class).
    methods : sequence of str, optional
        Names from :data:`~classifiers.methods.METHODS` (default: all). One-class methods fit on the
        fold's positives only (their tuning may use the fold's training negatives for validation).
    target_recall : float
        Recall on held-out positives that the one-class thresholds aim for.
    pu_hidden : float
        PU methods (``pu``): the share of each training fold's positives hidden, unlabelled, among
        its negatives, which are all unlabelled too; the held-out fold is scored against the truth.
        0.67 means a third of the positives were hand-picked, the rest are somewhere in the feed.
    progress : callable, optional
        ``progress(done, total)`` after each fitted method × fold.
    """
    if not 0 <= pu_hidden < 1:
        raise ValueError(f"pu_hidden must be at least 0 and below 1 (a share of the positives), not {pu_hidden}")
    started = time.perf_counter()
    X = np.asarray(X, dtype=np.float32)
    positive = positives_mask(y, need_both=True)
    names = list(methods or METHODS)
    chosen = [get_method(n) for n in names]
    splits = outer_splits(positive, folds, random_state)
    result = Comparison(positive=positive, n_folds=len(splits), test_folds=[test for _, test in splits],
                        pu_hidden=pu_hidden, positives_only=tuple(m.name for m in chosen if not m.needs_negatives))
    rng = np.random.default_rng(random_state)
    # The same hidden positives for every PU method of a fold (identical folds, identical labels).
    labelled = []
    for train, _ in splits:
        seen = positive[train] & (rng.random(len(train)) >= pu_hidden)
        if seen.sum() < 2:  # a small fold: keep two hand-picked positives, the least PU can learn from
            seen[rng.permutation(np.flatnonzero(positive[train]))[:2]] = True
        labelled.append(seen)
    for m in chosen:
        result.folds[m.name], result.descriptions[m.name] = [], m.description
        result.scores[m.name] = np.full(len(X), np.nan)
        result.selected[m.name] = np.zeros(len(X), bool)
    done = 0
    for (train, test), seen in zip(splits, labelled):
        for m in chosen:
            recall = None if m.uses_unlabelled else target_recall  # pu: the threshold follows its prior
            est = m.make(n_jobs=n_jobs, random_state=random_state, target_recall=recall)
            t0 = time.perf_counter()
            est.fit(X[train], seen if m.uses_unlabelled else positive[train])
            fit_seconds = time.perf_counter() - t0
            scores = est.score_samples(X[test])
            row = fold_metrics(positive[test], scores, est.threshold_)
            row.update(fit_seconds=fit_seconds, threshold=float(est.threshold_), params=est.best_params_)
            result.folds[m.name].append(row)
            result.scores[m.name][test] = scores
            result.selected[m.name][test] = scores >= est.threshold_
            done += 1
            if progress:
                progress(done, len(splits) * len(chosen))
    result.seconds = time.perf_counter() - started
    return result


def compare_sets(features: dict[str, np.ndarray], y, *, folds: int = 5, methods: Sequence[str] | None = None,
                 target_recall: float = 0.9, n_jobs: int | None = -1, random_state: int = 0, pu_hidden: float = 0.67,
                 progress: Callable[[int, int], None] | None = None) -> dict[str, Comparison]:
    """:func:`compare` on each feature set of the same rows, on identical folds.

    Parameters
    ----------
    features : dict of str to ndarray of shape (n_samples, n_features_set)
        One matrix per feature set, rows aligned with ``y`` (see
        :func:`stylesift.classifiers.feature_sets.load_features`).
    y : ndarray of shape (n_samples,)
    Other parameters as in :func:`compare`; ``progress(done, total)`` counts fits over all sets.
    """
    results, offset = {}, 0
    names = list(methods or METHODS)
    total = len(features) * len(outer_splits(positives_mask(y, need_both=True), folds, random_state)) * len(names)
    for name, X in features.items():
        def step(done, _total, offset=offset):
            if progress:
                progress(offset + done, total)
        results[name] = compare(X, y, folds=folds, methods=names, target_recall=target_recall, n_jobs=n_jobs,
                                random_state=random_state, pu_hidden=pu_hidden, progress=step)
        offset += results[name].n_folds * len(names)
    return results


def best_of(results: dict[str, Comparison]) -> dict:
    """The winning (feature set, method): highest mean accuracy, ties broken by mean ROC AUC."""
    rows = [(r.summary(m)["accuracy"], r.summary(m)["roc_auc"], s, m) for s, r in results.items() for m in r.folds]
    acc, auc, feature_set, method = max(rows, key=lambda t: (t[0], t[1]))
    return {"feature_set": feature_set, "method": method, "accuracy": acc, "roc_auc": auc,
            "selected_by": "mean accuracy, then mean ROC AUC"}
