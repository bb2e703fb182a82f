"""Preprocessing steps for pooled CNN vectors: power/L2 normalisation and a PCA that fits any sample size.

Pooled ResNet features are non-negative and heavy-tailed: a few channels fire far above the rest and
dominate Euclidean distances. A square root evens them out, and L2 normalisation makes the RBF
kernel compare directions rather than magnitudes. Both are stateless, so they are leak-free in CV.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, OneToOneFeatureMixin, TransformerMixin
from sklearn.decomposition import PCA
from sklearn.utils.validation import check_is_fitted, validate_data


class PowerNormalizer(OneToOneFeatureMixin, TransformerMixin, BaseEstimator):
    """``sign(x) * |x| ** alpha``, then each row scaled to unit L2 norm.

    Parameters
    ----------
    alpha : float
        Power applied to magnitudes; 1 keeps them, 0.5 is the usual square root.
    l2 : bool
        Whether rows are scaled to unit Euclidean length afterwards (an all-zero row stays zero).
    """

    def __init__(self, alpha: float = 0.5, l2: bool = True):
        self.alpha = alpha
        self.l2 = l2

    def fit(self, X, y=None):
        """Record the number of features; nothing is learned.

        Parameters
        ----------
        X : ndarray of shape (n_samples, n_features)
        """
        validate_data(self, X, dtype=[np.float64, np.float32])
        return self

    def transform(self, X):
        """Normalised copy of ``X``, shape ``(n_samples, n_features)``, same float dtype."""
        check_is_fitted(self, "n_features_in_")
        X = validate_data(self, X, dtype=[np.float64, np.float32], reset=False)
        out = np.sign(X) * np.abs(X) ** self.alpha if self.alpha != 1 else X.copy()
        if self.l2:
            norms = np.linalg.norm(out, axis=1, keepdims=True)
            out /= np.where(norms > 0, norms, 1)
        return out


class CappedPCA(TransformerMixin, BaseEstimator):
    """:class:`~sklearn.decomposition.PCA` whose ``n_components`` is capped by the training set.

    Centred data of ``n`` samples has rank at most ``n - 1``, so asking for more components fails in
    PCA (or, with ``whiten=True``, divides noise by variances near zero). The cap is applied in
    ``fit``, which is what cross-validation needs: each fold caps by its own training size.

    Parameters
    ----------
    n_components : int
        Components wanted.
    whiten : bool
        Scale each component to unit variance (as the article's ``PCA(512, whiten=True)``).
    random_state : int, optional
        Seed of the randomized SVD solver.

    Attributes
    ----------
    pca_ : PCA
        The fitted PCA.
    n_components_ : int
        Components actually kept, ``min(n_components, n_samples - 1, n_features)``.
    capped_ : bool
        Whether fewer components than asked were kept.
    """

    def __init__(self, n_components: int = 512, whiten: bool = False, random_state: int | None = 0):
        self.n_components = n_components
        self.whiten = whiten
        self.random_state = random_state

    def fit(self, X, y=None):
        """Fit the PCA on ``X`` of shape ``(n_samples, n_features)``."""
        self.fit_transform(X)
        return self

    def fit_transform(self, X, y=None):
        X = validate_data(self, X, dtype=[np.float64, np.float32])
        limit = max(1, min(X.shape[0] - 1, X.shape[1]))
        self.n_components_ = min(int(self.n_components), limit)
        self.capped_ = self.n_components_ < int(self.n_components)
        self.pca_ = PCA(self.n_components_, whiten=self.whiten, random_state=self.random_state)
        return self.pca_.fit_transform(X)

    def transform(self, X):
        """Projection of ``X``, shape ``(n_samples, n_components_)``."""
        check_is_fitted(self, "pca_")
        return self.pca_.transform(validate_data(self, X, dtype=[np.float64, np.float32], reset=False))

    def get_feature_names_out(self, input_features=None):
        return np.array([f"pca{i}" for i in range(self.n_components_)], dtype=object)


NORMALIZATIONS = ("none", "l2", "power-l2")


def normalize_step(name: str):
    """The pipeline step for a normalisation name.

    ``"none"`` → ``"passthrough"``; ``"l2"`` → unit-length rows; ``"power-l2"`` → square root, then unit length.
    """
    if name == "none":
        return "passthrough"
    if name == "l2":
        return PowerNormalizer(alpha=1.0)
    if name == "power-l2":
        return PowerNormalizer(alpha=0.5)
    raise ValueError(f"normalize must be one of {', '.join(NORMALIZATIONS)}, not {name!r}")


def normalize_name(step) -> str:
    """Inverse of :func:`normalize_step`."""
    if not isinstance(step, PowerNormalizer):
        return "none"
    return "l2" if step.alpha == 1 else "power-l2"
