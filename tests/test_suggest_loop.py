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


def test_bench_loop_command_prints_a_table_per_task(tmp_path):
    import hashlib
    import json

    from typer.testing import CliRunner

    from stylesift.cli.main import app
    from stylesift.featurizer.store import FeatureStore

    X, y = _task(120)
    store = tmp_path / "toy-task.h5"
    shas = [hashlib.sha256(f"row {i}".encode()).hexdigest() for i in range(len(y))]
    with FeatureStore(store, "a", fingerprint={"backbone": "test", "feature_dim": 16}) as st:
        for label, mask in (("positive", y), ("negative", ~y)):
            idx = np.flatnonzero(mask)
            st.add([shas[i] for i in idx], X[idx], [[f"/x/{i}.jpg"] for i in idx], label=label)
    args = ["bench", "loop", "--store", str(store), "--seeds", "1", "--rounds", "2", "--n", "5", "--start", "5"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    assert "toy-task (120 images" in r.output and "suggest: rest" in r.output
    out = json.loads(CliRunner().invoke(app, args + ["--json"]).stdout)
    assert [row["labels"] for row in out["tasks"]["toy-task"]["suggest"]] == [10, 15, 20]
