"""What to label next: the unlabelled images whose verdict should teach the model most.

Two things make a verdict useful. **Uncertainty**: an image scored near the model's threshold is
one the model cannot place; one far on either side only confirms what it knows. **Diversity**: the
twenty most uncertain images are often near-copies of one another (one ambiguous scene, posted
many times), and twenty verdicts on them teach little more than one.

So :func:`suggest` keeps a pool of the most uncertain candidates (``pool_factor`` times as many as
asked, at least 100), then picks greedily: each pick maximises its cosine distance to everything already
labelled or picked, discounted by its uncertainty (``distance / (1 + margin)``, the margin being
the distance to the threshold in units of the scores' spread). The first pick is the most
uncertain image that is not a near-copy of a labelled one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stylesift.classifiers.grouping import unit_rows


@dataclass
class Suggestion:
    """One image to label: its store row, score and why it was picked."""

    row: int
    score: float
    margin: float  # |score - threshold| / spread of the scores
    distance: float  # cosine distance to the nearest labelled or already-suggested image

    def to_dict(self) -> dict:
        return {"row": self.row, "score": self.score, "margin": round(self.margin, 4),
                "distance": round(self.distance, 4)}


def margins(scores: np.ndarray, threshold: float) -> np.ndarray:
    """``|score - threshold|`` in units of the scores' spread (interquartile range / 1.35, ~ one std), shape ``(n,)``."""
    scores = np.asarray(scores, dtype=float)
    if len(scores) == 0:
        return scores
    q1, q3 = np.percentile(scores, [25, 75])
    spread = (q3 - q1) / 1.35 or float(np.std(scores)) or 1.0
    return np.abs(scores - threshold) / spread


def suggest(features: np.ndarray, scores: np.ndarray, threshold: float, n: int = 20,
            labelled: np.ndarray | None = None, pool_factor: int = 5) -> list[Suggestion]:
    """Pick ``n`` candidates to label from ``features`` (shape ``(m, d)``) with model ``scores`` (shape ``(m,)``).

    Parameters
    ----------
    features : ndarray of shape (m, d)
        The unlabelled candidates' feature vectors.
    scores : ndarray of shape (m,)
        Their model scores (higher = more like the positives).
    threshold : float
        The model's threshold on ``scores``.
    n : int
        How many to suggest (fewer when there are fewer candidates).
    labelled : ndarray of shape (k, d), optional
        Feature vectors already labelled: suggestions keep away from them.
    pool_factor : int
        The greedy pick looks at the ``pool_factor * n`` (at least 100) most uncertain candidates.

    Returns
    -------
    list of :class:`Suggestion`, in pick order; ``row`` indexes ``features``.
    """
    m = len(features)
    if n <= 0 or m == 0:
        return []
    margin = margins(scores, threshold)
    pool = np.argsort(margin, kind="stable")[: max(100, pool_factor * n)]
    Z = unit_rows(features[pool])
    nearest = np.full(len(pool), 2.0)  # cosine distance to the nearest labelled/picked vector
    if labelled is not None and len(labelled):
        L = unit_rows(labelled)
        for start in range(0, len(L), 4096):
            nearest = np.minimum(nearest, 1.0 - (Z @ L[start:start + 4096].T).max(axis=1))
    picks: list[Suggestion] = []
    free = np.ones(len(pool), bool)
    for _ in range(min(n, len(pool))):
        value = np.where(free, np.minimum(nearest, 1.0) / (1.0 + margin[pool]), -np.inf)
        best = int(np.argmax(value))
        picks.append(Suggestion(row=int(pool[best]), score=float(scores[pool[best]]), margin=float(margin[pool[best]]),
                                distance=float(min(nearest[best], 1.0))))
        free[best] = False
        nearest = np.minimum(nearest, 1.0 - Z @ Z[best])
    return picks


def suggest_from_store(model, store, n: int = 20, *, bundle=None) -> dict:
    """Suggestions among the store's unlabelled rows for the model bundle at ``model``.

    The bundle is checked against the store's feature space before anything is scored. Rows
    labelled with the bundle's positive or negative label keep the suggestions away from what is
    known; rows with other labels are left out.

    Returns
    -------
    dict ``{"model", "store", "threshold", "unlabelled", "suggestions": [{"sha256", "path", "score",
    "margin", "distance", ...}]}``, suggestions in pick order.
    """
    from stylesift.classifiers.bundle import Bundle
    from stylesift.featurizer.store import FeatureStore, StoreError, display_path

    store = Path(store)
    if not store.exists():
        raise StoreError(f"{store}: no such feature store; extract images into it first (`stylesift extract PATH --store {store}`)")
    st = FeatureStore(store)
    if bundle is None:
        if st.fingerprint is None:
            raise StoreError(f"{store}: the store holds no features yet; extract images into it first")
        bundle = Bundle.load(model, fingerprint=st.fingerprint)
    from stylesift.classifiers.feature_sets import bundle_set, check_set, load_features, store_fingerprints

    name = bundle_set(bundle.summary)  # the features the model was trained on (pooled, style, ...)
    check_set(bundle.summary, store_fingerprints(st), store)
    labels = st.labels.astype(str)
    unlabelled = np.flatnonzero(labels == "")
    known = np.flatnonzero(np.isin(labels, [x for x in (bundle.positive_label, bundle.negative_label) if x]))
    X = load_features(st, unlabelled, name) if len(unlabelled) else np.zeros((0, 0), np.float32)
    scores = bundle.score(X)
    picks = suggest(X, scores, bundle.threshold, n, labelled=load_features(st, known, name) if len(known) else None)
    sha = st.sha256
    rows = []
    for p in picks:
        row = int(unlabelled[p.row])
        paths = st.paths(row)
        rows.append({"sha256": str(sha[row]), "path": display_path(paths[0]) if paths else "", **p.to_dict(), "row": row})
    return {"model": str(model), "store": str(store), "threshold": float(bundle.threshold),
            "unlabelled": int(len(unlabelled)), "suggestions": rows}
