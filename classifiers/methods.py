"""The named methods that `train` and `compare` know, each a factory of an unfitted estimator.

Every estimator is a :class:`~stylesift.classifiers.base.StyleScorer`: ``fit(X, y)`` (y: 1/True =
positive), ``score_samples(X)`` (higher = more like the positives), ``offset_``/``threshold_`` on it,
``decision_function = score_samples − offset_``, ``pipeline_`` (the fitted sklearn Pipeline that goes
into a bundle), ``best_params_`` and ``notes_``. One-class methods fit on the positive rows only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from stylesift.classifiers.distance import NearestPositives
from stylesift.classifiers.head import OutputLayerHead
from stylesift.classifiers.one_class import OneClassSVMModel
from stylesift.classifiers.pu import PUClassifier
from stylesift.classifiers.two_class import TwoClassSVM


@dataclass(frozen=True)
class Method:
    name: str
    make: Callable[..., object]  # make(n_jobs=..., random_state=..., target_recall=...) -> estimator
    needs_negatives: bool
    description: str
    # PU methods learn positives against the store's unlabelled rows (the feed), not a negative label.
    uses_unlabelled: bool = False


METHODS = {m.name: m for m in [
    Method("two-class", lambda n_jobs=-1, random_state=0, target_recall=0.9:
           TwoClassSVM(n_jobs=n_jobs, random_state=random_state), True,
           "PCA + RBF SVC, hyperparameters and normalisation chosen by stratified CV"),
    Method("two-class-default", lambda n_jobs=-1, random_state=0, target_recall=0.9:
           TwoClassSVM(search=False, random_state=random_state), True,
           "the article: PCA(512, whiten) + SVC(C=0.4)"),
    Method("one-class", lambda n_jobs=-1, random_state=0, target_recall=0.9:
           OneClassSVMModel(target_recall=target_recall, n_jobs=n_jobs, random_state=random_state), False,
           "OneClassSVM on positives, gamma x nu chosen by ROC AUC (negatives only validate)"),
    Method("one-class-default", lambda n_jobs=-1, random_state=0, target_recall=0.9:
           OneClassSVMModel(search=False, n_jobs=n_jobs, random_state=random_state), False,
           "the article: PCA(512, whiten) + OneClassSVM(gamma=0.011, nu=0.08)"),
    Method("nearest-positives", lambda n_jobs=-1, random_state=0, target_recall=0.9:
           NearestPositives(target_recall=target_recall), False,
           "baseline: mean cosine distance to the 10 nearest training positives"),
    Method("head", lambda n_jobs=-1, random_state=0, target_recall=0.9:
           OutputLayerHead(), True,
           "the article's output-layer retraining: logistic regression on the pooled features"),
    Method("pu", lambda n_jobs=-1, random_state=0, target_recall=None:
           PUClassifier(target_recall=target_recall, n_jobs=n_jobs, random_state=random_state), False,
           "positives against the unlabelled feed (PU learning): cross-fitted logistic regression, "
           "threshold from the estimated class prior", uses_unlabelled=True),
]}


def get_method(name: str) -> Method:
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; choose one of: {', '.join(METHODS)}") from None
