"""Near-duplicate groups: reposts of one photo (crops, recompressions, resizes) count as one pick.

Two images belong together when the cosine similarity of their pooled ResNet50 features reaches
:data:`DEFAULT_THRESHOLD` **or** their perceptual hashes (:func:`~stylesift.featurizer.images.perceptual_hash`) differ in at most
:data:`MAX_HAMMING` of 64 bits. Measured on the shared images (``benchmarks/dedupe.py``,
docs/benchmarks.md): neither alone separates reposts from merely similar photos. The hash
finds every recompression and resize (0-4 bits apart, while the most similar *other* photo of a
collection is 12 or more bits away) but loses crops (a 64 % crop is ~20 bits away); the features
find most crops but move a lot when a small photo is halved (cosine 0.68-0.98) or recompressed
hard. Together they miss far fewer reposts at the same false merges.

Groups are built leader-first in the order given (callers pass best score first): the first
image not yet grouped leads a new group and takes every not-yet-grouped image similar enough to
*it*, then every image similar enough to one of those (one hop: a crop and a shrunken copy of one
photo may each match the photo but not each other). Stopping after one hop keeps a chain of
gradually different photos from merging into one group.

Pure numbers: features, scores and hashes in, group ids and masks out. The hashes come from the
caller (the predictor and the review round read them from the files with
:func:`~stylesift.featurizer.images.perceptual_hash`), so this layer never sees pixels.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from stylesift.classifiers.selection import select

DEFAULT_THRESHOLD = 0.90
MAX_HAMMING = 8
_BLOCK = 512


def hamming(hashes: np.ndarray, h: int) -> np.ndarray:
    """Bits in which each of ``hashes`` (uint64, shape ``(n,)``) differs from ``h``, shape ``(n,)``."""
    x = np.bitwise_xor(np.asarray(hashes, dtype=np.uint64), np.uint64(h))
    return np.unpackbits(x.view(np.uint8).reshape(-1, 8), axis=1).sum(axis=1)


def unit_rows(features: np.ndarray) -> np.ndarray:
    """Rows of ``features`` (shape ``(n, d)``) scaled to unit length, float32 (an all-zero row stays zero)."""
    Z = np.asarray(features, dtype=np.float32).copy()
    norms = np.linalg.norm(Z, axis=1, keepdims=True)
    Z /= np.where(norms > 0, norms, 1)
    return Z


def group_near_duplicates(features: np.ndarray, threshold: float = DEFAULT_THRESHOLD,
                          order: np.ndarray | None = None, hashes: np.ndarray | None = None,
                          max_hamming: int = MAX_HAMMING) -> np.ndarray:
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
    hashes : ndarray of uint64, shape (n,), optional
        Perceptual hashes; a row also joins a leader whose hash is at most ``max_hamming`` bits
        away. A row without a hash holds :data:`NO_HASH`.
    """
    if not 0 < threshold <= 1:
        raise ValueError(f"the near-duplicate threshold is a cosine similarity in (0, 1], not {threshold}")
    n = len(features)
    order = np.arange(n) if order is None else np.asarray(order)
    Z = unit_rows(features)[order]
    H = None if hashes is None else np.asarray(hashes, dtype=np.uint64)[order]
    group = np.zeros(n, dtype=np.int64)  # in `order` positions; 0 = not grouped yet
    next_id = 1
    for start in range(0, n, _BLOCK):
        sims = Z[start:start + _BLOCK] @ Z.T  # (block, n)
        for i in range(start, min(start + _BLOCK, n)):
            if group[i]:
                continue
            members = _similar(Z, H, i, threshold, max_hamming, sims[i - start]) & (group == 0)
            members[i] = True
            group[members] = next_id
            for j in np.flatnonzero(members):  # one hop from the leader's direct matches
                if j != i:
                    group[_similar(Z, H, j, threshold, max_hamming) & (group == 0)] = next_id
            next_id += 1
    out = np.empty(n, dtype=np.int64)
    out[order] = group
    return out


def _similar(Z: np.ndarray, H: np.ndarray | None, i: int, threshold: float, max_hamming: int,
             sims: np.ndarray | None = None) -> np.ndarray:
    """Rows similar to row ``i`` by cosine (``sims``: row i's similarities, computed when not given) or hash."""
    similar = (Z @ Z[i] if sims is None else sims) >= threshold
    if H is not None and H[i] != NO_HASH:
        similar |= (hamming(H, int(H[i])) <= max_hamming) & (H != NO_HASH)
    return similar


def group_sizes(groups: np.ndarray) -> np.ndarray:
    """Size of each row's group, shape ``(n,)``."""
    _, inverse, counts = np.unique(groups, return_inverse=True, return_counts=True)
    return counts[inverse]


# Near-duplicates are looked for among this many best-scoring rows (one matrix product each against
# the others); rows further down are their own groups. Picks and the borderline band sit far above.
MAX_GROUPED_ROWS = 5000
# Perceptual hashes read the files again (a few ms each); the best-scoring rows get them.
MAX_HASHED_ROWS = 1000
NO_HASH = np.uint64(0)  # a row without a hash (the all-zero hash of a flat image counts as none too)


def group_by_score(features: np.ndarray, scores: np.ndarray, threshold: float = DEFAULT_THRESHOLD,
                   max_rows: int = MAX_GROUPED_ROWS, hash_of: Callable[[int], int | None] | None = None,
                   max_hashed: int = MAX_HASHED_ROWS) -> np.ndarray:
    """Group ids (shape ``(n,)``) with each group led by its best-scoring row; ids follow the leaders' rank.

    Only the ``max_rows`` best-scoring rows are grouped; the others get groups of their own. With
    ``hash_of`` (row index → 64-bit perceptual hash, or None when the row has none), the
    ``max_hashed`` best-scoring rows are also compared by hash; it is asked for those rows only.
    """
    order = np.argsort(-np.asarray(scores, dtype=float), kind="stable")
    top = order[:max_rows]
    hashes = None
    if hash_of is not None:
        hashes = np.zeros(len(top), dtype=np.uint64)
        for j, row in enumerate(top[:max_hashed]):
            h = hash_of(int(row))
            hashes[j] = NO_HASH if h is None else np.uint64(h)
    groups = np.empty(len(order), dtype=np.int64)
    groups[top] = group_near_duplicates(np.asarray(features)[top], threshold, hashes=hashes)
    rest = order[max_rows:]
    groups[rest] = np.arange(len(rest)) + (groups[top].max() if len(top) else 0) + 1
    return groups


def select_distinct(scores: np.ndarray, groups: np.ndarray, **rule) -> tuple[np.ndarray, dict]:
    """:func:`~stylesift.classifiers.selection.select` over groups: only a group's best-scoring row can be selected.

    A group therefore counts once toward ``top_k`` (and ``top_fraction`` is a share of the groups);
    under a threshold, a group is selected when its leader reaches it. Returns the mask of shape
    ``(n,)`` and the rule, with ``"dedupe_groups"`` (the number of groups) added.
    """
    scores = np.asarray(scores, dtype=float)
    order = np.argsort(-scores, kind="stable")
    _, first = np.unique(groups[order], return_index=True)
    leaders = np.sort(order[first])  # each group's best-scoring row, in row order
    chosen_leaders, selection = select(scores[leaders], **rule)
    chosen = np.zeros(len(scores), bool)
    chosen[leaders[chosen_leaders]] = True
    return chosen, {**selection, "dedupe_groups": int(len(leaders))}


def choose(scores: np.ndarray, default_threshold: float, *, threshold: float | None = None, top_k: int | None = None,
           top_fraction: float | None = None, dedupe: float | None = None, features: np.ndarray | None = None,
           hash_of: Callable[[int], int | None] | None = None,
           exclude: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None, dict]:
    """The picks of one scored batch: the rule given, else ``default_threshold``; then near-duplicates or not.

    The one place where ``score`` and the review round decide what is selected. ``scores`` has
    shape ``(n,)``; with ``dedupe`` (a cosine similarity) ``features`` of shape ``(n, d)`` group the
    rows (and ``hash_of`` their hashes, see :func:`group_by_score`), and only a group's best row can
    be selected. Returns the mask ``(n,)``, the group ids ``(n,)`` (None without ``dedupe``) and the
    rule as :func:`~stylesift.classifiers.selection.select` reports it (``"dedupe"`` added).
    ``exclude`` (bool ``(n,)``) marks rows that may not be picked (seen before): they rank last and
    stay unselected, so ``top_k`` picks among the others.
    """
    scores = np.asarray(scores, dtype=float)
    if exclude is not None and np.any(exclude):
        exclude = np.asarray(exclude, bool)
        chosen, groups, how = choose(np.where(exclude, -np.inf, scores), default_threshold, threshold=threshold,
                                     top_k=top_k, top_fraction=top_fraction, dedupe=dedupe, features=features,
                                     hash_of=hash_of)
        return chosen & ~exclude, groups, {**how, "excluded": int(exclude.sum())}
    if threshold is None and top_k is None and top_fraction is None:
        threshold = default_threshold
    rule = {"threshold": threshold, "top_k": top_k, "top_fraction": top_fraction}
    if dedupe is None:
        chosen, how = select(scores, **rule)
        return chosen, None, how
    groups = (group_by_score(features, scores, dedupe, hash_of=hash_of) if len(scores)
              else np.zeros(0, np.int64))
    chosen, how = select_distinct(scores, groups, **rule)
    return chosen, groups, {**how, "dedupe": float(dedupe)}
