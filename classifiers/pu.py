"""Positive-unlabelled (PU) style model: hand-picked positives against the unlabelled feed.

Elkan & Noto (2008), "Learning classifiers from only positive and unlabeled data": if the labelled
positives are a random sample of all positives (a share ``c`` of them, the *label frequency*), a
classifier ``g(x) = p(s=1 | x)`` of labelled-vs-unlabelled rows ranks exactly as the wanted
``p(y=1 | x) = g(x) / c``. ``c`` is the mean of ``g`` over held-out labelled positives, and from it
follows the share of positives hidden in the unlabelled rows (the class prior).

Every number here is read off *out-of-fold* scores: the rows are split into ``cv`` folds and each
fold's rows are scored by a model that never saw them (cross-fitting). Scores of the labelled rows
a model trained on are pushed up by that very training, so ``c`` read off them would be too high and
the prior too low. New rows are scored by the mean log-odds of the ``cv`` fold models (bagging).

The fold classifier is ``StandardScaler → LogisticRegression``: on 2048-d pooled features it fits in
well under a second per fold and needs no kernel. Both steps are linear in ``x``, so each fold model
is one weight vector, and the mean of their log-odds is again one linear model: the fitted
``pipeline_`` is a single ``LogisticRegression`` holding the averaged weights (a type that model
bundles already load).
"""

from __future__ import annotations

import warnings

import numpy as np
from joblib import effective_n_jobs
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.utils.parallel import Parallel, delayed
from sklearn.utils.validation import check_is_fitted
from threadpoolctl import threadpool_limits

from stylesift.classifiers.base import BinaryClassifierMixin, StyleScorer

# Priors outside [PRIOR_FLOOR, 1 - PRIOR_FLOOR] are clipped: a prior of exactly 0 or 1 would put the
# threshold at minus or plus infinity, and an estimate that extreme means the model found no
# difference between the feeds rather than a real share.
PRIOR_FLOOR = 0.001
# C="auto": the penalties tried, and the unlabelled rows the choice is made on (the choice needs the
# shape of the data, not all of it: the trial fits on 5,000 rows cost less than one fit on 100,000).
C_GRID = (0.001, 0.003, 0.01, 0.03, 0.1)
SELECT_BACKGROUND = 5000
# Fewer labelled positives than this and the weighted refit is skipped: its weights hang on c and the
# calibration, which a handful of positives cannot pin down (the demo's compare, ~11 labelled positives:
# pu ROC AUC 0.762 with the refit against 0.938 without; food-vs-snapshots with --pu-hidden 0.9, ~40
# labelled: 0.9997 against 0.9988; the shared stores at 0.67, 130+: the refit helps).
REWEIGHT_MIN_LABELLED = 30

THRESHOLDS = ("prior", "posterior")


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(z, dtype=float)))  # no overflow warning for large |z|


def _logit(p: float) -> float:
    p = float(np.clip(p, 1e-12, 1 - 1e-12))
    return float(np.log(p) - np.log1p(-p))


def _fit_fold(X: np.ndarray, rows: np.ndarray, target: np.ndarray, weight: np.ndarray, C: float,
              max_iter: int) -> tuple[np.ndarray, float, int]:
    """One fold's labelled-vs-unlabelled classifier, as weights on the raw features.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features), float32
    rows : ndarray of int, shape (n_train,)
        Training rows of the fold.
    target, weight : ndarray of shape (n_train,)
        1 for labelled positives, 0 for background rows; each row's sample weight. ``rows`` may
        repeat a row (the reweighted refit trains each background row once as each class).

    Returns
    -------
    coef : ndarray of shape (n_features,)
        ``coef @ x + intercept`` is the fold model's log-odds of ``x`` being labelled.
    intercept : float
    n_iter : int
        lbfgs iterations.
    """
    Xtr = X[rows]  # a copy: standardised in place below
    # Weighted moments (as one matrix-vector product each), so that the scaling is the one of the
    # full background, not of its subsample. The weights are folded back into raw-feature
    # coefficients below, so any scaling gives the same model; this one only conditions lbfgs.
    w32 = (weight / weight.sum()).astype(np.float32)
    mean = w32 @ Xtr
    Xtr -= mean
    scale = np.sqrt(w32 @ (Xtr * Xtr))
    scale[scale == 0] = 1.0  # constant features (StandardScaler's rule): weight 0 after the fit anyway
    Xtr /= scale
    lr = LogisticRegression(C=C, max_iter=max_iter).fit(Xtr, target, sample_weight=weight)
    coef = lr.coef_[0] / scale
    return coef, float(lr.intercept_[0] - coef @ mean), int(lr.n_iter_[0])


def _subsample(pool: np.ndarray, cap: int, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """``pool`` itself, or ``cap`` of its entries drawn without replacement (sorted), and the weight
    each kept entry gets to stand for the whole pool (``len(pool) / len(kept)``, 1 when none was dropped)."""
    if len(pool) <= cap:
        return pool, 1.0
    return np.sort(rng.choice(pool, int(cap), replace=False)), len(pool) / int(cap)


def _linear_model(coef: np.ndarray, intercept: float, classes: np.ndarray) -> LogisticRegression:
    """A fitted ``LogisticRegression`` whose log-odds are ``X @ coef + intercept`` (``coef``: shape ``(n_features,)``)."""
    lr = LogisticRegression()
    lr.classes_ = np.asarray(classes)
    # float32 like the features: a float64 weight vector makes numpy copy every row block to float64
    # first (three times the cost of the product itself on 100,000 × 2048 rows).
    lr.coef_ = np.asarray(coef, dtype=np.float32).reshape(1, -1)
    lr.intercept_ = np.array([float(intercept)])
    lr.n_features_in_ = lr.coef_.shape[1]
    lr.n_iter_ = np.array([0], dtype=np.int32)
    return lr


def platt(scores: np.ndarray, target: np.ndarray, iterations: int = 50) -> tuple[float, float]:
    """Slope and intercept of the 1-d logistic regression of ``target`` on ``scores`` (Newton steps).

    Parameters
    ----------
    scores : ndarray of shape (n_samples,)
        Out-of-fold log-odds.
    target : ndarray of bool, shape (n_samples,)

    Returns
    -------
    (a, b) : tuple of float
        ``sigmoid(a * score + b)`` is the calibrated ``p(s=1 | x)``.
    """
    z = np.asarray(scores, dtype=float)
    t = np.asarray(target, dtype=float)
    center, spread = float(z.mean()), float(z.std()) or 1.0
    u = (z - center) / spread  # conditioned: raw log-odds span tens of units
    a, b = 1.0, _logit(t.mean())
    for _ in range(iterations):
        p = _sigmoid(a * u + b)
        w = p * (1 - p) + 1e-12
        grad = np.array([np.dot(u, p - t), np.sum(p - t)]) + np.array([1e-6 * a, 0.0])
        hess = np.array([[np.dot(w, u * u) + 1e-6, np.dot(w, u)], [np.dot(w, u), w.sum()]])
        step = np.linalg.solve(hess, grad)
        a, b = a - step[0], b - step[1]
        if np.abs(step).max() < 1e-10:
            break
    return float(a / spread), float(b - a * center / spread)


def estimate_prior(oof_labelled: np.ndarray, oof_background: np.ndarray, oof_other: np.ndarray | None = None) -> dict:
    """Elkan–Noto estimates from out-of-fold log-odds of labelled and unlabelled rows.

    Parameters
    ----------
    oof_labelled : ndarray of shape (n_labelled,)
        Out-of-fold log-odds ``logit g(x)`` of the labelled positives.
    oof_background : ndarray of shape (n_unlabelled,)
        The same for the unlabelled rows.

    Returns
    -------
    dict
        ``label_frequency``: Elkan–Noto's e1, ``c = mean g`` over the labelled positives;
        ``prior_count``: hidden positives implied by ``c``, ``n_L (1 − c) / c``, over ``n_U``;
        ``prior_weight``: mean over the unlabelled rows of Elkan–Noto's weight
        ``p(y=1 | x, s=0) = (1 − c)/c · g/(1 − g)`` (capped at 1);
        ``prior_e2``: the count estimate with e2, ``c = Σ_L g / Σ_{L∪U} g``;
        ``prior_calibrated``: ``prior_weight`` with ``g`` first calibrated by :func:`platt` on the
        out-of-fold scores of every row (``oof_other``: known negatives, which the fold models also
        learnt as ``s = 0``), and ``label_frequency_calibrated``, its ``c``;
        ``calibration``: the ``(a, b)`` of that calibration.
        All unclipped.
    """
    g_l, g_u = _sigmoid(oof_labelled), _sigmoid(oof_background)
    n_l, n_u = len(g_l), len(g_u)
    c = float(np.mean(g_l))
    c2 = float(g_l.sum() / (g_l.sum() + g_u.sum()))
    odds = np.exp(np.clip(oof_background, -50, 50))
    other = np.zeros(0) if oof_other is None else np.asarray(oof_other, dtype=float)
    a, b = platt(np.concatenate([oof_labelled, oof_background, other]),
                 np.r_[np.ones(n_l, bool), np.zeros(n_u + len(other), bool)])
    cal_l, cal_u = a * np.asarray(oof_labelled) + b, a * np.asarray(oof_background) + b
    cc = float(np.mean(_sigmoid(cal_l)))
    return {"label_frequency": c,
            "prior_count": n_l * (1 - c) / (c * n_u),
            "prior_weight": float(np.mean(np.minimum(1.0, (1 - c) / c * odds))),
            "prior_e2": n_l * (1 - c2) / (c2 * n_u),
            "prior_calibrated": float(np.mean(np.minimum(1.0, (1 - cc) / cc * np.exp(np.clip(cal_u, -50, 50))))),
            "label_frequency_calibrated": cc, "calibration": (a, b)}


class PUClassifier(BinaryClassifierMixin, StyleScorer):
    """Elkan–Noto PU learning with cross-fitted, bagged logistic regressions of labelled-vs-unlabelled rows.

    Parameters
    ----------
    cv : int
        Folds of the cross-fitting (capped by the number of labelled positives, at least 2).
    C : float or "auto"
        Inverse L2 penalty of each fold's logistic regression, on standardised features. ``"auto"``
        (default) picks one of :data:`C_GRID` by the out-of-fold log-loss of labelled-vs-unlabelled
        (the one thing PU data can score without true labels), on at most :data:`SELECT_BACKGROUND`
        unlabelled rows. Why: the right penalty depends on the features. On film-grade's 1536-d
        style features with 100 labelled positives, C=0.1 estimated a prior of 0.26 for a true 0.40
        (AUC 0.94) and C=0.003 0.38 (AUC 0.98); on 64-d blobs C=0.003 overshot by 0.08. The
        log-loss picks 0.003 and 0.01 there, both within 0.02. On the pooled content stores it picks
        0.001 (added to the grid for them: ROC AUC 0.9997 / 0.9993 / 0.9941 on food, camera and
        nature against 0.9990 / 0.9979 / 0.9919 with 0.003 the smallest; benchmarks, "PU: C = 0.001").
    threshold : {"prior", "posterior"}
        Where ``offset_`` goes when ``target_recall`` is None. ``"prior"`` (default): the top
        ``class_prior_`` share of the unlabelled rows, as the fitted model scores them, are selected.
        ``"posterior"``: Elkan–Noto's ``p(y=1 | x) = g(x) / c`` reaches 0.5. "posterior" was as
        accurate or more on twelve low-dimensional synthetic tasks (64/256-d blobs), but on 2048-d
        features with tens of labelled positives ``c`` comes out far too low (0.05 for a true 0.33)
        and it picked 1 % of a feed holding 25 % positives (accuracy 0.76 against 0.89 for "prior"),
        while the prior estimate itself stayed within 0.02.
    target_recall : float, optional
        If given, ``offset_`` is the score that this share of the labelled positives' out-of-fold
        scores reaches, whatever the prior.
    max_background : int
        Unlabelled rows each fold model trains on, at most; more are subsampled per fold and the
        kept ones weighted up to stand for all of them (so ``g`` stays calibrated). Why: the fit
        cost grows with the rows while its accuracy is set by the few labelled positives; past
        ~20 unlabelled rows per positive the first models' log-odds barely move. With ``reweight``
        those models only weigh the rows and give the prior, and 5,000 rows did better than 20,000
        (1,000 positives + 100,000 jittered content rows, 38% / 20% of them positive: refit ROC AUC
        on fresh rows 0.9986 / 0.9993 against 0.9978 / 0.9990, prior 0.354 / 0.190 against 0.349 /
        0.179), 1.7 s faster. Every row is still *scored* out of fold.
    reweight : bool
        Refit each fold model as Elkan & Noto's weighted classifier of ``p(y=1 | x)`` (their section
        4): every labelled positive counts as a positive, and every unlabelled row twice, as a
        positive with weight ``w = p(y=1 | x, s=0) = (1 − c)/c · g/(1 − g)`` (capped at 1; ``g``
        calibrated, from the fold's first model) and as a negative with weight ``1 − w``. Why: the
        hidden positives stop counting as negatives, and the ranking of the feed improves where
        ``g`` alone was blurred by them (content stores, pooled: ROC AUC 0.9999 / 0.9997 / 0.9951
        on food, camera and nature against 0.9997 / 0.9993 / 0.9941; benchmarks, "PU: the weighted
        refit"). On 100,000 jittered copies of a few thousand images it ranked fresh ones a little
        worse (0.9986 against 0.9995) and thresholded them better (accuracy 0.969 against 0.953):
        ``False`` gives the first models alone. The prior, ``c`` and the calibration stay those of
        the first models. Skipped, with a note, below ``REWEIGHT_MIN_LABELLED`` (30) labelled
        positives. Each refit starts cold: warm-started from the first model, lbfgs took
        more iterations (92 against 58-65 on the content stores), the optimum lying elsewhere.
    max_reweight_background : int
        Unlabelled rows each refit trains on, at most (subsampled and weighted up as for
        ``max_background``). Why: each row enters twice, and the refit's accuracy, like the first
        fit's, is set by the few labelled positives; this keeps the refit's cost flat in the feed.
    max_iter : int
        lbfgs iterations per fold.
    n_jobs : int, optional
        Folds fit in parallel threads (BLAS kept to one thread each); None: one after the other.
    random_state : int
        Seed of the folds and the background subsamples.

    Attributes
    ----------
    pipeline_ : Pipeline
        ``logistic``: one ``LogisticRegression`` holding the mean of the fold models' weights, so its
        decision function is their mean log-odds: ``logit g(x)`` (see the module docstring), or with
        ``reweight`` the refits' ``logit p(y=1 | x)``.
    offset_ : float
        Threshold on :meth:`score_samples` (the bagged log-odds); also ``threshold_``.
    classes_ : ndarray of shape (2,)
        Label values of ``s``; the greater one marks the labelled positives.
    class_prior_ : float
        Estimated share of positives hidden among the unlabelled rows: Elkan–Noto's weighted
        estimate with ``g`` calibrated on the out-of-fold scores (``prior_calibrated`` of
        :func:`estimate_prior`), clipped to ``[PRIOR_FLOOR, 1 − PRIOR_FLOOR]`` with a warning when
        it was. Why calibrated: the penalised fold models shrink their log-odds, and on 2048-d
        pooled and 2048-d style+detail features the uncalibrated estimate came out 0.05–0.07 low
        (0.31–0.35 for 0.38–0.40 on six stores), the calibrated one within 0.04 on average
        (benchmarks: "PU with detail"). On a 60-positive synthetic store it overshoots instead.
    label_frequency_ : float
        Elkan–Noto's ``c = p(s=1 | y=1)``: mean calibrated out-of-fold ``g`` of the labelled positives.
    calibration_ : tuple of float
        ``(a, b)``: ``sigmoid(a * score + b)`` is the calibrated ``g`` of a score of :meth:`score_samples`
        (Platt scaling fit on every training row's out-of-fold score).
    prior_estimates_ : dict
        The estimates of :func:`estimate_prior`, unclipped (``class_prior_`` is ``prior_calibrated``).
    background_rows_ : int
        Unlabelled rows in the fit (known negatives not counted).
    fold_background_rows_ : ndarray of int, shape (n_folds,)
        Unlabelled rows each fold model trained on (at most ``max_background``).
    reweighted_ : bool
        Whether the weighted refit ran (``reweight`` and at least ``REWEIGHT_MIN_LABELLED`` labelled
        positives; otherwise a note says why not).
    reweight_background_rows_ : ndarray of int, shape (n_folds,)
        With ``reweight``: unlabelled rows each refit trained on (at most ``max_reweight_background``;
        a row certain to be one class enters once, as that class).
    oof_scores_ : ndarray of shape (n_samples,)
        Each training row's log-odds under the fold model that did not see it: the scores to judge
        training rows by (``score_samples`` of a training row comes from models that saw it).
    folds_ : ndarray of int, shape (n_samples,)
        The fold whose held-out part each training row was.
    fold_coef_ : ndarray of shape (n_folds, n_features)
    fold_intercept_ : ndarray of shape (n_folds,)
        Each fold model's log-odds ``X @ fold_coef_[k] + fold_intercept_[k]`` on raw features.
    C_ : float
        The penalty used (the chosen one when ``C="auto"``).
    C_losses_ : dict
        ``C="auto"`` only: out-of-fold log-loss of each tried C.
    best_params_ : dict
    notes_ : list of str
    """

    def __init__(self, cv: int = 5, C: float | str = "auto", threshold: str = "prior", target_recall: float | None = None,
                 max_background: int = 5000, reweight: bool = True, max_reweight_background: int = 3000,
                 max_iter: int = 500, n_jobs: int | None = None, random_state: int = 0):
        self.cv = cv
        self.C = C
        self.threshold = threshold
        self.target_recall = target_recall
        self.max_background = max_background
        self.reweight = reweight
        self.max_reweight_background = max_reweight_background
        self.max_iter = max_iter
        self.n_jobs = n_jobs
        self.random_state = random_state

    def fit(self, X, y, negative=None):
        """Fit on ``X`` (shape ``(n_samples, n_features)``) and ``y`` (``s``), shape ``(n_samples,)``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
            ``s``: 1/True for a hand-picked (labelled) positive, 0/False for an unlabelled row.
            There is no third value: -1 means "unlabelled" in some PU libraries and "negative" in
            others, so known negatives come as ``negative`` instead.
        negative : array-like of bool, shape (n_samples,), optional
            True for rows known to be negative (their ``y`` must be 0). They are always trained on
            as background rows with weight 1, never subsampled, and left out of the prior.
        """
        if self.threshold not in THRESHOLDS:
            raise ValueError(f"threshold must be one of {', '.join(THRESHOLDS)}, not {self.threshold!r}")
        if self.target_recall is not None and not 0 < self.target_recall < 1:
            raise ValueError(f"target_recall must be between 0 and 1, not {self.target_recall}")
        X, y = self._validate_fit(X, y)
        labelled = self._positives(y)
        known = np.zeros(len(X), bool) if negative is None else np.asarray(negative, dtype=bool).reshape(-1)
        if known.shape != labelled.shape:
            raise ValueError(f"negative must have one value per row ({len(X)}), got shape {np.shape(negative)}")
        if (known & labelled).any():
            raise ValueError(f"{int((known & labelled).sum())} rows are both labelled positives and known negatives")
        background = ~labelled & ~known
        if background.sum() < 2:
            raise ValueError(f"PU learning needs unlabelled rows to learn against; got {int(background.sum())}")
        self.C_ = self._choose_C(X, y, negative) if isinstance(self.C, str) and self.C == "auto" else float(self.C)
        # A row's fold depends only on the labels and the seed, never on feature values.
        k = max(2, min(int(self.cv), int(labelled.sum()), int(background.sum())))
        strata = labelled.astype(int) + 2 * known
        self.folds_ = np.empty(len(X), dtype=np.int64)
        for i, (_, test) in enumerate(StratifiedKFold(k, shuffle=True, random_state=self.random_state).split(X, strata)):
            self.folds_[test] = i
        jobs = self._fold_jobs(labelled, known, background, k)
        self._set_folds(X, self._fit_jobs(X, jobs))
        self.fold_background_rows_ = np.array([int(background[rows].sum()) for rows, _, _ in jobs])
        self.background_rows_ = int(background.sum())
        self._set_prior(labelled, background, known)
        self.reweighted_ = bool(self.reweight and labelled.sum() >= REWEIGHT_MIN_LABELLED)
        if self.reweight and not self.reweighted_:
            self._notes.append(f"{int(labelled.sum())} labelled positives, fewer than {REWEIGHT_MIN_LABELLED}: "
                               "no weighted refit (the first fit alone)")
        if self.reweighted_:
            jobs = self._reweight_jobs(X, jobs, background)
            self.reweight_background_rows_ = np.array([int(np.unique(rows[background[rows]]).size)
                                                       for rows, _, _ in jobs])
            self._set_folds(X, self._fit_jobs(X, jobs))
        self._set_offset(X, labelled, background)
        self.best_params_ = {"C": self.C_, "cv": k, "threshold": self._threshold_rule(),
                             "class_prior": round(self.class_prior_, 4), "label_frequency": round(self.label_frequency_, 4)}
        self.notes_ = list(self._notes)
        available = self.background_rows_ - np.bincount(self.folds_[background], minlength=k)
        if (self.fold_background_rows_ < available).any():
            self.notes_.append(f"each fold model trained on {int(self.fold_background_rows_.max())} of the "
                               f"{self.background_rows_} unlabelled rows (max_background); all were scored out of fold")
        return self

    def _choose_C(self, X, y, negative) -> float:
        """The grid's C with the lowest out-of-fold log-loss of ``s`` (see the ``C`` parameter)."""
        labelled = np.asarray(y) == self.classes_[1]
        known = np.zeros(len(X), bool) if negative is None else np.asarray(negative, dtype=bool).reshape(-1)
        pool = np.flatnonzero(~labelled & ~known)
        rng = np.random.default_rng(self.random_state)
        if len(pool) > SELECT_BACKGROUND:
            pool = rng.choice(pool, SELECT_BACKGROUND, replace=False)
        rows = np.sort(np.concatenate([np.flatnonzero(labelled | known), pool]))
        losses = {}
        # Smallest C first (the cheapest fits: fewer lbfgs iterations), stopping at the first rise of
        # the loss: on every store measured it fell or rose monotonically along the grid, and the
        # largest C cost more than the three others together (125 iterations against 31 at 0.003).
        for C in sorted(C_GRID):
            trial = PUClassifier(cv=self.cv, C=C, threshold="posterior", max_background=self.max_background,
                                 reweight=False, max_iter=self.max_iter, n_jobs=self.n_jobs,
                                 random_state=self.random_state)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # a trial's clipped prior is not the final model's
                trial.fit(X[rows], labelled[rows].astype(int), negative=known[rows])
            p = np.clip(_sigmoid(trial.oof_scores_), 1e-12, 1 - 1e-12)
            s = labelled[rows]
            losses[C] = float(-np.mean(np.where(s, np.log(p), np.log1p(-p))))
            if len(losses) > 1 and losses[C] > min(losses.values()):
                break
        self.C_losses_ = losses
        return min(losses, key=losses.get)

    def _fit_jobs(self, X, jobs) -> list[tuple[np.ndarray, float, int]]:
        with threadpool_limits(1 if self.n_jobs not in (None, 1) else None):
            return Parallel(n_jobs=min(len(jobs), effective_n_jobs(self.n_jobs)), prefer="threads")(
                delayed(_fit_fold)(X, rows, target, weight, self.C_, self.max_iter) for rows, target, weight in jobs)

    def _set_folds(self, X, fits) -> None:
        self.fold_coef_ = np.stack([f[0] for f in fits])
        self.fold_intercept_ = np.array([f[1] for f in fits])
        self.n_iter_ = np.array([f[2] for f in fits])
        # One float32 product for every fold model at once (X[held] would copy the rows first).
        every = X @ self.fold_coef_.T.astype(np.float32)
        self.oof_scores_ = every[np.arange(len(X)), self.folds_].astype(float) + self.fold_intercept_[self.folds_]
        self.pipeline_ = Pipeline([("logistic", _linear_model(self.fold_coef_.mean(0), self.fold_intercept_.mean(),
                                                              self.classes_))])

    def _reweight_jobs(self, X, jobs, background) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Per fold: the weighted refit's rows, targets and weights (see the ``reweight`` parameter).

        Each fold's refit uses only that fold's training rows, scored by that fold's first model;
        its held-out rows reach it only through the three scalars ``a, b, c`` of the calibration.
        """
        rng = np.random.default_rng(self.random_state + 1)
        a, b = self.calibration_
        c = self.label_frequency_
        out = []
        for i, (rows, target, weight) in enumerate(jobs):
            bg = background[rows]
            keep, up = _subsample(np.flatnonzero(bg), self.max_reweight_background, rng)
            bw = weight[keep] * up
            z = X[rows[keep]] @ self.fold_coef_[i].astype(np.float32) + self.fold_intercept_[i]
            w = np.minimum(1.0, (1 - c) / c * np.exp(np.clip(a * z + b, -50, 50)))
            fixed = np.flatnonzero(~bg)
            r = np.concatenate([rows[fixed], rows[keep], rows[keep]])
            t = np.concatenate([target[fixed], np.ones(len(keep), int), np.zeros(len(keep), int)])
            sw = np.concatenate([weight[fixed], bw * w, bw * (1 - w)])
            used = sw > 0  # a row that is surely one class needs no copy as the other
            if t[used].min() == t[used].max():  # degenerate (every copy one class): sklearn needs both
                used[:] = True
            out.append((r[used], t[used], sw[used]))
        return out

    def _fold_jobs(self, labelled, known, background, k) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Per fold: training rows (sorted), their targets (1 = labelled) and sample weights."""
        rng = np.random.default_rng(self.random_state)
        jobs = []
        for i in range(k):
            out = self.folds_ != i
            fixed = np.flatnonzero(out & (labelled | known))
            keep, up = _subsample(np.flatnonzero(out & background), self.max_background, rng)
            rows = np.concatenate([fixed, keep])
            order = np.argsort(rows, kind="stable")
            target = labelled[rows].astype(int)
            weight = np.where(background[rows], up, 1.0)
            jobs.append((rows[order], target[order], weight[order]))
        return jobs

    def _linear(self, fold: int) -> LogisticRegression:
        return _linear_model(self.fold_coef_[fold], self.fold_intercept_[fold], self.classes_)

    def _set_prior(self, labelled, background, known) -> None:
        self._notes = []
        est = estimate_prior(self.oof_scores_[labelled], self.oof_scores_[background], self.oof_scores_[known])
        self.prior_estimates_ = est
        self.calibration_ = tuple(est["calibration"])
        self.label_frequency_ = float(est["label_frequency_calibrated"])
        prior = float(est["prior_calibrated"])
        clipped = float(np.clip(prior, PRIOR_FLOOR, 1 - PRIOR_FLOOR))
        if clipped != prior:
            reason = ("the unlabelled rows look like the labelled positives no more often than chance: nearly none "
                      "of them seem to be hidden positives" if prior < PRIOR_FLOOR else
                      "nearly every unlabelled row looks like a positive: the labelled positives may not be a random "
                      "sample of the positives, or the feed holds hardly any negatives")
            message = f"estimated class prior {prior:.4g} clipped to {clipped:g}: {reason}"
            warnings.warn(message, UserWarning, stacklevel=3)
            self._notes.append(message)
        self.class_prior_ = clipped

    def _threshold_rule(self) -> str:
        return f"target_recall {self.target_recall}" if self.target_recall is not None else self.threshold

    def _set_offset(self, X, labelled, background) -> None:
        if self.target_recall is not None:
            self.offset_ = float(np.quantile(self.oof_scores_[labelled], 1 - self.target_recall, method="lower"))
        elif self.threshold == "posterior" and self.reweighted_:
            self.offset_ = 0.0  # the refits' log-odds are those of p(y=1 | x) itself
        elif self.threshold == "posterior":
            # g / c >= 1/2  <=>  calibrated g >= c / 2  <=>  a * score + b >= logit(c / 2)
            a, b = self.calibration_
            self.offset_ = (_logit(self.label_frequency_ / 2) - b) / a
        else:
            # The quantile is read off the *bagged* model's scores of the unlabelled rows, the very
            # scores a team gets when it scores this feed: those models saw the rows, which moves
            # their scores away from the out-of-fold ones, so an out-of-fold cut would pick too few.
            logistic = self.pipeline_.named_steps["logistic"]
            bagged = (X @ logistic.coef_[0])[background] + logistic.intercept_[0]  # no copy of the rows
            self.offset_ = float(np.quantile(bagged, 1 - self.class_prior_, method="higher"))

    def posterior(self, X) -> np.ndarray:
        """Elkan–Noto's ``p(y=1 | x)`` for rows ``X`` (shape ``(n_samples, n_features)``): shape ``(n_samples,)``.

        After the weighted refit, the sigmoid of the refits' bagged log-odds; without, ``g(x) / c`` capped at 1.
        """
        check_is_fitted(self, "pipeline_")
        if self.reweighted_:
            return _sigmoid(self.score_samples(X))
        a, b = self.calibration_
        return np.minimum(1.0, _sigmoid(a * self.score_samples(X) + b) / self.label_frequency_)

    # score_samples (bagged log-odds of being a labelled positive), decision_function and predict: StyleScorer.
