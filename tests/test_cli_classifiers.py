"""compare / train / tune / score end to end, on a small store extracted with the real network."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from helpers.cli import run
from helpers.pictures import write_pictures, write_textures

pytestmark = [pytest.mark.weights, pytest.mark.slow]


@pytest.fixture(scope="module")
def project(tmp_path_factory, featurizer):
    """A store of 10 smooth ('good') and 10 busy ('ordinary') pictures, plus 3 + 3 unseen ones to score."""
    root = tmp_path_factory.mktemp("classifiers")
    store = root / "features.h5"
    write_pictures(root / "good", 10, seed=1)
    write_textures(root / "ordinary", 10, seed=2)
    featurizer.extract([root / "good"], store, label="good")
    featurizer.extract([root / "ordinary"], store, label="ordinary")
    new = write_pictures(root / "new", 3, seed=7) + write_textures(root / "new", 3, seed=8)
    bad = root / "new" / "broken.jpg"
    bad.write_bytes(b"not a picture")
    model = root / "model.joblib"
    result = run("train", "--store", store, "--positive", "good", "--negative", "ordinary", "--out", model, "--json")
    assert result.exit_code == 0, result.output
    return {"root": root, "store": store, "new": new, "bad": bad, "model": model, "train": json.loads(result.stdout)}


def test_train_writes_a_bundle_with_its_summary(project):
    s = project["train"]
    assert s["method"] == "two-class" and s["positives"] == 10 and s["negatives"] == 10
    assert s["params"]["svc__C"] in (0.4, 1.0, 10.0) and s["threshold"] == 0.0
    assert s["search"]["candidates"][0]["params"]["C"] == 0.4  # article default was a candidate
    human = run("train", "--store", project["store"], "--positive", "good", "--method", "one-class",
                "--out", project["root"] / "oc.joblib")
    assert human.exit_code == 0, human.output
    assert "one-class on 10 good (positives only)" in human.stdout and "threshold" in human.stdout


def test_train_two_class_without_negatives_points_to_one_class(project):
    result = run("train", "--store", project["store"], "--positive", "good", "--out", project["root"] / "x.joblib")
    assert result.exit_code == 1
    assert "--negative" in result.output and "one-class" in result.output
    missing = run("train", "--store", project["store"], "--positive", "nope", "--negative", "ordinary", "--out", project["root"] / "x.joblib")
    assert missing.exit_code == 1 and "no rows labelled 'nope'" in missing.output and "good (10)" in missing.output


def test_score_ranks_unseen_pictures_and_lists_failures(project):
    out_csv = project["root"] / "scores.csv"
    result = run("score", project["model"], project["root"] / "new", "--store", project["store"], "--json", "--out", out_csv)
    assert result.exit_code == 3, result.output  # one unreadable file
    rows = json.loads(result.stdout)
    assert len(rows) == 6 and all(set(r) == {"path", "sha256", "score", "selected", "group", "group_size", "seen_before"} for r in rows)
    smooth = [r for r in rows if "pic_" in r["path"]]
    busy = [r for r in rows if "tex_" in r["path"]]
    assert min(r["score"] for r in smooth) > max(r["score"] for r in busy)
    assert all(r["selected"] for r in smooth) and not any(r["selected"] for r in busy)
    assert "broken.jpg" in result.stderr
    with open(out_csv) as fh:
        table = list(csv.DictReader(fh))
    assert len(table) == 7 and [r for r in table if r["error"]][0]["path"] == str(project["bad"])
    # Rescoring is served from the store: same scores, no new rows.
    from stylesift.featurizer.store import FeatureStore

    rows_before = len(FeatureStore(project["store"]))
    again = run("score", project["model"], *project["new"], "--store", project["store"], "--json", "--top-k", "2")
    assert again.exit_code == 0, again.output
    assert len(FeatureStore(project["store"])) == rows_before
    by_path = {r["path"]: r for r in json.loads(again.stdout)}
    assert all(abs(by_path[r["path"]]["score"] - r["score"]) < 1e-9 for r in rows)
    assert sum(r["selected"] for r in by_path.values()) == 2


def test_predictor_python_api_returns_the_same_rows(project, featurizer):
    from stylesift.classifiers.predict import Predictor

    result = Predictor.load(project["model"], project["store"], featurizer=featurizer).score(project["new"] + [project["bad"]])
    cli = json.loads(run("score", project["model"], *project["new"], "--store", project["store"], "--json").stdout)
    assert [(r["path"], r["sha256"], round(r["score"], 9), r["selected"]) for r in result.rows] == \
        [(r["path"], r["sha256"], round(r["score"], 9), r["selected"]) for r in cli]
    assert result.failed[0]["path"] == str(project["bad"]) and result.failed[0]["error"]


def test_score_refuses_a_store_of_another_feature_space(project, tmp_path):
    from stylesift.featurizer.store import FeatureStore

    other = tmp_path / "other.h5"
    with FeatureStore(other, "a", fingerprint={"backbone": "something else", "feature_dim": 4}) as st:
        st.add(["a" * 64], np.zeros((1, 4), np.float32), [["/x.jpg"]])
    result = run("score", project["model"], *project["new"], "--store", other)
    assert result.exit_code == 1
    assert "another feature space" in result.output and str(other) in result.output


def test_compare_json_and_plots(project):
    plots = project["root"] / "plots"
    result = run("compare", "--store", project["store"], "--positive", "good", "--negative", "ordinary",
                 "--folds", "2", "--json", "--plots", plots)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert {"two-class", "two-class-default", "one-class", "one-class-default", "head", "nearest-positives"} <= set(data["methods"])
    for m in data["methods"].values():
        assert {"accuracy", "roc_auc", "average_precision", "precision_at_5pct", "fit_seconds", "std"} <= set(m)
    assert data["methods"]["two-class"]["roc_auc"] == 1.0
    for name in ("roc.png", "precision-recall.png"):
        assert (plots / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_tune_prints_the_grid_and_draws_its_plot(project):
    plot = project["root"] / "tune.png"
    result = run("tune", "--store", project["store"], "--positive", "good", "--negative", "ordinary", "--plot", plot)
    assert result.exit_code == 0, result.output
    assert "winner:" in result.stdout and "article default" in result.stdout and "gamma" in result.stdout
    assert plot.read_bytes()[:4] == b"\x89PNG"
