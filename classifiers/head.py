"""The article's first approach, "retrain only the output layer": a logistic layer on frozen features.

A dense sigmoid/softmax layer trained with cross-entropy on the pooled features is logistic
regression; scikit-learn's is exact (lbfgs to convergence) and needs no epochs to tune. Standardising
the features first only conditions the optimisation: a linear layer absorbs any per-feature scale.
"""

from __future__ import annotations

from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from stylesift.classifiers.base import BinaryClassifierMixin, StyleScorer


class OutputLayerHead(BinaryClassifierMixin, StyleScorer):
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
    offset_ : float
        Threshold on :meth:`score_samples` (the log-odds): 0, i.e. probability 0.5; also ``threshold_``.
    best_params_ : dict
    notes_ : list of str
    """

    def __init__(self, C: float = 1.0, max_iter: int = 2000):
        self.C = C
        self.max_iter = max_iter

    def fit(self, X, y):
        """Fit on ``X`` of shape ``(n_samples, n_features)`` and ``y`` (1/True = positive) of shape ``(n_samples,)``."""
        X, y = self._validate_fit(X, y)
        y = self._positives(y)
        self.pipeline_ = Pipeline([("scale", StandardScaler()),
                                   ("logistic", LogisticRegression(C=self.C, max_iter=self.max_iter))])
        self.pipeline_.fit(X, y)
        self.offset_ = 0.0
        self.n_iter_ = self.pipeline_[-1].n_iter_
        self.best_params_ = {"C": self.C}
        self.notes_ = []
        return self

    # score_samples (log-odds of being a positive), decision_function and predict: StyleScorer.
