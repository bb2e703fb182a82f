"""Feature sets end to end: extract pooled,style; rows lacking a set; compare/train --features; score follows."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers.cli import run
from helpers.pictures import write_pictures, write_textures

from stylesift.classifiers.compare import best_of, compare_sets
from stylesift.classifiers.feature_sets import FeatureSetError, parse_sets, parts, set_fingerprint, stored_parts
from stylesift.featurizer.backbones import STYLE_DIM


def test_set_names_parse_and_concatenations_keep_their_parts():
    assert parse_sets(None) == ["pooled"]
    assert parse_sets("pooled, style,pooled") == ["pooled", "style"]
    assert parts("pooled+style") == ("pooled", "style")
    assert stored_parts(["style"]) == ("pooled", "style")
    for bad in ("pooled+", "style+style", "colour", ""):
        with pytest.raises(FeatureSetError):
            parse_sets(bad) if bad else parse_sets(",")
    fps = {"pooled": {"feature_dim": 2048}, "style": {"feature_dim": STYLE_DIM}}
    assert set_fingerprint(fps, "style") == fps["style"]
    assert set_fingerprint(fps, "pooled+style")["parts"] == fps
    with pytest.raises(FeatureSetError, match="--features pooled,style"):
        set_fingerprint({"pooled": fps["pooled"]}, "style", "s.h5")


def test_compare_sets_uses_identical_folds_and_names_the_winner():
    rng = np.random.default_rng(0)
    y = np.r_[np.ones(40), np.zeros(40)].astype(bool)
    noise = rng.normal(size=(80, 8))
    signal = noise.copy()
    signal[:, 0] += 4 * y  # only this set separates the classes
    results = compare_sets({"noise": noise, "signal": signal}, y, folds=4, methods=["head", "nearest-positives"])
    assert [list(t) for t in results["noise"].test_folds] == [list(t) for t in results["signal"].test_folds]
    win = best_of(results)
    assert win["feature_set"] == "signal" and win["accuracy"] > 0.9
    assert results["noise"].summary("head")["accuracy"] < 0.8


@pytest.fixture(scope="module")
def style_featurizer(weights):
    from stylesift.featurizer.extract import Featurizer

    return Featurizer(weights, batch_size=8, workers=2, runtime="keras", feature_sets=("pooled", "style"))


@pytest.fixture(scope="module")
def style_project(tmp_path_factory, featurizer, style_featurizer):
    """A store first extracted with pooled only; then the style set is added to its rows by a second extract."""
    from stylesift.featurizer.store import FeatureStore

    root = tmp_path_factory.mktemp("style_sets")
    store = root / "features.h5"
    write_pictures(root / "good", 8, seed=1)
    write_textures(root / "ordinary", 8, seed=2)
    featurizer.extract([root / "good"], store, label="good")
    featurizer.extract([root / "ordinary"], store, label="ordinary")
    lacking = run("train", "--store", store, "--positive", "good", "--negative", "ordinary", "--method", "head",
                  "--features", "style", "--out", root / "m.ssmodel")
    pooled_before = FeatureStore(store).features()
    style_featurizer.extract([root / "good", root / "ordinary"], store)
    return {"root": root, "store": store, "lacking": lacking, "pooled_before": pooled_before}


@pytest.mark.weights
@pytest.mark.slow
def test_rows_lacking_a_set_name_the_command_then_extract_adds_only_that_set(style_project):
    from stylesift.featurizer.store import FeatureStore

    lacking = style_project["lacking"]
    assert lacking.exit_code == 1
    assert "stylesift extract" in lacking.output and "--features" in lacking.output and "style" in lacking.output
    st = FeatureStore(style_project["store"])
    assert len(st) == 16 and st.has_features("style").all()
    style = st.features(feature_set="style")
    assert style.shape == (16, STYLE_DIM) and np.isfinite(style).all()
    np.testing.assert_array_equal(st.features(), style_project["pooled_before"])  # pooled rows untouched


@pytest.mark.weights
@pytest.mark.slow
def test_compare_features_runs_every_set_and_their_concatenation(style_project):
    result = run("compare", "--store", style_project["store"], "--positive", "good", "--negative", "ordinary",
                 "--folds", 3, "--methods", "head,nearest-positives", "--features", "pooled,style", "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert set(out["feature_sets"]) == {"pooled", "style", "pooled+style"}
    assert out["feature_sets"]["pooled+style"]["feature_dim"] == 2048 + STYLE_DIM
    assert out["winner"]["feature_set"] in out["feature_sets"] and out["winner"]["method"] in ("head", "nearest-positives")
    # A concatenation already named (in another order) is not added a second time.
    named = run("compare", "--store", style_project["store"], "--positive", "good", "--negative", "ordinary",
                "--folds", 3, "--methods", "head", "--features", "style,pooled+style", "--json")
    assert named.exit_code == 0, named.output
    assert list(json.loads(named.stdout)["feature_sets"]) == ["style", "pooled+style"]
    human = run("compare", "--store", style_project["store"], "--positive", "good", "--negative", "ordinary",
                "--folds", 3, "--methods", "head", "--features", "style")
    assert human.exit_code == 0, human.output
    assert "winner: head on style" in human.stdout and "--features style" in human.stdout


@pytest.mark.weights
@pytest.mark.slow
def test_train_records_the_set_and_score_follows_it(style_project, style_featurizer):
    from stylesift.classifiers.bundle import read_header
    from stylesift.classifiers.predict import Predictor

    root, store = style_project["root"], style_project["store"]
    model = root / "style.ssmodel"
    result = run("train", "--store", store, "--positive", "good", "--negative", "ordinary", "--method", "head",
                 "--features", "pooled+style", "--out", model, "--json")
    assert result.exit_code == 0, result.output
    summary = read_header(model)["summary"]
    assert summary["feature_set"] == "pooled+style" and summary["feature_dim"] == 2048 + STYLE_DIM
    assert set(summary["feature_set_fingerprint"]["parts"]) == {"pooled", "style"}
    new = write_pictures(root / "new", 2, seed=7) + write_textures(root / "new", 2, seed=8)
    predictor = Predictor.load(model, store, featurizer=style_featurizer)
    rows = {r["path"]: r for r in predictor.score([root / "new"])}
    assert len(rows) == 4
    assert all(rows[str(p)]["score"] > rows[str(q)]["score"] for p in new[:2] for q in new[2:])
    scored = run("score", model, root / "new", "--store", store, "--runtime", "keras", "--json")
    assert scored.exit_code == 0, scored.output
    assert {r["path"] for r in json.loads(scored.stdout)} == {str(p) for p in new}
