"""Train a bundle (or run the one-class search alone) from labelled rows of a feature store."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from stylesift.classifiers.bundle import Bundle
from stylesift.classifiers.feature_sets import (
    DEFAULT_SET,
    join_parts,
    load_features,
    parts,
    set_fingerprint,
    store_fingerprints,
)
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
    positive_label: str = ""


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
    return LabelledData(X=join_parts(blocks), positive=labels == positive, sha256=sha, labels=labels,
                        fingerprint=st.fingerprint, store=str(store), feature_set=feature_set, set_fingerprint=set_fp,
                        positive_label=positive)


def train(store, positive: str, negative: str | None = None, method: str = "two-class", *,
          target_recall: float | None = None, n_jobs: int | None = -1, random_state: int = 0,
          feature_set: str = DEFAULT_SET, background: str | None = None,
          unlabelled_since: float | None = None) -> Bundle:
    """Fit ``method`` on the store's ``positive``/``negative`` rows and return the bundle (not yet saved).

    Parameters
    ----------
    store : path
        Feature store (read only).
    positive, negative : str
        Store labels. Without ``negative`` only methods that fit on positives alone can run.
    method : str
        A name from :data:`classifiers.methods.METHODS`.
    target_recall : float, optional
        One-class methods: share of held-out positives to keep above the threshold (default 0.9).
        ``pu``: when given, the threshold keeps this share of out-of-fold positives instead of
        following the estimated class prior.
    feature_set : str
        The features to learn from: ``pooled`` (default), ``style`` or a ``+`` concatenation such as
        ``pooled+style``; the bundle records it (summary ``feature_set``) and scoring follows it.
    background : str, optional
        ``pu`` only: learn against the rows labelled ``background`` instead of the unlabelled rows.
    unlabelled_since : float, optional
        ``pu`` only: use the unlabelled rows extracted in the last ``unlabelled_since`` days.
    """
    m = get_method(method)
    if m.uses_unlabelled:
        return _train_pu(store, positive, negative, m, target_recall=target_recall, n_jobs=n_jobs,
                         random_state=random_state, feature_set=feature_set, background=background,
                         unlabelled_since=unlabelled_since)
    if background is not None or unlabelled_since is not None:
        raise TrainingError("--background and --unlabelled-since choose the unlabelled rows of method 'pu'; "
                            f"method {method!r} does not use them")
    target_recall = 0.9 if target_recall is None else target_recall
    if m.needs_negatives and negative is None:
        one_class = ", ".join(k for k, v in METHODS.items() if not v.needs_negatives)
        hint = ""
        from stylesift.featurizer.store import FeatureStore

        unlabelled = FeatureStore(store).label_counts().get("", 0)
        if unlabelled:
            hint = f"; or `--method pu` to learn the positives against the store's {unlabelled} unlabelled rows"
        raise TrainingError(f"method {method!r} learns from positives and negatives, but no negative label was given; "
                            f"pass --negative LABEL, or use a one-class method ({one_class}) to train on positives only"
                            + hint)
    data = load_labelled(store, positive, negative, feature_set)
    est = m.make(n_jobs=n_jobs, random_state=random_state, target_recall=target_recall)
    started = time.perf_counter()
    est.fit(data.X, data.positive)
    seconds = time.perf_counter() - started
    used = np.ones(len(data.X), bool) if m.needs_negatives else data.positive
    return _bundle(est, m, data, negative, seconds, target_recall, used,
                   "positives and negatives" if m.needs_negatives else "positives only")


def _bundle(est, m, data: LabelledData, negative, seconds: float, target_recall, used: np.ndarray, fit_on: str,
            extra: dict | None = None) -> Bundle:
    method, positive = m.name, data.positive_label
    summary = {
        "method": method, "description": m.description, "store": data.store,
        "positives": int(data.positive.sum()), "negatives": int((~data.positive).sum()),
        "fit_on": fit_on,
        "params": est.best_params_, "threshold": float(est.threshold_), "fit_seconds": round(seconds, 3),
        "notes": list(est.notes_),
        "feature_set": data.feature_set, "feature_set_fingerprint": data.set_fingerprint, "feature_dim": int(data.X.shape[1]),
        **(extra or {}),
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


def _train_pu(store, positive: str, negative: str | None, m, *, target_recall, n_jobs, random_state, feature_set,
              background, unlabelled_since) -> Bundle:
    """``pu``: the ``positive`` rows against the unlabelled feed (or the ``background`` label's rows).

    Known negatives (rows labelled ``negative``, and rows whose latest verdict names another label
    than ``positive``) are used as negatives; they are never counted as unlabelled.
    """
    import time as clock

    from stylesift.featurizer.store import FeatureStore

    parts(feature_set)
    st = FeatureStore(store)
    labels = st.labels.astype(str)
    counts = st.label_counts()
    available = ", ".join(f"{k or '(unlabelled)'} ({v})" for k, v in sorted(counts.items())) or "none"
    for label in [positive] + [x for x in (negative, background) if x is not None]:
        if counts.get(label, 0) == 0:
            raise TrainingError(f"{store}: no rows labelled {label!r}; labels there: {available}. "
                                "Label images with `stylesift extract FOLDER --label LABEL --store STORE`.")
    if positive in (negative, background):
        raise TrainingError(f"the positive label {positive!r} is also the negative or background label; give different labels")
    pos = labels == positive
    if background is not None:
        unlabelled, described = labels == background, f"label {background!r}"
    else:
        unlabelled, described = labels == "", "unlabelled rows"
        if unlabelled_since is not None:
            if not unlabelled_since > 0:
                raise TrainingError(f"--unlabelled-since must be a positive number of days, not {unlabelled_since}")
            unlabelled &= st.added >= clock.time() - unlabelled_since * 86400
            described = f"unlabelled rows of the last {unlabelled_since:g} days"
    if not unlabelled.any():
        raise TrainingError(f"{store}: no {described} to learn against; extract the feed without a label "
                            "(`stylesift extract FEED --store STORE`), or name a --background LABEL")
    known = labels == negative if negative is not None else np.zeros(len(labels), bool)
    judged = {v.sha256: v.label for v in st.verdicts()}  # the latest verdict per row wins
    sha_all = st.sha256
    known |= np.array([judged.get(h, positive) != positive for h in sha_all]) & ~pos & ~unlabelled
    rows = np.flatnonzero(pos | unlabelled | known)
    set_fp = set_fingerprint(store_fingerprints(st), feature_set, store)
    data = LabelledData(X=load_features(st, rows, feature_set), positive=pos[rows], sha256=sha_all[rows],
                        labels=labels[rows], fingerprint=st.fingerprint, store=str(store), feature_set=feature_set,
                        set_fingerprint=set_fp, positive_label=positive)
    est = m.make(n_jobs=n_jobs, random_state=random_state, target_recall=target_recall)
    started = time.perf_counter()
    est.fit(data.X, data.positive, negative=known[rows])
    seconds = time.perf_counter() - started
    extra = {"class_prior": round(float(est.class_prior_), 4), "label_frequency": round(float(est.label_frequency_), 4),
             "background_rows": int(est.background_rows_), "background": described,
             "known_negatives": int(known[rows].sum())}
    return _bundle(est, m, data, negative, seconds, target_recall, data.positive,
                   f"positives against {described}", extra)


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
