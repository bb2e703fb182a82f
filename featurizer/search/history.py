"""Has this upload been judged before? The nearest earlier stored row that has a verdict, if it is near enough.

``score`` marks a new upload that near-duplicates a stored row someone gave a verdict (a repost of
last month's pick or reject), so that it stays out of the picks (``--keep-seen`` keeps it). The rows
with a verdict are a small part of a store (what people reviewed), so they are searched exactly, in
blocks, against the batch: the answer never depends on an index being current.

Without the query images (``thumb_of`` None) the rule is the cosine of the stored feature vectors
(``pooled`` by default) ≥ ``threshold``. With them, the :data:`CANDIDATES` judged rows nearest by
cosine are confirmed by pixel alignment (:func:`~stylesift.featurizer.search.reposts.alignment` ≥
``match``): crops keeping 70 % of the area, resizes and hard recompressions of small images are found
(``benchmarks/reposts.py``) without marking photos that are merely alike. A judged row whose file is
gone (or holds other bytes now) falls back to the cosine rule. A query's own row
never matches it: the question is whether *another* image was judged, so re-scoring a folder that
holds reviewed images does not mark them by their own verdicts.
"""

from __future__ import annotations

import time
from typing import Callable, Sequence

import numpy as np

from stylesift.featurizer.search.exact import exact_top_k, normalise, store_blocks
from stylesift.featurizer.search.reposts import MATCH_THRESHOLD, alignment, thumbnail_of

__all__ = ["seen_before", "HISTORY_THRESHOLD", "CANDIDATES"]

CANDIDATES = 5  # judged rows per query checked by alignment: the copied row was in the top 5 for 99.7 % of copies

# Judged rows' thumbnails, per (store path, sha256), for the life of the process (None: file gone or changed).
_THUMBS: dict[tuple[str, str], object] = {}

# Cosine of pooled features at which an upload counts as a repost of a judged image: the near-duplicate
# threshold of ``score`` (measured in docs/benchmarks.md: crops keeping 81 % of the area, recompressions
# and resizes mostly reach it; distinct photos of the shared tasks rarely do).
HISTORY_THRESHOLD = 0.90


def seen_before(store, sha256s: Sequence[str], features: np.ndarray, *, threshold: float = HISTORY_THRESHOLD,
                feature_set: str = "pooled", thumb_of: Callable[[int], np.ndarray | None] | None = None,
                match: float = MATCH_THRESHOLD) -> list[dict | None]:
    """For each query, the most similar other stored row with a verdict, if its cosine is ≥ ``threshold``.

    Parameters
    ----------
    store : FeatureStore
        Open store holding the verdicts (and, usually, the queries' own rows).
    sha256s : sequence of str
        The queries' contents, ``(q,)``: their own rows are never returned.
    features : ndarray
        The queries' ``feature_set`` features, ``(q, d)``.
    thumb_of : callable, optional
        Query index → grey thumbnail (:func:`~stylesift.featurizer.search.reposts.thumbnail_of`) or None;
        given, candidates are confirmed by alignment ≥ ``match`` instead of cosine ≥ ``threshold``.

    Returns
    -------
    list of dict or None
        ``(q,)``: None, or ``{"sha256", "path", "label", "date", "similarity"}`` (the latest verdict's
        label and its date, ``YYYY-MM-DD``; ``path`` the first place the judged image was seen).
    """
    q = len(sha256s)
    if not q or not len(store):
        return [None] * q
    latest = {v.sha256: v for v in store.verdicts()}  # the log is oldest first: the last one wins
    if not latest:
        return [None] * q
    judged = list(latest)
    rows = store.rows_of(judged)
    keep = rows >= 0  # a verdict whose row was pruned since has nothing to compare with
    if feature_set in store.feature_sets:
        has = store.has_features(feature_set)
        keep &= np.where(keep, has[np.clip(rows, 0, None)], False)
    rows = rows[keep]
    if not len(rows):
        return [None] * q
    own = store.rows_of(list(sha256s))
    top = exact_top_k(normalise(features), store_blocks(store, np.sort(rows), feature_set),
                      CANDIDATES if thumb_of is not None else 1, exclude=own)
    out: list[dict | None] = []
    for i, (found, sims) in enumerate(top.result()):
        hit = None
        query = None
        for row, sim in zip(found, sims):
            if not np.isfinite(sim):
                continue
            row = int(row)
            judged = _judged_thumbnail(store, row) if thumb_of is not None else None
            if judged is not None and query is None:
                query = thumb_of(i)
                query = False if query is None else query
            if judged is None or query is False:  # no pixels to compare: the cosine rule decides
                if sim >= threshold:
                    hit = (row, float(sim))
                    break
                continue
            ncc = alignment(query, judged)
            if ncc >= match:
                hit = (row, ncc)
                break
        if hit is None:
            out.append(None)
            continue
        row, similarity = hit
        sha = str(store.sha256[row])
        verdict = latest[sha]
        paths = store.paths(row)
        out.append({"sha256": sha, "path": paths[0] if paths else "", "label": verdict.label,
                    "date": time.strftime("%Y-%m-%d", time.localtime(verdict.time)),
                    "similarity": round(similarity, 4)})
    return out


def _judged_thumbnail(store, row: int):
    """The judged row's thumbnail from the first of its paths that still holds its content, or None."""
    sha = str(store.sha256[row])
    key = (str(store.path), sha)
    if key not in _THUMBS:
        _THUMBS[key] = next((t for t in (thumbnail_of(p, sha256=sha) for p in store.paths(row)) if t is not None), None)
    return _THUMBS[key]
