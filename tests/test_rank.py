"""``stylesift rank``: a saved model scores stored rows from their features, in bounded blocks."""

from __future__ import annotations

import csv
import hashlib
import json

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from stylesift.classifiers.bundle import Bundle, BundleError
from stylesift.classifiers.head import OutputLayerHead
from stylesift.classifiers.rank import rank
from stylesift.cli import similar_cmds
from stylesift.cli.app import _Group
from stylesift.featurizer.store import FeatureStore


def run(*args):
    """``stylesift ARGS…`` through the main app once it registers ``rank``, else a local app with its error handling."""
    from stylesift.cli.main import app

    if not any(getattr(c.callback, "__name__", "") == "rank" for c in app.registered_commands):
        app = typer.Typer(cls=_Group, pretty_exceptions_enable=False)
        app.command()(similar_cmds.rank)
        app.command()(similar_cmds.similar)  # two commands: typer keeps the command name as the first argument
    return CliRunner().invoke(app, [str(a) for a in args])


FP = {"backbone": "test", "weights_sha256": "0" * 64, "feature_dim": 16, "dtype": "float32"}


def sha(i):
    return hashlib.sha256(f"row {i}".encode()).hexdigest()


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 16)).astype(np.float32)
    y = X[:, 0] > 0
    head = OutputLayerHead().fit(X, y)
    bundle = Bundle(pipeline=head.pipeline_, threshold=head.threshold_, method="head", positive_label="good",
                    negative_label="ordinary", fingerprint=FP, summary={"positives": int(y.sum())},
                    train_sha256=np.array([f"{i:064x}" for i in range(60)]), train_labels=np.where(y, "good", "ordinary"))
    return bundle.save(tmp_path_factory.mktemp("m") / "m.ssmodel"), bundle


@pytest.fixture
def store(tmp_path):
    path = tmp_path / "s.h5"
    X = np.random.default_rng(1).normal(size=(50, 16)).astype(np.float32)
    with FeatureStore(path, "a", fingerprint=FP) as st:
        st.add([sha(i) for i in range(20)], X[:20], [[f"/img/{i}.jpg"] for i in range(20)], "good")
        st.add([sha(i) for i in range(20, 50)], X[20:], [[f"/img/{i}.jpg"] for i in range(20, 50)])
    return path, X


def test_rank_scores_every_row_as_the_bundle_does_best_first(model, store):
    path, X = store
    model_path, bundle = model
    result = rank(model_path, path, block_rows=7)  # several blocks
    want = bundle.score(X)
    assert result.scored == 50 and len(result.rows) == 50
    assert [r["sha256"] for r in result.rows] == [sha(i) for i in np.lexsort((np.arange(50), -want))]
    np.testing.assert_allclose([r["score"] for r in result.rows], np.sort(want)[::-1], rtol=1e-6)
    assert all(r["selected"] == (r["score"] >= bundle.threshold) for r in result.rows)


def test_top_k_and_filters(model, store):
    path, X = store
    model_path, bundle = model
    result = rank(model_path, path, top_k=5, unlabelled=True, block_rows=8)
    want = bundle.score(X[20:])
    assert [r["sha256"] for r in result.rows] == [sha(20 + i) for i in np.argsort(-want)[:5]]
    assert result.scored == 30 and all(r["label"] == "" for r in result.rows)
    assert rank(model_path, path, since_days=1).scored == 50
    assert rank(model_path, path, since_days=1e-9).rows == []


def test_another_feature_space_is_refused_as_score_refuses_it(model, tmp_path):
    path = tmp_path / "other.h5"
    with FeatureStore(path, "a", fingerprint={**FP, "backbone": "other"}) as st:
        st.add([sha(0)], np.zeros((1, 16), np.float32), [["/a.jpg"]])
    with pytest.raises(BundleError, match="holds another feature space"):
        rank(model[0], path)


def test_cli_rank_json_and_csv(model, store, tmp_path):
    path, _ = store
    out = tmp_path / "ranked.csv"
    res = run("rank", model[0], "--store", path, "--top-k", 3, "--out", out, "--json")
    assert res.exit_code == 0, res.output
    rows = json.loads(res.stdout)
    assert len(rows) == 3 and set(rows[0]) == {"sha256", "path", "label", "score", "selected"}
    with open(out, newline="") as fh:
        lines = list(csv.DictReader(fh))
    assert [r["sha256"] for r in lines] == [r["sha256"] for r in rows] and lines[0]["rank"] == "1"
    res = run("rank", model[0], "--store", path, "--top-k", 2)
    assert res.exit_code == 0 and "2 of 50 stored rows shown" in res.stdout
