"""Has this upload been judged before? The nearest earlier stored row that has a verdict, if it is near enough.

``score`` marks a new upload that near-duplicates a stored row someone gave a verdict (a repost of
last month's pick or reject), so that it stays out of the picks (``--keep-seen`` keeps it). The rows
with a verdict are a small part of a store (what people reviewed), so they are searched exactly, in
blocks, against the batch: the answer never depends on an index being current.

Similarity is the cosine of the stored feature vectors (``pooled`` by default). A query's own row
never matches it: the question is whether *another* image was judged, so re-scoring a folder that
holds reviewed images does not mark them by their own verdicts.
"""

from __future__ import annotations

import time
from typing import Sequence

import numpy as np

from stylesift.featurizer.search.exact import exact_top_k, normalise, store_blocks

__all__ = ["seen_before", "HISTORY_THRESHOLD"]

# Cosine of pooled features at which an upload counts as a repost of a judged image: the near-duplicate
# threshold of ``score`` (measured in docs/benchmarks.md: crops keeping 81 % of the area, recompressions
# and resizes mostly reach it; distinct photos of the shared tasks rarely do).
HISTORY_THRESHOLD = 0.90


def seen_before(store, sha256s: Sequence[str], features: np.ndarray, *, threshold: float = HISTORY_THRESHOLD,
                feature_set: str = "pooled") -> list[dict | None]:
    """For each query, the most similar other stored row with a verdict, if its cosine is ≥ ``threshold``.

    Parameters
    ----------
    store : FeatureStore
        Open store holding the verdicts (and, usually, the queries' own rows).
    sha256s : sequence of str
        The queries' contents, ``(q,)``: their own rows are never returned.
    features : ndarray
        The queries' ``feature_set`` features, ``(q, d)``.

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
    top = exact_top_k(normalise(features), store_blocks(store, np.sort(rows), feature_set), 1, exclude=own)
    out: list[dict | None] = []
    for (found, sims), _ in zip(top.result(), sha256s):
        if not len(found) or not np.isfinite(sims[0]) or sims[0] < threshold:
            out.append(None)
            continue
        row = int(found[0])
        sha = str(store.sha256[row])
        verdict = latest[sha]
        paths = store.paths(row)
        out.append({"sha256": sha, "path": paths[0] if paths else "", "label": verdict.label,
                    "date": time.strftime("%Y-%m-%d", time.localtime(verdict.time)),
                    "similarity": round(float(sims[0]), 4)})
    return out
