"""The methods, the searches and `compare`, on small synthetic feature matrices (no network)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import Pipeline
from sklearn.svm import OneClassSVM

from stylesift.classifiers.compare import compare, fold_metrics, outer_splits
from stylesift.classifiers.distance import NearestPositives
from stylesift.classifiers.head import OutputLayerHead
from stylesift.classifiers.one_class import ARTICLE_DEFAULT as OC_ARTICLE
from stylesift.classifiers.one_class import NO_NEGATIVES_DEFAULT, OneClassSVMModel
from stylesift.classifiers.one_class import make_pipeline as oc_pipeline
from stylesift.classifiers.preprocess import CappedPCA, PowerNormalizer
from stylesift.classifiers.selection import select
from stylesift.classifiers.two_class import ARTICLE_DEFAULT, TwoClassSVM


def synthetic(n_pos=60, n_neg=60, d=48, seed=0):
    """Non-negative, heavy-tailed rows like pooled ReLU features; the classes differ in which channels fire."""
    rng = np.random.default_rng(seed)
    pos = rng.gamma(1.5, 1.0, (n_pos, d))
    neg = rng.gamma(1.5, 1.0, (n_neg, d))
    pos[:, :6] += rng.gamma(4.0, 1.0, (n_pos, 6))
    neg[:, 6:12] += rng.gamma(4.0, 1.0, (n_neg, 6))
    X = np.vstack([pos, neg]).astype(np.float32)
    y = np.r_[np.ones(n_pos, bool), np.zeros(n_neg, bool)]
    order = rng.permutation(len(y))
    return X[order], y[order]


@pytest.fixture(scope="module")
def data():
    return synthetic()


@pytest.fixture(scope="module")
def held_out():
    return synthetic(40, 40, seed=1)


def test_power_normalizer_rows_have_unit_length_and_square_rooted_values():
    X = np.array([[4.0, 0.0, 9.0], [0.0, 0.0, 0.0]], np.float32)
    out = PowerNormalizer().fit_transform(X)
    np.testing.assert_allclose(out[0], np.array([2.0, 0.0, 3.0]) / np.sqrt(13), rtol=1e-6)
    assert np.all(out[1] == 0)  # a zero row stays zero rather than becoming NaN


def test_capped_pca_caps_by_training_rows_and_says_so():
    X = np.random.default_rng(0).normal(size=(30, 50))
    pca = CappedPCA(512, whiten=True).fit(X)
    assert pca.n_components_ == 29 and pca.capped_
    assert pca.transform(X[:4]).shape == (4, 29)
    assert not CappedPCA(10).fit(X).capped_


def test_two_class_search_picks_from_the_grid_and_separates_held_out_rows(data, held_out):
    X, y = data
    model = TwoClassSVM(n_jobs=1).fit(X, y)
    table = model.search_["candidates"]
    assert table[0]["params"]["n_components"] == ARTICLE_DEFAULT["pca__n_components"]  # the article is a candidate
    assert model.search_["best"] != 0 and set(model.best_params_) == set(ARTICLE_DEFAULT)
    assert all(0 <= row["accuracy"] <= 1 and 0 <= row["roc_auc"] <= 1 for row in table)
    Xt, yt = held_out
    scores = model.decision_function(Xt)
    assert scores.shape == (len(Xt),) and model.threshold_ == 0.0
    assert roc_auc_score(yt, scores) > 0.97
    assert np.mean(model.predict(Xt) == yt) > 0.9


def test_article_default_caps_its_512_components_with_a_note(data):
    X, y = data
    model = TwoClassSVM(search=False).fit(X, y)
    assert model.search_ is None and model.best_params_ == ARTICLE_DEFAULT
    assert model.pipeline_.named_steps["pca"].n_components_ == X.shape[1]
    assert "capped" in model.notes_[0] and "512" in model.notes_[0]


def test_two_class_search_on_a_subsample_refits_on_all_rows():
    X, y = synthetic(150, 150, seed=3)
    model = TwoClassSVM(n_jobs=1, max_search_samples=100).fit(X, y)
    assert model.search_["rows"] == 100
    assert model.pipeline_.named_steps["svc"].shape_fit_[0] == len(X)


def test_two_class_needs_both_classes(data):
    X, y = data
    with pytest.raises(ValueError, match="positives and negatives"):
        TwoClassSVM(n_jobs=1).fit(X[y], y[y])


def test_one_class_fits_on_positives_only_and_negatives_only_validate(data, held_out):
    X, y = data
    model = OneClassSVMModel(n_jobs=1).fit(X, y)
    # Refit the chosen setup on the positives alone: identical model, so negatives were never fit on.
    p = model.best_params_
    alone = oc_pipeline(p["normalize"], p["pca"], p["svm__gamma"], p["svm__nu"]).fit(X[y])
    Xt, yt = held_out
    np.testing.assert_allclose(model.score_samples(Xt), alone.score_samples(Xt), rtol=1e-6)
    assert model.search_["candidates"][0]["params"]["gamma"] == OC_ARTICLE["svm__gamma"]
    assert model.search_["best"] == int(np.argmax([c["roc_auc"] for c in model.search_["candidates"]]))
    assert roc_auc_score(yt, model.decision_function(Xt)) > 0.95
    # The threshold comes from held-out positives: about the target share of them reach it.
    v = model.validation_
    assert v["recall"] >= 0.9 and np.mean(v["scores"][v["positive"]] >= model.threshold_) == v["recall"]


def test_one_class_without_negatives_uses_the_default_and_says_so(data):
    X, y = data
    model = OneClassSVMModel(n_jobs=1, target_recall=0.8).fit(X[y])
    assert model.best_params_ == NO_NEGATIVES_DEFAULT and model.search_ is None
    assert "no negatives" in model.notes_[0]
    assert 0.75 <= model.validation_["recall"] <= 0.9 and model.validation_["roc_auc"] is None


def test_one_class_article_default_uses_the_svm_boundary(data):
    X, y = data
    model = OneClassSVMModel(search=False, n_jobs=1).fit(X, y)
    assert model.best_params_ == OC_ARTICLE
    svm = model.pipeline_.named_steps["svm"]
    libsvm = OneClassSVM.predict(svm, model.pipeline_[:-1].transform(X)) == 1  # libsvm's own boundary
    assert (model.predict(X) == libsvm).mean() > 0.98  # equal up to rounding at the boundary
    assert model.threshold_ == svm.boundary_


def test_nearest_positives_threshold_from_leave_one_out_scores(data, held_out):
    X, y = data
    model = NearestPositives(k=5, target_recall=0.9).fit(X, y)
    loo = model.pipeline_.named_steps["knn"].loo_scores_
    assert len(loo) == y.sum() and 0.9 <= np.mean(loo >= model.threshold_) < 0.95
    # Scored against themselves, training rows are at distance 0 from their nearest neighbour: higher than leave-one-out.
    assert np.all(model.score_samples(X[y]) >= loo - 1e-6)
    Xt, yt = held_out
    assert roc_auc_score(yt, model.decision_function(Xt)) > 0.95


def test_head_is_a_logistic_layer_on_the_features(data, held_out):
    X, y = data
    model = OutputLayerHead().fit(X, y)
    Xt, yt = held_out
    proba = model.pipeline_.predict_proba(Xt)[:, 1]
    np.testing.assert_array_equal(model.predict(Xt), proba >= 0.5)
    assert np.mean(model.predict(Xt) == yt) > 0.9


def test_fold_metrics_on_a_hand_checked_split():
    positive = np.array([True] * 4 + [False] * 16)
    scores = np.r_[[0.9, 0.8, 0.1, 0.05], np.linspace(0.7, 0.0, 16)]
    m = fold_metrics(positive, scores, threshold=0.5)
    # Selected: the 2 top positives and negatives scoring ≥ 0.5 (0.7, 0.653, 0.607, 0.56, 0.513).
    assert m["recall"] == 0.5 and m["specificity"] == 11 / 16 and m["accuracy"] == 13 / 20
    assert m["precision_at_5pct"] == 1.0  # top 5% of 20 = the single best score, a positive


@pytest.mark.slow
def test_compare_is_leak_free_and_one_class_methods_fit_on_positives_only(data, monkeypatch):
    X, y = data
    names = ["two-class", "one-class", "nearest-positives", "head"]
    row_of = {row.tobytes(): i for i, row in enumerate(X)}
    state = {"done": 0}
    fits = []
    real_fit = Pipeline.fit

    def spy(self, Xf, yf=None, **kw):
        current = names[state["done"] % len(names)], state["done"] // len(names)
        fits.append((*current, {row_of[np.asarray(r, np.float32).tobytes()] for r in Xf}))
        return real_fit(self, Xf, yf, **kw)

    monkeypatch.setattr(Pipeline, "fit", spy)
    result = compare(X, y, folds=2, methods=names, n_jobs=1,
                     progress=lambda done, total: state.update(done=done))
    splits = outer_splits(y, 2)
    assert {(m, f) for m, f, _ in fits} == {(m, f) for m in names for f in range(2)}
    for method, fold, rows in fits:
        train, test = splits[fold]
        assert rows <= set(train.tolist()), f"{method} fold {fold} fit on held-out rows"
        if method in ("one-class", "nearest-positives"):
            assert all(y[i] for i in rows), f"{method} fit on negatives"
    out = result.to_dict()
    assert set(out["methods"]) == set(names) and out["folds"] == 2
    for name in names:
        assert np.isfinite(result.scores[name]).all()
        assert out["methods"][name]["roc_auc"] > 0.95 and len(out["methods"][name]["thresholds"]) == 2


def test_select_rules():
    scores = np.array([0.3, 0.9, 0.1, 0.9, 0.5])
    chosen, rule = select(scores, threshold=0.5)
    assert chosen.tolist() == [False, True, False, True, True] and rule["rule"] == "threshold"
    chosen, rule = select(scores, top_k=2)
    assert chosen.tolist() == [False, True, False, True, False] and rule["k"] == 2
    chosen, _ = select(scores, top_fraction=0.5)  # ceil(2.5) = 3
    assert chosen.sum() == 3 and chosen[4]
    with pytest.raises(ValueError, match="choose one"):
        select(scores, threshold=0.5, top_k=1)


# pu reads every negative here as unlabelled, so it estimates no hidden positives and warns that the
# prior was clipped: expected on this data (tests/test_pu.py checks the warning itself).
@pytest.mark.filterwarnings("ignore:estimated class prior:UserWarning")
def test_every_method_keeps_the_scorer_contract(data, held_out, tmp_path):
    """Higher scores mean more like the positives, ``predict`` selects positives, and a saved model
    gives the same scores and, at its threshold, selects the same rows as the estimator."""
    from stylesift.classifiers.bundle import Bundle
    from stylesift.classifiers.methods import METHODS

    X, y = data
    Xt, yt = held_out
    fingerprint = {"backbone": "test", "feature_dim": X.shape[1], "dtype": "float32"}
    for name, method in METHODS.items():
        model = method.make(n_jobs=1).fit(X, y)
        s = model.score_samples(Xt)
        assert s.shape == (len(Xt),) and np.isfinite(s).all(), name
        assert roc_auc_score(yt, s) > 0.8, name  # higher = more like the positives
        on_train = np.asarray(model.predict(X), bool)  # the article's one-class default selects no held-out row here
        assert on_train[y].mean() >= 0.5 and on_train[y].mean() > on_train[~y].mean(), name  # it selects positives
        picked = np.asarray(model.predict(Xt), bool)
        path = Bundle(model.pipeline_, model.threshold_, name, "good", "ordinary", fingerprint).save(tmp_path / f"{name}.ssmodel")
        saved = Bundle.load(path, fingerprint=fingerprint)
        np.testing.assert_array_equal(saved.score(Xt), s, err_msg=name)  # the score users see is the estimator's
        assert saved.threshold == model.threshold_, name
        np.testing.assert_array_equal(select(saved.score(Xt), threshold=saved.threshold)[0], picked, err_msg=name)
        with pytest.raises(ValueError):
            model.score_samples(Xt[:, :-1])  # validated against n_features_in_


def test_scaled_one_class_svm_score_methods_agree_on_the_boundary(data):
    from stylesift.classifiers.one_class import ScaledOneClassSVM

    X, _ = data
    svm = ScaledOneClassSVM(gamma=0.5, nu=0.2).fit(X)
    s, d = svm.score_samples(X), svm.decision_function(X)
    np.testing.assert_allclose(d, s - svm.offset_[0])
    assert np.all((s >= 0) & (s <= 1 + 1e-9))  # a weighted mean similarity
    raw = OneClassSVM(gamma=0.5, nu=0.2).fit(X)
    # Same boundary as libsvm: the sign of the decision agrees with the plain OneClassSVM's.
    assert np.mean(np.sign(d) == np.sign(raw.decision_function(X))) > 0.98
