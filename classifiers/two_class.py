"""Two-class style model: PCA + RBF SVC, hyperparameters chosen by stratified cross-validation.

The article used ``PCA(n_components=512, whiten=True)`` then ``SVC(kernel="rbf", C=0.4)``, with PCA
fit on all data before the split. With a few hundred images per class, 512 whitened components mostly
amplify noise (the trailing components have tiny variance, whitening scales them up to the leading
ones). That configuration stays available (:data:`ARTICLE_DEFAULT`, ``search=False``) and is one of the
candidates of the search, but the default is chosen by CV, with PCA fit inside every fold.
"""

from __future__ import annotations

import time

import numpy as np
from joblib import effective_n_jobs
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import ParameterGrid, StratifiedKFold, train_test_split
from sklearn.pipeline import Pipeline
from sklearn.svm import SVC
from sklearn.utils.parallel import Parallel, delayed
from threadpoolctl import threadpool_limits

from stylesift.classifiers.base import BinaryClassifierMixin, StyleScorer
from stylesift.classifiers.preprocess import CappedPCA, normalize_step
from stylesift.classifiers.search import best_candidate, candidate_table

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


def _fold_results(candidates: list[dict], Xtr, ytr, Xte, yte, random_state) -> dict[str, np.ndarray]:
    """Accuracy, ROC AUC and seconds of every candidate on one fold, each of shape ``(n_candidates,)``.

    Per normalisation one PCA with the most components any candidate asks for serves them all:
    fewer components are its leading ones, whitening divides by their spread (what
    ``PCA(k, whiten=True)`` computes).
    """
    out = {m: np.zeros(len(candidates)) for m in ("accuracy", "roc_auc", "seconds")}
    projected = {}
    for norm in dict.fromkeys(c["normalize"] for c in candidates):
        started = time.perf_counter()
        k = max(c["pca__n_components"] for c in candidates if c["normalize"] == norm)
        step = normalize_step(norm)
        Ztr, Zte = (Xtr, Xte) if step == "passthrough" else (step.fit_transform(Xtr), step.transform(Xte))
        pca = CappedPCA(k, whiten=False, random_state=random_state).fit(Ztr)
        projected[norm] = (pca.transform(Ztr), pca.transform(Zte), np.sqrt(pca.pca_.explained_variance_),
                           time.perf_counter() - started)
    for i, c in enumerate(candidates):
        Ptr, Pte, spread, pca_seconds = projected[c["normalize"]]
        started = time.perf_counter()
        kk = min(int(c["pca__n_components"]), Ptr.shape[1])
        Ptr, Pte = Ptr[:, :kk], Pte[:, :kk]
        if c["pca__whiten"]:
            Ptr, Pte = Ptr / spread[:kk], Pte / spread[:kk]
        svc = SVC(kernel="rbf", C=c["svc__C"], gamma=c["svc__gamma"], random_state=random_state).fit(Ptr, ytr)
        margin = svc.decision_function(Pte)
        out["accuracy"][i] = np.mean((margin > 0) == yte)  # libsvm's own prediction rule, without a second pass
        out["roc_auc"][i] = roc_auc_score(yte, margin)
        out["seconds"][i] = time.perf_counter() - started + pca_seconds
    return out


class TwoClassSVM(BinaryClassifierMixin, StyleScorer):
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
    offset_ : float
        Threshold on :meth:`score_samples` (0: the SVM's own boundary); also ``threshold_``.
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
        X, y = self._validate_fit(X, y)
        y = self._positives(y)
        params, self.search_ = dict(ARTICLE_DEFAULT), None
        if self.search:
            params, self.search_ = self._search(X, y)
        self.best_params_ = params
        self.pipeline_ = make_pipeline(params["normalize"], params["pca__n_components"], params["pca__whiten"],
                                       params["svc__C"], params["svc__gamma"],
                                       random_state=self.random_state)
        if self.search and len(X) > self.max_search_samples:
            # The PCA of the tuned model learns its directions from a stratified subsample (the
            # decomposition of all 10,000 rows was most of the fit); the SVC is fit on every row.
            sub, _ = train_test_split(np.arange(len(X)), train_size=self.max_search_samples, stratify=y,
                                      random_state=self.random_state)
            # One BLAS thread, as in the search: two threads made this 2,000-row PCA cost 1.8 CPU-seconds
            # instead of 0.3 on a busy two-core machine (spinning threads), for the same components.
            with threadpool_limits(1):
                project = self.pipeline_[:-1].fit(X[sub])
                Z = project.transform(X)
            self.pipeline_[-1].fit(Z, y)
        else:
            self.pipeline_.fit(X, y)
        self.offset_ = 0.0
        pca = self.pipeline_.named_steps["pca"]
        self.notes_ = [f"PCA components capped at {pca.n_components_} (asked {pca.n_components}) by {len(X)} training samples"] if pca.capped_ else []
        return self

    def _search(self, X: np.ndarray, y: np.ndarray) -> tuple[dict, dict]:
        """Rank :data:`SEARCH_GRID` by stratified CV on at most ``max_search_samples`` rows.

        Candidates (:func:`_fold_results`) come in :class:`~sklearn.model_selection.ParameterGrid`
        order, so ties resolve as they did with ``GridSearchCV``.
        """
        Xs, ys = X, y
        if len(X) > self.max_search_samples:
            Xs, _, ys, _ = train_test_split(X, y, train_size=self.max_search_samples, stratify=y,
                                            random_state=self.random_state)
        folds = max(2, min(int(self.cv), int(ys.sum()), int((~ys).sum())))
        splits = list(StratifiedKFold(folds, shuffle=True, random_state=self.random_state).split(Xs, ys))
        candidates = list(ParameterGrid(SEARCH_GRID))
        groups: dict[str, list[int]] = {}
        for i, c in enumerate(candidates):
            groups.setdefault(c["normalize"], []).append(i)
        # One job per fold and normalisation (the candidates sharing one PCA): three folds alone kept
        # one of two cores idle for a third of the search. Jobs run in threads with one BLAS thread
        # each: on a busy machine, BLAS threads that spin while waiting for a core made this search
        # five times slower than single-threaded calls.
        jobs = [(f, idx) for f in range(folds) for idx in groups.values()]
        with threadpool_limits(1):
            parts = Parallel(n_jobs=min(len(jobs), effective_n_jobs(self.n_jobs)), prefer="threads")(
                delayed(_fold_results)([candidates[i] for i in idx], Xs[splits[f][0]], ys[splits[f][0]],
                                       Xs[splits[f][1]], ys[splits[f][1]], self.random_state) for f, idx in jobs)
        acc, auc, seconds = (np.zeros((len(candidates), folds)) for _ in range(3))
        for (f, idx), r in zip(jobs, parts):
            acc[idx, f], auc[idx, f], seconds[idx, f] = r["accuracy"], r["roc_auc"], r["seconds"]
        results = {"params": candidates, "mean_test_accuracy": acc.mean(1), "std_test_accuracy": acc.std(1),
                   "mean_test_roc_auc": auc.mean(1), "std_test_roc_auc": auc.std(1), "mean_fit_time": seconds.mean(1)}
        best = best_candidate(results, ("accuracy", "roc_auc"))
        table = candidate_table(results, ("accuracy", "roc_auc"))
        return dict(candidates[best]), {"candidates": table, "best": best, "folds": folds, "rows": len(Xs),
                                        "article_default": 0, "selected_by": "mean accuracy, then mean ROC AUC"}

    # score_samples (signed distance to the SVM boundary), decision_function and predict: StyleScorer.
