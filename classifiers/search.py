"""What the hyperparameter searches share: label checks, choosing a candidate, a readable results table."""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np


def positives_mask(y, *, need_both: bool = False) -> np.ndarray:
    """Boolean mask of positives from labels ``y`` of shape ``(n_samples,)`` (True/1 = positive, False/0 = negative)."""
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"labels must be one value per row, got shape {y.shape}")
    values = set(np.unique(y).tolist())
    if not values <= {0, 1, True, False}:
        raise ValueError(f"labels must be 1/True for positives and 0/False for negatives, got {sorted(map(str, values))[:5]}")
    mask = y.astype(bool)
    if need_both and (mask.all() or not mask.any()):
        raise ValueError(f"this method needs positives and negatives; got {int(mask.sum())} positives and {int((~mask).sum())} negatives")
    return mask


def best_candidate(cv_results: dict, metrics: Sequence[str]) -> int:
    """Index of the candidate with the highest mean of ``metrics[0]``, ties broken by the next metric, then by order.

    Means are rounded to 4 decimals so that differences of less than one validation sample in
    ten thousand do not decide; the earlier (simpler) candidate wins a tie.
    """
    keys = [np.round(np.asarray(cv_results[f"mean_test_{m}"], dtype=float), 4) for m in metrics]
    keys = [np.nan_to_num(k, nan=-np.inf) for k in keys]
    order = np.lexsort([np.arange(len(keys[0]))] + [-k for k in reversed(keys)])
    return int(order[0])


def candidate_table(cv_results: dict, metrics: Sequence[str], readable: Callable[[dict], dict] = dict) -> list[dict]:
    """One JSON-able dict per candidate: its parameters and each metric's mean and std over the folds."""
    rows = []
    for i, params in enumerate(cv_results["params"]):
        row = {"params": {k.split("__")[-1]: _plain(v) for k, v in readable(params).items()}}
        for m in metrics:
            row[m] = round(float(cv_results[f"mean_test_{m}"][i]), 5)
            row[f"{m}_std"] = round(float(cv_results[f"std_test_{m}"][i]), 5)
        row["fit_seconds"] = round(float(cv_results["mean_fit_time"][i]), 4)
        rows.append(row)
    return rows


def _plain(value):
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return value.item()
    return value if isinstance(value, (str, int, float, bool, type(None))) else str(value)
