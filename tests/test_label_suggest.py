"""`stylesift label` and `stylesift suggest` on a store filled directly (no network): verdicts land in the
store's log all-or-nothing, `train` and `info` see them, suggestions sit near the threshold and spread out."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from stylesift.classifiers.bundle import Bundle
from stylesift.classifiers.two_class import TwoClassSVM
from stylesift.cli.main import app
from stylesift.featurizer.store import FeatureStore
from stylesift.review.suggest import suggest

FP = {"backbone": "test", "feature_dim": 16, "dtype": "float32"}
runner = CliRunner()


def _features(n, seed, centre):
    rng = np.random.default_rng(seed)
    return (np.abs(rng.normal(0, 1, (n, 16))) + centre).astype(np.float32)


@pytest.fixture
def loop_store(tmp_path):
    """A store of 40 labelled rows (20 + 20), 60 unlabelled rows and the files of the first 10 unlabelled ones."""
    store = tmp_path / "s.h5"
    pos_c, neg_c = np.r_[np.full(8, 2.0), np.zeros(8)], np.r_[np.zeros(8), np.full(8, 2.0)]
    X = np.vstack([_features(20, 1, pos_c), _features(20, 2, neg_c),
                   _features(30, 3, pos_c * 0.5 + neg_c * 0.5), _features(30, 4, pos_c)])
    files = []
    for i in range(10):
        p = tmp_path / "files" / f"img_{i}.jpg"
        p.parent.mkdir(exist_ok=True)
        p.write_bytes(f"image bytes {i}".encode())
        files.append(p)
    shas = [hashlib.sha256(f.read_bytes()).hexdigest() for f in files] + [hashlib.sha256(f"row {i}".encode()).hexdigest()
                                                                          for i in range(90)]
    shas = shas[10:50] + shas[:10] + shas[50:]  # rows 40..49 are the files
    with FeatureStore(store, "a", fingerprint=FP) as st:
        st.add(shas[:20], X[:20], [[f"/p/{i}.jpg"] for i in range(20)], label="good")
        st.add(shas[20:40], X[20:40], [[f"/n/{i}.jpg"] for i in range(20)], label="bad")
        st.add(shas[40:], X[40:], [[str(files[i - 40])] if i < 50 else [f"/u/{i}.jpg"] for i in range(40, 100)])
    return store, files, shas, X


def _bundle(store, X, tmp_path):
    y = np.r_[np.ones(20, bool), np.zeros(20, bool)]
    est = TwoClassSVM(n_jobs=1).fit(X[:40], y)
    return Bundle(pipeline=est.pipeline_, threshold=est.threshold_, method="two-class", positive_label="good",
                  negative_label="bad", fingerprint=FP).save(tmp_path / "m.ssmodel")


def test_label_paths_records_verdicts_sets_labels_and_info_counts_them(loop_store):
    store, files, shas, _ = loop_store
    r = runner.invoke(app, ["label", "--store", str(store), "--label", "good", "--reviewer", "ann", str(files[0]), str(files[1])])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["label", "--store", str(store), "--label", "bad", "--reviewer", "bob", str(files[0])])
    assert r.exit_code == 0, r.output
    st = FeatureStore(store)
    history = st.verdicts(st.sha256[40])
    assert [(v.label, v.reviewer) for v in history] == [("good", "ann"), ("bad", "bob")]  # the later one wins, both kept
    labels = st.labels
    assert labels[40] == "bad" and labels[41] == "good"
    info = json.loads(runner.invoke(app, ["info", str(store), "--json"]).output)
    assert info["verdicts"] == {"bad": 1, "good": 1} and info["verdicts_total"] == 3
    assert info["labels"]["good"] == 21 and info["labels"]["bad"] == 21


def test_label_from_csv_is_all_or_nothing(loop_store, tmp_path):
    store, files, shas, _ = loop_store
    st = FeatureStore(store)
    good_csv = tmp_path / "v.csv"
    good_csv.write_text(f"path,sha256,label\n{files[2]},,good\n,{st.sha256[45]},bad\n")
    r = runner.invoke(app, ["label", "--store", str(store), "--from-csv", str(good_csv), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["recorded"] == 2
    bad_csv = tmp_path / "bad.csv"
    bad_csv.write_text(f"{files[3]},good\n{'ab' * 32},bad\n{tmp_path / 'missing.jpg'},good\n{files[4]},\n")
    r = runner.invoke(app, ["label", "--store", str(store), "--from-csv", str(bad_csv)])
    assert r.exit_code == 1
    assert "no verdict was recorded" in r.output and "bad.csv:2" in r.output and "missing.jpg" in r.output
    assert "bad.csv:4" in r.output and "no label" in r.output
    assert len(FeatureStore(store).verdicts()) == 2  # the first line, valid on its own, was not written either


def test_label_of_a_file_outside_the_store_is_reported_with_no_extract(loop_store, tmp_path):
    store, _, _, _ = loop_store
    new = tmp_path / "new.jpg"
    new.write_bytes(b"never extracted")
    r = runner.invoke(app, ["label", "--store", str(store), "--label", "good", "--no-extract", str(new)])
    assert r.exit_code == 1 and "stylesift extract" in r.output
    assert FeatureStore(store).verdicts() == []
    assert runner.invoke(app, ["label", "--store", str(store), str(new)]).exit_code == 2  # no --label


def test_train_uses_verdict_labels(loop_store, tmp_path):
    from stylesift.classifiers.train import load_labelled

    store, files, shas, _ = loop_store
    assert runner.invoke(app, ["label", "--store", str(store), "--label", "good", str(files[5])]).exit_code == 0
    data = load_labelled(store, "good", "bad")
    assert len(data.X) == 41 and data.positive.sum() == 21
    assert FeatureStore(store).sha256[45] in set(data.sha256[data.positive])


def test_suggest_picks_uncertain_unlabelled_rows_spread_out(loop_store, tmp_path):
    store, _, _, X = loop_store
    model = _bundle(store, X, tmp_path)
    r = runner.invoke(app, ["suggest", str(model), "--store", str(store), "--n", "5", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    rows = [s["row"] for s in out["suggestions"]]
    assert len(rows) == 5 == len(set(rows)) and all(row >= 40 for row in rows)  # unlabelled only
    # the mixed rows (40..69) are the uncertain ones; the clear positives (70..99) are not suggested first
    assert sum(40 <= row < 70 for row in rows) >= 4
    assert out["unlabelled"] == 60


def test_suggest_spreads_out_over_near_copies():
    rng = np.random.default_rng(0)
    base = np.abs(rng.normal(0, 1, (2, 32))).astype(np.float32)
    X = np.vstack([base[0] + 0.001 * rng.random((10, 32)), base[1][None]]).astype(np.float32)
    scores = np.r_[np.zeros(10), 0.3]  # ten near-copies right at the threshold, one a little further
    picks = suggest(X, scores, 0.0, n=2)
    assert {p.row for p in picks} & {10}  # the second pick is the different image, not another copy


def test_suggest_refuses_a_model_of_another_feature_space(loop_store, tmp_path):
    store, _, _, X = loop_store
    model = _bundle(store, X, tmp_path)
    other = tmp_path / "other.h5"
    with FeatureStore(other, "a", fingerprint={**FP, "backbone": "other"}) as st:
        st.add(["cd" * 32], X[:1], [["/x.jpg"]])
    r = runner.invoke(app, ["suggest", str(model), "--store", str(other)])
    assert r.exit_code == 1 and "error:" in r.output


@pytest.mark.weights
def test_label_featurizes_files_the_store_lacks_first(tmp_path, featurizer, make_pictures):
    from stylesift.review.labels import LabelItem, record_labels

    pictures = make_pictures(tmp_path / "new", 2)
    store = tmp_path / "fresh.h5"
    result = record_labels(store, [LabelItem(str(p), "good") for p in pictures], reviewer="ann", featurizer=featurizer)
    assert result.featurized == 2 and len(result.recorded) == 2
    st = FeatureStore(store)
    assert len(st) == 2 and list(st.labels) == ["good", "good"]
    assert {v.sha256 for v in st.verdicts()} == set(st.sha256)


def test_suggest_scores_with_the_feature_set_the_model_was_trained_on(loop_store, tmp_path):
    store, _, _, _ = loop_store
    rng = np.random.default_rng(5)
    S = np.zeros((100, 4), np.float32)
    S[:20, 0], S[20:40, 1] = 1.0, 1.0  # the style set separates the labelled rows on its own axes
    S[40:] = np.c_[np.zeros(60), np.ones(60), np.zeros((60, 2))]  # unlabelled rows: clearly negative ...
    S[70:80] = [0.5, 0.5, 0, 0]  # ... except ten that sit on the style model's boundary
    S += 0.01 * rng.random(S.shape).astype(np.float32)
    style_fp = {"feature_set": "style-test", "feature_dim": 4}
    with FeatureStore(store, "a") as st:
        st.declare_set("style", style_fp)
        st.add_features("style", list(st.sha256), S)
    y = np.r_[np.ones(20, bool), np.zeros(20, bool)]
    est = TwoClassSVM(n_jobs=1).fit(S[:40], y)
    model = Bundle(pipeline=est.pipeline_, threshold=est.threshold_, method="two-class", positive_label="good",
                   negative_label="bad", fingerprint=FP,
                   summary={"feature_set": "style", "feature_set_fingerprint": style_fp}).save(tmp_path / "style.ssmodel")
    out = json.loads(runner.invoke(app, ["suggest", str(model), "--store", str(store), "--n", "5", "--json"]).output)
    assert sum(70 <= s["row"] < 80 for s in out["suggestions"]) >= 4


def test_label_from_csv_with_a_giant_field_is_one_line_naming_the_file(loop_store, tmp_path):
    store, files, _, _ = loop_store
    huge = tmp_path / "huge.csv"
    huge.write_text(f"{files[2]},good\n{files[3]},{'x' * 200_000}\n")
    r = runner.invoke(app, ["label", "--store", str(store), "--from-csv", str(huge)])
    assert r.exit_code == 1
    assert "huge.csv:2: not a CSV of verdicts" in r.output and "Traceback" not in r.output
    assert r.exception is None or isinstance(r.exception, SystemExit)
    assert FeatureStore(store).verdicts() == []
