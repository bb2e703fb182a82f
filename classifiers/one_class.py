"""One-class style model: a ``OneClassSVM`` fit on positive features only.

The article fit ``OneClassSVM(gamma=0.011, nu=0.08)`` after ``PCA(512, whiten=True)`` and advised tuning
by ROC. Here negatives, when there are any, are used **only for validation**: every candidate of a
gamma × nu × preprocessing grid is fit on the training positives of a fold and ranked by ROC AUC
on that fold's held-out positives and negatives. The decision threshold never needs negatives: it is
the score that the chosen target share of held-out positives reaches (recall on positives).

Why no PCA in the search grid: PCA fit on positives keeps the directions in which *positives* vary
and drops the rest, which is where negatives differ. On nature-vs-urban, with the same gammas and
nu, 64 components gave ROC AUC 0.42–0.76 against 0.90–0.95 without PCA, so only the article
default keeps its PCA.
"""

from __future__ import annotations

import time

import numpy as np
from sklearn.base import clone
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import KFold, StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.svm import OneClassSVM
from sklearn.utils.parallel import Parallel, delayed
from threadpoolctl import threadpool_limits

from stylesift.classifiers.base import StyleScorer, pipeline_scores
from stylesift.classifiers.kernel_svm import MAX_KERNEL_ROWS, KernelOneClassSVM, kernel_grid_search
from stylesift.classifiers.preprocess import CappedPCA, normalize_step
from stylesift.classifiers.search import best_candidate, candidate_table, positives_mask

ARTICLE_DEFAULT = {"normalize": "none", "pca": "512 whitened", "svm__gamma": 0.011, "svm__nu": 0.08}

# Used when there are no negatives to tune on: a middle value of the grid (the searches on the
# reference tasks chose gamma 8-16; see the README for what gamma 4 reaches on a hidden split).
# nu hardly moves ROC AUC, and the threshold comes from held-out positives anyway.
NO_NEGATIVES_DEFAULT = {"normalize": "l2", "pca": "none", "svm__gamma": 4.0, "svm__nu": 0.1}

SEARCH_GRID = [
    {k: [v] for k, v in ARTICLE_DEFAULT.items()},
    {"normalize": ["l2", "power-l2"], "pca": ["none"], "svm__gamma": [1.0, 2.0, 4.0, 8.0, 16.0],
     "svm__nu": [0.1, 0.5]},
]


class ScaledOneClassSVM(OneClassSVM):
    """``OneClassSVM`` scoring by its weighted mean kernel similarity to the support vectors.

    libsvm's raw decision function is ``sum(alpha_i K(x_i, x)) - rho`` with the alphas summing to
    ``nu * n_samples``: it grows with the training size, and its offset ``rho`` is set by the
    training points themselves. A threshold read off held-out positives of fold models would not
    transfer to the final model fit on all positives. ``sum(alpha_i K(x_i, x)) / sum(alpha_i)`` is
    a similarity in [0, 1] that does transfer; it ranks exactly as the raw score (same ROC). As in
    ``OneClassSVM``, :meth:`score_samples` is that score and ``decision_function = score_samples −
    offset_``; ``offset_`` is libsvm's own boundary on the same scale (``rho / sum(alpha)``).
    """

    def fit(self, X, y=None, sample_weight=None):
        super().fit(X, y, sample_weight=sample_weight)
        self.scale_ = float(np.sum(self.dual_coef_))
        self.rho_ = float(self.offset_[0])  # libsvm's boundary on its raw scale
        self.offset_ = self.offset_ / self.scale_
        return self

    def score_samples(self, X):
        """Weighted mean kernel similarity to the support vectors, shape ``(n_samples,)``."""
        return (OneClassSVM.decision_function(self, X) + self.rho_) / self.scale_

    def decision_function(self, X):
        """``score_samples(X) − offset_``: ≥ 0 inside libsvm's boundary, shape ``(n_samples,)``."""
        return self.score_samples(X) - self.offset_[0]

    @property
    def boundary_(self) -> float:
        """libsvm's decision boundary on the :meth:`score_samples` scale (``offset_``)."""
        return float(self.offset_[0])

    def predict(self, X):
        return np.where(self.decision_function(X) >= 0, 1, -1)


def _pca_step(name: str, random_state):
    if name == "none":
        return "passthrough"
    if name == "512 whitened":
        return CappedPCA(512, whiten=True, random_state=random_state)
    raise ValueError(f"pca must be 'none' or '512 whitened', not {name!r}")


def _pca_name(step) -> str:
    return "512 whitened" if isinstance(step, CappedPCA) else "none"


def make_pipeline(normalize: str = "none", pca: str = "512 whitened", gamma: float = 0.011, nu: float = 0.08,
                  random_state: int | None = 0) -> Pipeline:
    """An unfitted ``normalize → pca → OneClassSVM`` pipeline (defaults: the article's).

    Parameters
    ----------
    normalize : {"none", "l2", "power-l2"}
        Feature normalisation (see :func:`~classifiers.preprocess.normalize_step`).
    pca : {"none", "512 whitened"}
        Whether to project on 512 whitened PCA components (capped by the number of positives).
    gamma : float
        RBF kernel width, in 1 / squared feature distance.
    nu : float
        Upper bound on the share of training positives left outside the boundary.
    """
    return Pipeline([("normalize", normalize_step(normalize)), ("pca", _pca_step(pca, random_state)),
                     ("svm", ScaledOneClassSVM(kernel="rbf", gamma=gamma, nu=nu))])


def make_tuned_pipeline(params: dict, n_rows: int, random_state: int | None = 0) -> Pipeline:
    """The pipeline of chosen ``params`` (keys as in :data:`ARTICLE_DEFAULT`) for ``n_rows`` training rows.

    Same model as :func:`make_pipeline`, fit on a kernel computed with BLAS
    (:class:`~stylesift.classifiers.kernel_svm.KernelOneClassSVM`) up to
    :data:`~stylesift.classifiers.kernel_svm.MAX_KERNEL_ROWS` rows, by libsvm above.
    """
    if n_rows > MAX_KERNEL_ROWS:
        return make_pipeline(params["normalize"], params["pca"], params["svm__gamma"], params["svm__nu"], random_state)
    return Pipeline([("normalize", normalize_step(params["normalize"])), ("pca", _pca_step(params["pca"], random_state)),
                     ("svm", KernelOneClassSVM(gamma=params["svm__gamma"], nu=params["svm__nu"]))])


def validation_splits(positive: np.ndarray, folds: int, random_state: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified folds whose training part keeps only positives; the held-out part keeps both classes.

    Parameters
    ----------
    positive : ndarray of bool, shape (n_samples,)
    folds : int
        Capped by the smaller class (at least 2).

    Returns
    -------
    list of (train, test) index arrays; ``train`` holds positives only.
    """
    n_neg = int((~positive).sum())
    if n_neg == 0:
        k = max(2, min(folds, int(positive.sum())))
        return list(KFold(k, shuffle=True, random_state=random_state).split(positive))
    k = max(2, min(folds, int(positive.sum()), n_neg))
    splits = StratifiedKFold(k, shuffle=True, random_state=random_state).split(positive, positive)
    return [(train[positive[train]], test) for train, test in splits]


def _fit_score(pipeline, X, train, test) -> np.ndarray:
    return pipeline_scores(clone(pipeline).fit(X[train]), X[test])


def _held_out_scores(pipeline, X: np.ndarray, splits, n_jobs) -> np.ndarray:
    """Each row's score from the fold model that did not see it, shape ``(n_samples,)``.

    (``cross_val_predict`` wants a classifier's ``classes_`` for decision functions.)
    """
    # Threads, not loky's processes: PCA's LAPACK and libsvm release the GIL, and a fresh worker
    # process pays scikit-learn's ~2 s import before its first fold. One BLAS thread per fold: the
    # randomized 512-component PCA took 2.4 s with two BLAS threads against 0.8 s with one here.
    with threadpool_limits(1 if n_jobs not in (None, 1) else None):
        parts = Parallel(n_jobs=n_jobs, prefer="threads")(delayed(_fit_score)(pipeline, X, train, test)
                                                          for train, test in splits)
    scores = np.empty(len(X))
    for (_, test), part in zip(splits, parts):
        scores[test] = part
    return scores


class OneClassSVMModel(StyleScorer):
    """OneClassSVM fit on positives, tuned by ROC AUC against negatives used only for validation.

    Parameters
    ----------
    search : bool
        True: choose from :data:`SEARCH_GRID` by mean validation ROC AUC (needs some negatives;
        without any, :data:`NO_NEGATIVES_DEFAULT` is used and :attr:`notes_` says so).
        False: the article default, with the SVM's own boundary as threshold.
    target_recall : float
        Share of held-out positives that should score at or above :attr:`threshold_` (search=True).
    cv : int
        Folds for the search and for the held-out positive scores.
    n_jobs : int, optional
        Parallel fits of the search (-1: all CPUs).
    max_search_samples : int
        Search and held-out scores use a stratified subsample of at most this many rows; the final
        model is fit on all positives (its scores are comparable, see :class:`ScaledOneClassSVM`).
    random_state : int

    Attributes
    ----------
    pipeline_ : Pipeline
        ``normalize → pca → svm`` fit on all positives.
    offset_ : float
        Threshold on :meth:`score_samples`; also ``threshold_``.
    best_params_ : dict
        Chosen parameters, keys as in :data:`ARTICLE_DEFAULT`.
    search_ : dict or None
        Candidates with mean/std validation ROC AUC, the chosen index, folds, rows.
    validation_ : dict
        Out-of-fold scores of the chosen setup: ``scores`` and ``positive`` arrays of shape
        ``(n_validated,)`` over the rows validated (all, or the search subsample), ``folds`` (each fold's held-out row
        indices), ``roc_auc`` (None without negatives) and the
        recall on held-out positives reached at :attr:`threshold_`.
    notes_ : list of str
    """

    def __init__(self, search: bool = True, target_recall: float = 0.9, cv: int = 3, n_jobs: int | None = -1,
                 max_search_samples: int = 2000, random_state: int = 0):
        self.search = search
        self.target_recall = target_recall
        self.cv = cv
        self.n_jobs = n_jobs
        self.max_search_samples = max_search_samples
        self.random_state = random_state

    def fit(self, X, y=None):
        """Fit on the positive rows of ``X`` (shape ``(n_samples, n_features)``).

        ``y`` (shape ``(n_samples,)``, 1/True = positive) is optional: without it every row is a
        positive. Negative rows are never fit on; they only rank the candidates.
        """
        if not 0 < self.target_recall < 1:
            raise ValueError(f"target_recall must be between 0 and 1, not {self.target_recall}")
        X, y = self._validate_fit(X, y)
        positive = np.ones(len(X), bool) if y is None else positives_mask(y)
        if positive.sum() < 2:
            raise ValueError(f"a one-class model needs at least 2 positive rows, got {int(positive.sum())}")
        self.notes_, self.search_ = [], None
        Xs, ps = X, positive
        if len(X) > self.max_search_samples:
            keep = np.sort(np.random.default_rng(self.random_state).permutation(len(X))[: self.max_search_samples])
            Xs, ps = X[keep], positive[keep]
        splits = validation_splits(ps, self.cv, self.random_state)
        scores = None
        if not self.search:
            params = dict(ARTICLE_DEFAULT)
        elif (~ps).any():
            params, self.search_, scores = self._search(Xs, ps, splits)
        else:
            params = dict(NO_NEGATIVES_DEFAULT)
            self.notes_.append("no negatives to tune on: default parameters "
                               f"(gamma {params['svm__gamma']}, nu {params['svm__nu']}, {params['normalize']} features)")
        self.best_params_ = params
        if self.search:
            pipeline = make_tuned_pipeline(params, int(positive.sum()), random_state=self.random_state)
        else:  # the article's method stays exactly as it was
            pipeline = make_pipeline(params["normalize"], params["pca"], params["svm__gamma"], params["svm__nu"],
                                     random_state=self.random_state)
        if scores is None:
            scores = _held_out_scores(pipeline, Xs, splits, self.n_jobs)
        held_out_pos = scores[ps]
        self.pipeline_ = pipeline.fit(X[positive])
        if self.search:
            self.offset_ = float(np.quantile(held_out_pos, 1 - self.target_recall, method="lower"))
        else:
            self.offset_ = self.pipeline_.named_steps["svm"].boundary_  # the article's: the SVM's own boundary
        self.validation_ = {
            "scores": scores, "positive": ps, "folds": [test for _, test in splits],
            "roc_auc": float(np.mean([roc_auc_score(ps[t], scores[t]) for _, t in splits])) if (~ps).any() else None,
            "recall": float(np.mean(held_out_pos >= self.threshold_)),
        }
        pca = self.pipeline_.named_steps["pca"]
        if isinstance(pca, CappedPCA) and pca.capped_:
            self.notes_.append(f"PCA components capped at {pca.n_components_} (asked {pca.n_components}) "
                               f"by {int(positive.sum())} training positives")
        return self

    def _search(self, X: np.ndarray, positive: np.ndarray, splits) -> tuple[dict, dict, np.ndarray]:
        """Rank the grid; return the winner's parameters, the search table and its out-of-fold scores.

        Row 0 (the article default, with its PCA) is fit per fold as a pipeline; the rest of the grid
        shares one kernel per normalisation and gamma (:func:`~stylesift.classifiers.kernel_svm.kernel_grid_search`).
        Candidates come in :class:`~sklearn.model_selection.ParameterGrid` order, so ties resolve as before.
        """
        started = time.perf_counter()
        article_scores = _held_out_scores(make_pipeline(random_state=self.random_state), X, splits, self.n_jobs)
        candidates = [{"params": dict(ARTICLE_DEFAULT), "scores": article_scores,
                       "fold_roc_auc": [float(roc_auc_score(positive[t], article_scores[t])) for _, t in splits],
                       "seconds": (time.perf_counter() - started) / len(splits)}]
        for grid in SEARCH_GRID[1:]:
            if grid["pca"] != ["none"]:
                raise ValueError("the kernel search has no PCA step; only the article default row may use PCA")
            found = kernel_grid_search(X, positive, splits, {n: normalize_step(n) for n in grid["normalize"]},
                                       grid["svm__gamma"], grid["svm__nu"], n_jobs=self.n_jobs)
            candidates += [{**c, "params": {"normalize": c["normalize"], "pca": "none", "svm__gamma": c["gamma"],
                                            "svm__nu": c["nu"]}} for c in found]
        results = {"params": [c["params"] for c in candidates],
                   "mean_test_roc_auc": np.array([np.mean(c["fold_roc_auc"]) for c in candidates]),
                   "std_test_roc_auc": np.array([np.std(c["fold_roc_auc"]) for c in candidates]),
                   "mean_fit_time": np.array([c["seconds"] for c in candidates])}
        best = best_candidate(results, ("roc_auc",))
        table = {"candidates": candidate_table(results, ("roc_auc",)), "best": best, "folds": len(splits),
                 "rows": len(X), "article_default": 0,
                 "selected_by": "mean validation ROC AUC (fit on positives, negatives only score)"}
        return dict(candidates[best]["params"]), table, candidates[best]["scores"]

    # score_samples (similarity to the training positives), decision_function and predict: StyleScorer.
