"""RBF one-class SVMs on kernels computed with BLAS: libsvm's model, in a fraction of its time.

libsvm evaluates every RBF kernel value itself, one 2048-d dot product at a time, and re-evaluates
what falls out of its cache: on 5,000 positive pooled vectors a single ``OneClassSVM`` fit took
most of the 34 s that ``train --method one-class`` needed on 10,000 vectors. The same model fit on a
precomputed kernel matrix (one matrix product, then ``exp``) gives the same support vectors and
coefficients up to rounding, and a gamma x nu grid shares one distance matrix per normalisation.

:class:`KernelOneClassSVM` keeps only its support vectors and their coefficients, and scores as
:class:`~stylesift.classifiers.one_class.ScaledOneClassSVM` does: the weighted mean kernel
similarity to the support vectors, in [0, 1].
"""

from __future__ import annotations

import time

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.metrics import roc_auc_score
from sklearn.svm import OneClassSVM
from sklearn.utils.parallel import Parallel, delayed
from sklearn.utils.validation import check_is_fitted, validate_data
from threadpoolctl import threadpool_limits

# Above this many training rows the kernel matrix (8 bytes per entry) would take more than half a
# gigabyte: callers fall back to libsvm's own kernel evaluation.
MAX_KERNEL_ROWS = 8000
_BLOCK_ROWS = 2048


def squared_distances(A: np.ndarray, B: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Squared Euclidean distances, shape ``(len(A), len(B))``, float64, from one float32 matrix product.

    ``out`` (float64, that shape), when given, receives them and is returned.
    """
    A = np.asarray(A, dtype=np.float32)
    B = np.asarray(B, dtype=np.float32)
    G = A @ B.T
    G *= 2.0  # exact in float32
    d = np.add((A * A).sum(axis=1, dtype=np.float64)[:, None], (B * B).sum(axis=1, dtype=np.float64)[None, :], out=out)
    d -= G
    return np.maximum(d, 0.0, out=d)


def rbf_from_distances(d2: np.ndarray, gamma: float) -> np.ndarray:
    """``exp(-gamma * d2)`` as a new float64 array of ``d2``'s shape."""
    return np.exp(-float(gamma) * d2)


def rbf_kernel(X: np.ndarray, gamma: float, block_rows: int = 1024) -> np.ndarray:
    """``rbf_from_distances(squared_distances(X, X), gamma)``, shape ``(n, n)``, float64, built in place.

    The same arithmetic, written row block by row block into the one output array (the ``out`` of
    :func:`squared_distances`): the whole-matrix expression made five fresh ``n x n`` temporaries (2.5 GB touched for 5,000 positives, whose first
    touches were 1.4-1.8 s of system time on a two-core VM); the blocks' temporaries are a few
    ``block_rows x n`` arrays. 5,000 x 2048 rows: 1.1-1.3 s against 2.1-2.5 s, half the memory.
    """
    X = np.asarray(X, dtype=np.float32)
    K = np.empty((len(X), len(X)))
    for start in range(0, len(X), block_rows):
        k = squared_distances(X[start:start + block_rows], X, out=K[start:start + block_rows])
        k *= -float(gamma)
        np.exp(k, out=k)
    return K


class KernelOneClassSVM(BaseEstimator):
    """RBF ``OneClassSVM`` fit on a precomputed kernel; scores = weighted mean similarity to its support vectors.

    Parameters
    ----------
    gamma : float
        RBF kernel width, in 1 / squared feature distance.
    nu : float
        Upper bound on the share of training rows left outside the boundary.
    tol : float
        libsvm's stopping tolerance.

    Attributes
    ----------
    support_vectors_ : ndarray of shape (n_support, n_features), float32
    dual_coef_ : ndarray of shape (n_support,)
        Their weights (libsvm's alphas; they sum to ``nu * n_samples``).
    scale_ : float
        ``dual_coef_.sum()``: divides the kernel sum into a mean similarity.
    rho_ : float
        libsvm's boundary on the unscaled kernel sum.
    offset_ : float
        The same boundary on the :meth:`score_samples` scale (``rho_ / scale_``).
    """

    def __init__(self, gamma: float = 1.0, nu: float = 0.5, tol: float = 1e-3):
        self.gamma = gamma
        self.nu = nu
        self.tol = tol

    def fit(self, X, y=None):
        """Fit on the rows of ``X``, shape ``(n_samples, n_features)``."""
        X = validate_data(self, X, dtype=np.float32)
        return self._fit_kernel(rbf_kernel(X, self.gamma), X)

    def _fit_kernel(self, K: np.ndarray, X: np.ndarray) -> "KernelOneClassSVM":
        """Fit from the training kernel ``K`` (shape ``(n, n)``) of the rows ``X`` (shape ``(n, d)``)."""
        svm = OneClassSVM(kernel="precomputed", nu=self.nu, tol=self.tol).fit(K)
        self.support_vectors_ = np.ascontiguousarray(X[svm.support_], dtype=np.float32)
        self.dual_coef_ = np.asarray(svm.dual_coef_[0], dtype=np.float64)
        self.scale_ = float(self.dual_coef_.sum())
        self.rho_ = float(svm.offset_[0])
        self.offset_ = self.rho_ / self.scale_
        self.n_features_in_ = X.shape[1]
        return self

    def score_samples(self, X):
        """Weighted mean kernel similarity to the support vectors, shape ``(n_samples,)``, in [0, 1]."""
        check_is_fitted(self, "support_vectors_")
        X = validate_data(self, X, dtype=np.float32, reset=False)
        out = np.empty(len(X))
        for start in range(0, len(X), _BLOCK_ROWS):
            block = X[start:start + _BLOCK_ROWS]
            out[start:start + len(block)] = rbf_from_distances(
                squared_distances(block, self.support_vectors_), self.gamma) @ self.dual_coef_
        return out / self.scale_

    def decision_function(self, X):
        """``score_samples(X) − offset_``: ≥ 0 inside libsvm's boundary, shape ``(n_samples,)``."""
        return self.score_samples(X) - self.offset_

    @property
    def boundary_(self) -> float:
        """libsvm's decision boundary on the :meth:`score_samples` scale (``offset_``)."""
        return self.offset_

    def predict(self, X):
        return np.where(self.decision_function(X) >= 0, 1, -1)


def held_out_kernel_scores(K: np.ndarray, splits, nu: float, tol: float = 1e-3) -> np.ndarray:
    """Out-of-fold scores of one-class SVMs fit on each split's training rows of the full kernel ``K``.

    Parameters
    ----------
    K : ndarray of shape (n_samples, n_samples)
        RBF kernel of every row against every row.
    splits : list of (train, test) index arrays
        ``train`` holds the rows to fit on (positives), ``test`` the rows to score.

    Returns
    -------
    ndarray of shape (n_samples,): each test row's weighted mean similarity under its fold's model.
    """
    scores = np.full(len(K), np.nan)
    for train, test in splits:
        svm = OneClassSVM(kernel="precomputed", nu=nu, tol=tol).fit(K[np.ix_(train, train)])
        alpha = svm.dual_coef_[0]
        scores[test] = K[np.ix_(test, train[svm.support_])] @ alpha / float(alpha.sum())
    return scores


def kernel_grid_search(X: np.ndarray, positive: np.ndarray, splits, normalizers: dict, gammas, nus,
                       n_jobs: int | None = -1) -> list[dict]:
    """Every ``normalizer x gamma x nu`` candidate's out-of-fold scores and per-fold ROC AUC.

    One distance matrix per normaliser serves all its gammas, one kernel all its nus.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
    positive : ndarray of bool, shape (n_samples,)
    splits : list of (train, test)
        As :func:`~stylesift.classifiers.one_class.validation_splits` gives them.
    normalizers : dict
        Name -> unfitted transformer, or ``None``/``"passthrough"`` for none.
    n_jobs : int, optional
        Threads over the gammas (-1: all CPUs).

    Returns
    -------
    list of dicts ``{"normalize", "gamma", "nu", "scores", "fold_roc_auc", "seconds"}`` in grid order.
    """
    def one_gamma(name, d2, gamma):
        K = rbf_from_distances(d2, gamma)
        rows = []
        for nu in nus:
            started = time.perf_counter()
            scores = held_out_kernel_scores(K, splits, nu)
            rows.append({"normalize": name, "gamma": float(gamma), "nu": float(nu), "scores": scores,
                         "fold_roc_auc": [float(roc_auc_score(positive[t], scores[t])) for _, t in splits],
                         "seconds": (time.perf_counter() - started) / len(splits)})
        return rows

    distances = {}
    for name, step in normalizers.items():
        Z = X if step is None or step == "passthrough" else step.fit(X).transform(X)
        distances[name] = squared_distances(Z, Z)
    # libsvm and exp release the GIL: (normaliser, gamma) pairs run in threads, all in one pool (per
    # normaliser, 5 gammas on 2 cores left one idle for a round), BLAS kept to one thread each (BLAS
    # threads spinning for a core on a busy machine cost more than they bring).
    with threadpool_limits(1):
        parts = Parallel(n_jobs=n_jobs, prefer="threads")(delayed(one_gamma)(name, d2, g)
                                                          for name, d2 in distances.items() for g in gammas)
    return [row for rows in parts for row in rows]
