"""Small models on stored features. Public verbs: :func:`train`, :func:`tune`, :func:`compare`, :class:`Predictor`.

Everything here takes feature matrices and labels; only :mod:`classifiers.predict` touches images
(through the featurizer and its store).
"""

from .bundle import Bundle, BundleError
from .compare import compare
from .predict import Predictor
from .train import TrainingError, train, tune

__all__ = ["Bundle", "BundleError", "Predictor", "TrainingError", "compare", "train", "tune"]
