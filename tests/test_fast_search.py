"""The fast searches and kernels of the tuned methods give the models the slower libsvm/GridSearchCV path gave."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import GridSearchCV, StratifiedKFold

from stylesift.classifiers import one_class, two_class
from stylesift.classifiers.bundle import Bundle
from stylesift.classifiers.kernel_svm import KernelOneClassSVM
from stylesift.classifiers.one_class import ScaledOneClassSVM
from stylesift.classifiers.preprocess import normalize_step


def synthetic(n_pos=90, n_neg=90, d=48, seed=0):
    rng = np.random.default_rng(seed)
    pos = rng.gamma(1.5, 1.0, (n_pos, d))
    neg = rng.gamma(1.5, 1.0, (n_neg, d))
    pos[:, :6] += rng.gamma(2.0, 1.0, (n_pos, 6))
    neg[:, 6:12] += rng.gamma(2.0, 1.0, (n_neg, 6))
    X = np.vstack([pos, neg]).astype(np.float32)
    y = np.r_[np.ones(n_pos, bool), np.zeros(n_neg, bool)]
    order = rng.permutation(len(y))
    return X[order], y[order]


@pytest.mark.parametrize("gamma,nu", [(4.0, 0.1), (16.0, 0.5)])
def test_kernel_one_class_svm_is_libsvms_model(gamma, nu):
    X, _ = synthetic()
    Z = normalize_step("l2").fit_transform(X)
    libsvm = ScaledOneClassSVM(kernel="rbf", gamma=gamma, nu=nu).fit(Z[:120])
    ours = KernelOneClassSVM(gamma=gamma, nu=nu).fit(Z[:120])
    assert len(ours.support_vectors_) == len(libsvm.support_)
    np.testing.assert_allclose(ours.score_samples(Z[120:]), libsvm.score_samples(Z[120:]), atol=1e-6)
    assert ours.offset_ == pytest.approx(float(libsvm.offset_[0]), abs=1e-6)
    np.testing.assert_array_equal(ours.predict(Z[120:]), libsvm.predict(Z[120:]))


def test_one_class_search_ranks_the_grid_as_gridsearchcv_did():
    X, y = synthetic()
    model = one_class.OneClassSVMModel(n_jobs=1)
    splits = one_class.validation_splits(y, 3, 0)
    params, table, scores = model._search(X, y, splits)
    # The same candidates through GridSearchCV with libsvm's own kernel (the code this replaced).
    grid = [{"normalize": [normalize_step(n) for n in g["normalize"]], "pca": [one_class._pca_step(p, 0) for p in g["pca"]],
             "svm__gamma": g["svm__gamma"], "svm__nu": g["svm__nu"]} for g in one_class.SEARCH_GRID]
    reference = GridSearchCV(one_class.make_pipeline(), grid, cv=splits, refit=False,
                             scoring=lambda est, X_, y_: roc_auc_score(y_, est.score_samples(X_))).fit(X, y)
    np.testing.assert_allclose([c["roc_auc"] for c in table["candidates"]], reference.cv_results_["mean_test_score"],
                               atol=1e-5)  # the table keeps 5 decimals
    assert table["best"] == int(np.argmax(np.round(reference.cv_results_["mean_test_score"], 4)))
    chosen = one_class.make_pipeline(params["normalize"], params["pca"], params["svm__gamma"], params["svm__nu"])
    for train, test in splits:
        np.testing.assert_allclose(scores[test], clone(chosen).fit(X[train]).score_samples(X[test]), atol=1e-6)


def test_two_class_search_matches_gridsearchcv_on_the_same_folds():
    X, y = synthetic()
    _, table = two_class.TwoClassSVM(n_jobs=1)._search(X, y)
    grid = [{k: ([normalize_step(n) for n in v] if k == "normalize" else v) for k, v in g.items()}
            for g in two_class.SEARCH_GRID]
    reference = GridSearchCV(two_class.make_pipeline(), grid, refit=False, scoring="accuracy",
                             cv=StratifiedKFold(3, shuffle=True, random_state=0)).fit(X, y)
    ours = np.array([c["accuracy"] for c in table["candidates"]])
    # One shared PCA per fold instead of one per candidate: the same numbers up to the solver's rounding.
    np.testing.assert_allclose(ours, reference.cv_results_["mean_test_score"], atol=0.02)


def test_tuned_models_round_trip_through_a_bundle(tmp_path):
    X, y = synthetic()
    for est in (one_class.OneClassSVMModel(n_jobs=1), two_class.TwoClassSVM(n_jobs=1, max_search_samples=120)):
        est.fit(X, y)
        bundle = Bundle(pipeline=est.pipeline_, threshold=est.threshold_, method="m", positive_label="p",
                        negative_label="n", fingerprint={"feature_dim": X.shape[1]})
        path = bundle.save(tmp_path / f"{type(est).__name__}.ssmodel")
        loaded = Bundle.load(path)
        np.testing.assert_allclose(loaded.score(X), est.score_samples(X), rtol=1e-6, atol=1e-9)
    assert isinstance(one_class.OneClassSVMModel(n_jobs=1).fit(X, y).pipeline_[-1], KernelOneClassSVM)


def test_the_in_place_kernel_is_the_whole_matrix_expression_block_by_block():
    from stylesift.classifiers.kernel_svm import rbf_from_distances, rbf_kernel, squared_distances

    X = np.abs(np.random.default_rng(3).standard_normal((301, 64))).astype(np.float32)  # 301: a ragged last block
    X[7] = X[3]  # a repeated row: distance 0 up to rounding, clipped at 0, never negative
    whole = rbf_from_distances(squared_distances(X, X), 0.02)
    blocked = rbf_kernel(X, 0.02, block_rows=64)
    assert blocked.dtype == np.float64 and blocked.shape == (301, 301)
    np.testing.assert_allclose(blocked, whole, rtol=1e-5, atol=1e-9)  # float32 products: the last bits differ
    assert blocked[3, 7] == pytest.approx(1.0, abs=1e-6) and np.all(blocked <= 1.0)
    assert blocked.min() < 0.5  # the width spreads the values: a constant kernel would pass the rest
