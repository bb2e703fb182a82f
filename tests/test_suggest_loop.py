"""The loop simulation behind `stylesift bench loop`: labels grow by the round, the held-out split is never labelled."""

from __future__ import annotations

import numpy as np
import pytest

from stylesift.review.loop_bench import simulate


def _task(n=240, d=16, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.random(n) < 0.5
    X = np.abs(rng.normal(0, 1, (n, d))) + np.where(y[:, None], np.r_[np.ones(4), np.zeros(d - 4)], 0) * 1.5
    return X.astype(np.float32), y


@pytest.mark.parametrize("strategy", ["suggest", "random"])
def test_each_round_adds_the_labels_and_measures_both_splits(strategy):
    X, y = _task()
    rows = simulate(X, y, strategy=strategy, rounds=2, per_round=10, start=5, seed=1)
    assert [r["labels"] for r in rows] == [10, 20, 30]
    for r in rows:
        for part in ("rest", "held_out"):
            assert 0.4 <= r[part]["accuracy"] <= 1 and 0.5 <= r[part]["roc_auc"] <= 1
    assert rows[-1]["held_out"]["roc_auc"] > 0.8


def test_unknown_strategy_is_refused():
    X, y = _task()
    with pytest.raises(ValueError, match="strategy"):
        simulate(X, y, strategy="oracle", rounds=1)
