"""The article's first approach, "retrain only the output layer": a logistic layer on frozen features.

A dense sigmoid/softmax layer trained with cross-entropy on the pooled features is logistic
regression; scikit-learn's is exact (lbfgs to convergence) and needs no epochs to tune. Standardising
the features first only conditions the optimisation: a linear layer absorbs any per-feature scale.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.validation import check_is_fitted

from stylesift.classifiers.search import positives_mask


class OutputLayerHead(ClassifierMixin, BaseEstimator):
    """Logistic regression on standardised pooled features.

    Parameters
    ----------
    C : float
        Inverse L2 penalty (sklearn's convention; 1.0 is its default).
    max_iter : int
        lbfgs iterations.

    Attributes
    ----------
    pipeline_ : Pipeline
        ``scale → logistic``.
    threshold_ : float
        0 on the log-odds, i.e. probability 0.5.
    best_params_ : dict
    notes_ : list of str
    """

    def __init__(self, C: float = 1.0, max_iter: int = 2000):
        self.C = C
        self.max_iter = max_iter

    def fit(self, X, y):
        """Fit on ``X`` of shape ``(n_samples, n_features)`` and ``y`` (1/True = positive) of shape ``(n_samples,)``."""
        y = positives_mask(y, need_both=True)
        self.pipeline_ = Pipeline([("scale", StandardScaler()),
                                   ("logistic", LogisticRegression(C=self.C, max_iter=self.max_iter))])
        self.pipeline_.fit(np.asarray(X, dtype=np.float32), y)
        self.threshold_ = 0.0
        self.classes_ = np.array([False, True])
        self.best_params_ = {"C": self.C}
        self.notes_ = []
        return self

    def decision_function(self, X):
        """Log-odds of being a positive, shape ``(n_samples,)``."""
        check_is_fitted(self, "pipeline_")
        return self.pipeline_.decision_function(np.asarray(X, dtype=np.float32))

    def predict(self, X):
        return self.decision_function(X) >= self.threshold_
