"""The contract every stylesift method keeps, in scikit-learn's terms.

A method is a small estimator whose :meth:`~StyleScorer.score_samples` is *the* score users see
(higher = more like the positives), whose ``offset_`` is its threshold on that score, and whose
``decision_function`` is ``score_samples − offset_`` (≥ 0 means selected), as in scikit-learn's
``OneClassSVM`` and ``IsolationForest``. So every score method tells the same story.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.multiclass import check_classification_targets, type_of_target
from sklearn.utils.validation import check_is_fitted, validate_data


def pipeline_scores(pipeline, X) -> np.ndarray:
    """The user-facing score of a fitted scoring pipeline, float array of shape ``(n_samples,)``.

    Its final step's ``score_samples`` when it has one (one-class similarity, k-NN distance), else
    its ``decision_function`` (SVC margin, logistic log-odds), which is then already the score.
    """
    final = pipeline[-1] if hasattr(pipeline, "steps") else pipeline
    if hasattr(final, "score_samples"):
        return np.asarray(pipeline.score_samples(X), dtype=float)
    return np.asarray(pipeline.decision_function(X), dtype=float)


class StyleScorer(BaseEstimator):
    """Base of the methods: subclasses set ``pipeline_`` and ``offset_`` in ``fit``.

    Attributes
    ----------
    pipeline_ : Pipeline
        The fitted scoring pipeline that goes into a model bundle (see :func:`pipeline_scores`).
    offset_ : float
        Threshold on :meth:`score_samples`; ``threshold_`` is the same number.
    n_features_in_ : int
    """

    def score_samples(self, X):
        """The score of each row of ``X`` (shape ``(n_samples, n_features)``): shape ``(n_samples,)``."""
        check_is_fitted(self, "pipeline_")
        X = validate_data(self, X, dtype=np.float32, reset=False)
        return pipeline_scores(self.pipeline_, X)

    def decision_function(self, X):
        """``score_samples(X) − offset_``, shape ``(n_samples,)``: ≥ 0 where the row is selected."""
        return self.score_samples(X) - self.offset_

    def predict(self, X):
        """True where the row is selected (its score reaches ``offset_``), shape ``(n_samples,)``."""
        return self.decision_function(X) >= 0

    @property
    def threshold_(self) -> float:
        """The threshold on :meth:`score_samples` (the bundle's threshold); same as ``offset_``."""
        check_is_fitted(self, "offset_")
        return self.offset_

    def _validate_fit(self, X, y=None):
        # Validation at the edge: shapes, finiteness and n_features_in_ are set here, once.
        if y is None:
            return validate_data(self, X, dtype=np.float32), None
        return validate_data(self, X, y, dtype=np.float32)



class BinaryClassifierMixin(ClassifierMixin):
    """A classifier of positives against the rest: scikit-learn's classifier tags, binary only.

    Any two labels work, as in scikit-learn; the greater one (1, True) is the positive class.
    """

    def _positives(self, y) -> np.ndarray:
        """Set ``classes_`` from ``y`` (shape ``(n_samples,)``) and return the positives mask."""
        check_classification_targets(y)  # "Unknown label type: continuous …" for real-valued targets
        kind = type_of_target(y, input_name="y")
        if kind != "binary":
            raise ValueError(f"Only binary classification is supported. The type of the target is {kind}.")
        self.classes_ = np.unique(y)
        if len(self.classes_) < 2:
            raise ValueError(f"this method needs two classes (positives and negatives); got one class, {self.classes_[0]!r}")
        return np.asarray(y) == self.classes_[1]

    def predict(self, X):
        """The predicted class of each row (``classes_[1]`` where selected), shape ``(n_samples,)``."""
        check_is_fitted(self, "pipeline_")
        return self.classes_[(self.decision_function(X) >= 0).astype(int)]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_class = False
        return tags
