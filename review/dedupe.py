"""Near-duplicate groups: reposts of one photo (crops, recompressions, resizes) count as one pick.

Two images belong together when the cosine similarity of their pooled ResNet50 features reaches
a threshold. Measured on the shared images (``benchmarks/dedupe.py``, README "Near-duplicates"):
crops down to 60 % of the area, JPEG recompressions and resizes of a photo stay above
:data:`DEFAULT_THRESHOLD` against the original, while the most similar *other* photo of the same
collection stays below it; a perceptual hash (DCT of a 32x32 grey thumbnail) separates
recompressions and resizes but loses crops. The features are in the store already, so grouping
costs one matrix product and no pixels.

Groups are built leader-first in the order given (callers pass best score first): the first
image not yet grouped leads a new group and takes every not-yet-grouped image similar enough to
*it*. Similarity to the leader (not to any member) keeps a chain of gradually different photos
from merging into one group.
"""

from __future__ import annotations

import numpy as np

DEFAULT_THRESHOLD = 0.92
_BLOCK = 512


def unit_rows(features: np.ndarray) -> np.ndarray:
    """Rows of ``features`` (shape ``(n, d)``) scaled to unit length, float32 (an all-zero row stays zero)."""
    Z = np.asarray(features, dtype=np.float32).copy()
    norms = np.linalg.norm(Z, axis=1, keepdims=True)
    Z /= np.where(norms > 0, norms, 1)
    return Z


def group_near_duplicates(features: np.ndarray, threshold: float = DEFAULT_THRESHOLD,
                          order: np.ndarray | None = None) -> np.ndarray:
    """Group id of each row, shape ``(n,)``: ids ``1..G`` numbered in the order groups are opened.

    Parameters
    ----------
    features : ndarray of shape (n, d)
        Pooled feature vectors (any scale; compared by cosine).
    threshold : float
        Cosine similarity to a group's leader at which a row joins it, in (0, 1].
    order : ndarray of int, shape (n,), optional
        The order in which rows may lead groups (default: as given). Pass best score first, so
        a group's leader is its best-scoring member.
    """
    if not 0 < threshold <= 1:
        raise ValueError(f"the near-duplicate threshold is a cosine similarity in (0, 1], not {threshold}")
    n = len(features)
    order = np.arange(n) if order is None else np.asarray(order)
    Z = unit_rows(features)[order]
    group = np.zeros(n, dtype=np.int64)  # in `order` positions; 0 = not grouped yet
    next_id = 1
    for start in range(0, n, _BLOCK):
        sims = Z[start:start + _BLOCK] @ Z.T  # (block, n)
        for i in range(start, min(start + _BLOCK, n)):
            if group[i]:
                continue
            members = (sims[i - start] >= threshold) & (group == 0)
            members[i] = True
            group[members] = next_id
            next_id += 1
    out = np.empty(n, dtype=np.int64)
    out[order] = group
    return out


def group_sizes(groups: np.ndarray) -> np.ndarray:
    """Size of each row's group, shape ``(n,)``."""
    _, inverse, counts = np.unique(groups, return_inverse=True, return_counts=True)
    return counts[inverse]
