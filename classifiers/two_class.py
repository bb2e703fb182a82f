"""Two-class style model: PCA + RBF SVC, hyperparameters chosen by stratified cross-validation.

The article used ``PCA(n_components=512, whiten=True)`` then ``SVC(kernel="rbf", C=0.4)``, with PCA
fit on all data before the split. With a few hundred images per class, 512 whitened components mostly
amplify noise (the trailing components have tiny variance, whitening scales them up to the leading
ones). That configuration stays available (:data:`ARTICLE_DEFAULT`, ``search=False``) and is one of the
candidates of the search, but the default is chosen by CV, with PCA fit inside every fold.
"""

from __future__ import annotations

import tempfile

import joblib
import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.model_selection import GridSearchCV, StratifiedKFold, train_test_split
from sklearn.pipeline import Pipeline
from sklearn.svm import SVC
from sklearn.utils.validation import check_is_fitted

from stylesift.classifiers.preprocess import CappedPCA, normalize_name, normalize_step
from stylesift.classifiers.search import best_candidate, candidate_table, positives_mask

# The article's configuration. Its SVC used sklearn's old default gamma, 1/n_features, which on
# whitened components equals today's "scale". Its probability=True only adds Platt scaling on top
# (five extra fits, deprecated in scikit-learn 1.9); scores and decisions come from the decision
# function either way, so it is left out.
ARTICLE_DEFAULT = {"normalize": "none", "pca__n_components": 512, "pca__whiten": True, "svc__C": 0.4, "svc__gamma": "scale"}

# Small on purpose: every candidate costs one fit per fold. Normalised features with a moderate
# number of components won on all three reference tasks; C barely matters once the classes separate.
SEARCH_GRID = [
    {k: [v] for k, v in ARTICLE_DEFAULT.items()},
    {"normalize": ["power-l2"], "pca__n_components": [128], "pca__whiten": [False], "svc__C": [1.0, 10.0], "svc__gamma": ["scale"]},
    {"normalize": ["power-l2"], "pca__n_components": [64], "pca__whiten": [True], "svc__C": [1.0, 10.0], "svc__gamma": ["scale"]},
]


def make_pipeline(normalize: str = "none", n_components: int = 512, whiten: bool = True, C: float = 0.4,
                  gamma="scale", random_state: int | None = 0) -> Pipeline:
    """An unfitted ``normalize → PCA → RBF SVC`` pipeline (defaults: the article's).

    Parameters
    ----------
    normalize : {"none", "power-l2"}
        Feature normalisation before PCA (see :class:`~classifiers.preprocess.PowerNormalizer`).
    n_components : int
        PCA components, capped at fit time by the number of training samples.
    whiten, C, gamma
        Passed to PCA and SVC.
    """
    return Pipeline([
        ("normalize", normalize_step(normalize)),
        ("pca", CappedPCA(n_components, whiten=whiten, random_state=random_state)),
        ("svc", SVC(kernel="rbf", C=C, gamma=gamma, random_state=random_state)),
    ])


def _grid_for_pipeline(grid: list[dict]) -> list[dict]:
    # Readable strings in the grid; the pipeline swaps its whole "normalize" step, the sklearn way.
    return [{k: ([normalize_step(n) for n in v] if k == "normalize" else v) for k, v in g.items()} for g in grid]


def _readable(params: dict) -> dict:
    return {k: (normalize_name(v) if k == "normalize" else v) for k, v in params.items()}


class TwoClassSVM(ClassifierMixin, BaseEstimator):
    """PCA + RBF SVC on positives and negatives, tuned by stratified CV (or the article's fixed setup).

    Parameters
    ----------
    search : bool
        True: choose among :data:`SEARCH_GRID` by ``cv``-fold stratified CV (highest mean accuracy,
        ties broken by ROC AUC), then refit the winner on all data. False: the article default.
    cv : int
        Folds of the search (3 keeps it quick; capped by the smaller class).
    n_jobs : int, optional
        Parallel fits of the search (-1: all CPUs).
    max_search_samples : int
        The search runs on a stratified subsample of at most this many rows (the refit uses all):
        it keeps training on 10,000 vectors in seconds, and the choice barely changes with more rows.
    random_state : int
        Seed of folds, subsample and solvers.

    Attributes
    ----------
    pipeline_ : Pipeline
        Fitted ``normalize → pca → svc``.
    threshold_ : float
        Decision threshold on :meth:`decision_function` (0, the SVM's own boundary).
    best_params_ : dict
        Chosen parameters, keys as in :data:`ARTICLE_DEFAULT`.
    search_ : dict or None
        Candidates with their CV accuracy and ROC AUC (mean, std), the chosen index, folds and rows.
    notes_ : list of str
        Remarks for the user, e.g. that PCA components were capped by the number of samples.
    """

    def __init__(self, search: bool = True, cv: int = 3, n_jobs: int | None = -1, max_search_samples: int = 2000,
                 random_state: int = 0):
        self.search = search
        self.cv = cv
        self.n_jobs = n_jobs
        self.max_search_samples = max_search_samples
        self.random_state = random_state

    def fit(self, X, y):
        """Fit on features ``X`` of shape ``(n_samples, n_features)`` and labels ``y`` of shape ``(n_samples,)``.

        ``y`` is 1/True for positives, 0/False for negatives; both classes must be present.
        """
        X = np.asarray(X, dtype=np.float32)
        y = positives_mask(y, need_both=True)
        params, self.search_ = dict(ARTICLE_DEFAULT), None
        if self.search:
            params, self.search_ = self._search(X, y)
        self.best_params_ = params
        self.pipeline_ = make_pipeline(params["normalize"], params["pca__n_components"], params["pca__whiten"],
                                       params["svc__C"], params["svc__gamma"],
                                       random_state=self.random_state)
        self.pipeline_.fit(X, y)
        self.threshold_ = 0.0
        self.classes_ = np.array([False, True])
        pca = self.pipeline_.named_steps["pca"]
        self.notes_ = [f"PCA components capped at {pca.n_components_} (asked {pca.n_components}) by {len(X)} training samples"] if pca.capped_ else []
        return self

    def _search(self, X: np.ndarray, y: np.ndarray) -> tuple[dict, dict]:
        Xs, ys = X, y
        if len(X) > self.max_search_samples:
            Xs, _, ys, _ = train_test_split(X, y, train_size=self.max_search_samples, stratify=y,
                                            random_state=self.random_state)
        folds = max(2, min(int(self.cv), int(ys.sum()), int((~ys).sum())))
        with tempfile.TemporaryDirectory(prefix="stylesift-search-") as cache:
            # Candidates differing only in C share their fold's PCA: the cache fits it once.
            base = make_pipeline(random_state=self.random_state)
            base.memory = joblib.Memory(cache, verbose=0)
            search = GridSearchCV(base, _grid_for_pipeline(SEARCH_GRID),
                                  scoring={"accuracy": "accuracy", "roc_auc": "roc_auc"}, refit=False,
                                  cv=StratifiedKFold(folds, shuffle=True, random_state=self.random_state),
                                  n_jobs=self.n_jobs, error_score="raise")
            search.fit(Xs, ys)
        best = best_candidate(search.cv_results_, ("accuracy", "roc_auc"))
        params = _readable(search.cv_results_["params"][best])
        table = candidate_table(search.cv_results_, ("accuracy", "roc_auc"), _readable)
        return params, {"candidates": table, "best": best, "folds": folds, "rows": len(Xs),
                        "article_default": 0, "selected_by": "mean accuracy, then mean ROC AUC"}

    def decision_function(self, X):
        """Signed distance to the SVM boundary, shape ``(n_samples,)``; higher = more like the positives."""
        check_is_fitted(self, "pipeline_")
        return self.pipeline_.decision_function(np.asarray(X, dtype=np.float32))

    def predict(self, X):
        """True where the score reaches :attr:`threshold_`, shape ``(n_samples,)``."""
        return self.decision_function(X) >= self.threshold_
