"""Distance-to-positives baseline: how close is a vector to its k nearest training positives?

On pretrained features this simple scorer is a strong published baseline for one-class problems;
`compare` shows it beside the one-class SVM so users can see whether the SVM earns its place.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.neighbors import NearestNeighbors
from sklearn.pipeline import Pipeline
from sklearn.utils.validation import check_is_fitted, validate_data

from stylesift.classifiers.base import StyleScorer
from stylesift.classifiers.preprocess import normalize_step
from stylesift.classifiers.search import positives_mask


class KNearestScore(BaseEstimator):
    """Score = minus the mean Euclidean distance to the ``k`` nearest fitted rows.

    Parameters
    ----------
    k : int
        Neighbours averaged (capped by the number of fitted rows).

    Attributes
    ----------
    neighbors_ : NearestNeighbors
    loo_scores_ : ndarray of shape (n_samples,)
        Each fitted row's score against the *other* fitted rows (leave-one-out), for thresholds.
    """

    def __init__(self, k: int = 10):
        self.k = k

    def fit(self, X, y=None):
        """Remember the rows of ``X``, shape ``(n_samples, n_features)``."""
        X = validate_data(self, X, dtype=[np.float32, np.float64])
        if len(X) < 2:
            raise ValueError(f"nearest-positives needs at least 2 positive rows, got {len(X)}")
        self.neighbors_ = NearestNeighbors().fit(X)
        self.k_ = min(int(self.k), len(X) - 1)
        # kneighbors() without X leaves each row out of its own neighbours.
        self.loo_scores_ = -self.neighbors_.kneighbors(n_neighbors=self.k_)[0].mean(axis=1)
        return self

    def score_samples(self, X):
        """Minus the mean distance to the ``k`` nearest fitted rows, shape ``(n_samples,)``."""
        check_is_fitted(self, "neighbors_")
        X = validate_data(self, X, dtype=[np.float32, np.float64], reset=False)
        return -self.neighbors_.kneighbors(X, n_neighbors=self.k_)[0].mean(axis=1)


class NearestPositives(StyleScorer):
    """k-nearest-positives scorer on L2-normalised features (cosine geometry), fit on positives only.

    Parameters
    ----------
    k : int
        Neighbours averaged.
    target_recall : float
        Share of training positives (each scored leave-one-out) at or above :attr:`threshold_`.

    Attributes
    ----------
    pipeline_ : Pipeline
        ``normalize (l2) → knn``.
    offset_ : float
        Threshold on :meth:`score_samples`; also ``threshold_``.
    best_params_ : dict
    notes_ : list of str
    """

    def __init__(self, k: int = 10, target_recall: float = 0.9):
        self.k = k
        self.target_recall = target_recall

    def fit(self, X, y=None):
        """Fit on the positive rows of ``X`` (shape ``(n_samples, n_features)``); ``y`` as in :class:`OneClassSVMModel`."""
        X, y = self._validate_fit(X, y)
        positive = np.ones(len(X), bool) if y is None else positives_mask(y)
        self.pipeline_ = Pipeline([("normalize", normalize_step("l2")), ("knn", KNearestScore(self.k))])
        self.pipeline_.fit(X[positive])
        loo = self.pipeline_.named_steps["knn"].loo_scores_
        self.offset_ = float(np.quantile(loo, 1 - self.target_recall, method="lower"))
        self.best_params_ = {"normalize": "l2", "k": self.pipeline_.named_steps["knn"].k_}
        self.notes_ = []
        return self

    # score_samples (minus the mean distance to the nearest training positives), decision_function
    # and predict: StyleScorer.
