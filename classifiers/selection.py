"""Which scores are selected: a threshold, the top k or the top fraction (pure: scores in, mask out)."""

from __future__ import annotations

import math

import numpy as np


def select(scores: np.ndarray, *, threshold: float | None = None, top_k: int | None = None,
           top_fraction: float | None = None) -> tuple[np.ndarray, dict]:
    """Which of ``scores`` (shape ``(n,)``) are selected: at most one rule, else ``threshold``.

    ``top_k``: the k highest; ``top_fraction``: the highest ``ceil(fraction * n)``. Ties at the cut
    keep the earlier row, so exactly that many are selected.
    """
    given = [x is not None for x in (top_k, top_fraction)]
    if sum(given) > 1 or (any(given) and threshold is not None):
        raise ValueError("choose one of threshold, top_k and top_fraction")
    if top_fraction is not None and not 0 <= top_fraction <= 1:
        raise ValueError(f"top_fraction must be between 0 and 1, not {top_fraction}")
    if threshold is not None and not math.isfinite(threshold):
        raise ValueError(f"threshold must be a finite number, not {threshold}")  # nan would select nothing
    if top_k is not None and top_k < 0:
        raise ValueError(f"top_k must not be negative, not {top_k}")
    if top_k is None and top_fraction is None:
        return scores >= threshold, {"rule": "threshold", "threshold": float(threshold)}
    k = top_k if top_k is not None else math.ceil(top_fraction * len(scores))
    chosen = np.zeros(len(scores), bool)
    chosen[np.argsort(-scores, kind="stable")[:k]] = True
    rule = {"rule": "top_k", "k": int(k)} if top_k is not None else {"rule": "top_fraction", "fraction": top_fraction, "k": int(k)}
    return chosen, rule
