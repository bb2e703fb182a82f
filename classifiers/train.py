"""Train a bundle (or run the one-class search alone) from labelled rows of a feature store."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from stylesift.classifiers.bundle import Bundle
from stylesift.classifiers.feature_sets import DEFAULT_SET, parts, set_fingerprint, store_fingerprints
from stylesift.classifiers.methods import METHODS, get_method
from stylesift.classifiers.one_class import OneClassSVMModel
from stylesift.errors import StylesiftError


class TrainingError(StylesiftError, ValueError):
    """The store or the labels cannot give what the method needs; the message says what to do."""


@dataclass
class LabelledData:
    """Rows of a store for one positive and (optionally) one negative label.

    ``X`` float32 ``(n, d)``, ``positive`` bool ``(n,)``, ``sha256`` and ``labels`` str ``(n,)``.
    """

    X: np.ndarray
    positive: np.ndarray
    sha256: np.ndarray
    labels: np.ndarray
    fingerprint: dict
    store: str
    feature_set: str = DEFAULT_SET
    set_fingerprint: dict | None = None


def load_labelled(store, positive: str, negative: str | None = None, feature_set: str = DEFAULT_SET) -> LabelledData:
    """Read the rows labelled ``positive`` (and ``negative``) from the feature store at ``store``.

    ``feature_set`` names the features ``X`` holds: a stored set or stored sets joined by ``+``
    (see :mod:`stylesift.classifiers.feature_sets`); rows lacking one are an error naming the command that adds it.
    """
    from stylesift.featurizer.store import FeatureStore

    parts(feature_set)

    st = FeatureStore(store)
    counts = st.label_counts()
    available = ", ".join(f"{k or '(unlabelled)'} ({v})" for k, v in sorted(counts.items())) or "none"
    for label in [positive] + ([negative] if negative is not None else []):
        if counts.get(label, 0) == 0:
            raise TrainingError(f"{store}: no rows labelled {label!r}; labels there: {available}. "
                                "Label images with `stylesift extract FOLDER --label LABEL --store STORE`.")
    if negative == positive:
        raise TrainingError(f"positive and negative label are both {positive!r}; give two different labels")
    wanted = [positive] + ([negative] if negative is not None else [])
    set_fp = set_fingerprint(store_fingerprints(st), feature_set, store)
    blocks = []
    for part in parts(feature_set):
        X, labels, sha = st.load(wanted) if part == DEFAULT_SET else st.load(wanted, feature_set=part)
        blocks.append(X)
    X = blocks[0] if len(blocks) == 1 else np.concatenate(blocks, axis=1)
    return LabelledData(X=X, positive=labels == positive, sha256=sha, labels=labels,
                        fingerprint=st.fingerprint, store=str(store), feature_set=feature_set, set_fingerprint=set_fp)


def train(store, positive: str, negative: str | None = None, method: str = "two-class", *,
          target_recall: float = 0.9, n_jobs: int | None = -1, random_state: int = 0,
          feature_set: str = DEFAULT_SET) -> Bundle:
    """Fit ``method`` on the store's ``positive``/``negative`` rows and return the bundle (not yet saved).

    Parameters
    ----------
    store : path
        Feature store (read only).
    positive, negative : str
        Store labels. Without ``negative`` only methods that fit on positives alone can run.
    method : str
        A name from :data:`classifiers.methods.METHODS`.
    target_recall : float
        One-class methods: share of held-out positives to keep above the threshold.
    feature_set : str
        The features to learn from: ``pooled`` (default), ``style`` or a ``+`` concatenation such as
        ``pooled+style``; the bundle records it (summary ``feature_set``) and scoring follows it.
    """
    m = get_method(method)
    if m.needs_negatives and negative is None:
        one_class = ", ".join(k for k, v in METHODS.items() if not v.needs_negatives)
        raise TrainingError(f"method {method!r} learns from positives and negatives, but no negative label was given; "
                            f"pass --negative LABEL, or use a one-class method ({one_class}) to train on positives only")
    data = load_labelled(store, positive, negative, feature_set)
    est = m.make(n_jobs=n_jobs, random_state=random_state, target_recall=target_recall)
    started = time.perf_counter()
    est.fit(data.X, data.positive)
    seconds = time.perf_counter() - started
    used = np.ones(len(data.X), bool) if m.needs_negatives else data.positive
    summary = {
        "method": method, "description": m.description, "store": data.store,
        "positives": int(data.positive.sum()), "negatives": int((~data.positive).sum()),
        "fit_on": "positives and negatives" if m.needs_negatives else "positives only",
        "params": est.best_params_, "threshold": float(est.threshold_), "fit_seconds": round(seconds, 3),
        "notes": list(est.notes_),
        "feature_set": data.feature_set, "feature_set_fingerprint": data.set_fingerprint, "feature_dim": int(data.X.shape[1]),
    }
    search = getattr(est, "search_", None)
    if search:
        summary["search"] = search
        summary["cv"] = {k: v for k, v in search["candidates"][search["best"]].items() if k != "params"}
    validation = getattr(est, "validation_", None)
    if validation:
        summary["validation"] = {"roc_auc": validation["roc_auc"], "recall": validation["recall"],
                                 "target_recall": target_recall}
    return Bundle(pipeline=est.pipeline_, threshold=float(est.threshold_), method=method,
                  positive_label=positive, negative_label=negative, fingerprint=data.fingerprint, summary=summary,
                  train_sha256=data.sha256[used], train_labels=data.labels[used])


@dataclass
class TuneResult:
    """The one-class search: the tuned model, the article default beside it, and their validation scores."""

    tuned: OneClassSVMModel
    default: OneClassSVMModel
    data: LabelledData

    def to_dict(self) -> dict:
        s = self.tuned.search_ or {}
        return {"best": self.tuned.best_params_, "threshold": self.tuned.threshold_,
                "validation": {k: v for k, v in self.tuned.validation_.items() if k not in ("scores", "positive", "folds")},
                "article_default": {"params": self.default.best_params_,
                                    "roc_auc": self.default.validation_["roc_auc"],
                                    "threshold": self.default.threshold_},
                "candidates": s.get("candidates", []), "folds": s.get("folds"), "notes": self.tuned.notes_,
                "positives": int(self.data.positive.sum()), "negatives": int((~self.data.positive).sum())}


def tune(store, positive: str, negative: str | None = None, *, target_recall: float = 0.9, n_jobs: int | None = -1,
         random_state: int = 0) -> TuneResult:
    """Run the one-class gamma × nu × preprocessing search on its own (negatives only validate)."""
    data = load_labelled(store, positive, negative)
    tuned = OneClassSVMModel(target_recall=target_recall, n_jobs=n_jobs, random_state=random_state).fit(data.X, data.positive)
    default = OneClassSVMModel(search=False, n_jobs=n_jobs, random_state=random_state).fit(data.X, data.positive)
    return TuneResult(tuned=tuned, default=default, data=data)
