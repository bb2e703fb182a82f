"""Small models on stored features. Public verbs: :func:`train`, :func:`tune`, :func:`compare`, :class:`Predictor`.

Everything here takes feature matrices and labels; only :mod:`classifiers.predict` touches images
(through the featurizer and its store).
"""

from stylesift.classifiers.bundle import Bundle, BundleError
from stylesift.classifiers.compare import compare
from stylesift.classifiers.predict import Predictor
from stylesift.classifiers.train import TrainingError, train, tune

__all__ = ["Bundle", "BundleError", "Predictor", "TrainingError", "compare", "train", "tune"]
