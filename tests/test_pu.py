"""PUClassifier: positives hand-picked from a feed, learnt against the rest of the feed (Elkan & Noto).

The synthetic task has a known answer: two Gaussian blobs in 64-d, a third of the positives labelled
and the other two thirds hidden among the negatives, so the share of positives in the unlabelled
rows (the class prior) is 600 / 2400 = 0.25.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import Pipeline
from sklearn.utils.estimator_checks import parametrize_with_checks

from stylesift.classifiers.base import pipeline_scores
from stylesift.classifiers.pu import PRIOR_FLOOR, PUClassifier

D, SHIFT = 64, 4.0  # distance between the blob centres, in within-blob standard deviations


def blobs(n_pos: int, n_neg: int, labelled_share: float, seed: int):
    """``X`` (float32, shape ``(n, 64)``), the truth ``y`` and the labels ``s`` (both bool, shape ``(n,)``)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n_pos + n_neg, D))
    X[:n_pos] += SHIFT / np.sqrt(D)
    y = np.arange(n_pos + n_neg) < n_pos
    s = np.zeros_like(y)
    s[rng.choice(n_pos, int(round(labelled_share * n_pos)), replace=False)] = True
    return X.astype(np.float32), y, s


@pytest.fixture(scope="module")
def task():
    X, y, s = blobs(900, 1800, 1 / 3, seed=1)
    return X, y, s, PUClassifier(threshold="posterior", random_state=0).fit(X, s)


def test_recovers_the_hidden_positives_and_their_share(task):
    X, y, s, model = task
    unlabelled = ~s
    true_prior = y[unlabelled].mean()
    assert true_prior == pytest.approx(0.25)
    assert roc_auc_score(y[unlabelled], model.oof_scores_[unlabelled]) >= 0.95
    accuracy = np.mean((model.oof_scores_[unlabelled] >= model.offset_) == y[unlabelled])
    assert accuracy >= 0.9
    assert abs(model.class_prior_ - true_prior) <= 0.05
    # c: the share of positives that were labelled (300 of 900); e1 reads it off held-out scores
    # (a little low: the L2 penalty shrinks g towards the base rate).
    assert abs(model.label_frequency_ - 1 / 3) <= 0.1
    assert model.background_rows_ == int(unlabelled.sum())
    # New rows from the same feed are scored as well by the bagged model.
    Xn, yn, _ = blobs(900, 1800, 1 / 3, seed=2)
    assert roc_auc_score(yn, model.score_samples(Xn)) >= 0.95
    assert np.mean(model.predict(Xn) == yn) >= 0.9
    assert model.predict(Xn).dtype == bool  # s was bool, so are the predicted classes


def test_training_rows_are_judged_by_scores_out_of_fold(task):
    X, y, s, model = task
    # Each oof score is the score of its own fold's model...
    for k in range(model.best_params_["cv"]):
        held = model.folds_ == k
        np.testing.assert_allclose(model.oof_scores_[held], X[held] @ model.fold_coef_[k] + model.fold_intercept_[k],
                                   rtol=1e-4, atol=1e-4)
    # ...and that model never saw the fold: replace the features of some of a fold's rows and the
    # other rows of the fold keep their scores exactly, while every other fold model changes.
    # (Folds follow the labels and the seed only, so they stay where they were.) Exact for the
    # first fit alone; the weighted refit sees its held-out rows through three scalars (the
    # calibration a, b and c), so it moves, but far less than the folds that trained on the rows.
    k, changed = 2, np.flatnonzero(model.folds_ == 2)[:40]
    X2 = X.copy()
    X2[changed] = np.random.default_rng(9).normal(size=(len(changed), D)) * 5
    same = (model.folds_ == k) & ~np.isin(np.arange(len(X)), changed)
    others = np.arange(5) != k
    first, first2 = (PUClassifier(reweight=False, random_state=0).fit(Z, s) for Z in (X, X2))
    np.testing.assert_array_equal(first2.folds_, first.folds_)
    np.testing.assert_array_equal(first2.fold_coef_[k], first.fold_coef_[k])
    np.testing.assert_array_equal(first2.oof_scores_[same], first.oof_scores_[same])
    assert not np.allclose(first2.fold_coef_[others], first.fold_coef_[others])
    refit, refit2 = (PUClassifier(random_state=0).fit(Z, s) for Z in (X, X2))
    moved = np.linalg.norm(refit2.fold_coef_ - refit.fold_coef_, axis=1) / np.linalg.norm(refit.fold_coef_, axis=1)
    assert moved[k] < 0.2 * moved[others].min()
    # As good as scores of new rows: the training rows' out-of-fold ranking is as good as the
    # bagged model's ranking of a fresh sample of the feed.
    Xn, yn, sn = blobs(900, 1800, 1 / 3, seed=3)
    fresh = roc_auc_score(yn[~sn], model.score_samples(Xn[~sn]))
    assert abs(roc_auc_score(y[~s], model.oof_scores_[~s]) - fresh) <= 0.01


def test_weighted_refit_estimates_the_posterior_itself(task):
    # Elkan & Noto's weighted refit learns p(y=1 | x) rather than p(s=1 | x): its posterior's mean
    # over the unlabelled rows is the share of positives hidden there (wrong weights, such as
    # counting every unlabelled row as a negative, would put it near 0), and its threshold is
    # p = 1/2, i.e. log-odds 0.
    X, y, s, model = task
    unlabelled = ~s
    assert model.reweighted_ and model.offset_ == 0.0
    post = model.posterior(X[unlabelled])
    np.testing.assert_allclose(post, 1 / (1 + np.exp(-model.score_samples(X[unlabelled]))))
    assert abs(post.mean() - y[unlabelled].mean()) <= 0.05
    first = PUClassifier(threshold="posterior", reweight=False, random_state=0).fit(X, s)
    assert np.mean(1 / (1 + np.exp(-first.score_samples(X[unlabelled]))) >= 0.5) < 0.05  # g alone: few pass 1/2
    assert np.mean(post >= 0.5) == pytest.approx(y[unlabelled].mean(), abs=0.05)
    assert roc_auc_score(y[unlabelled], model.oof_scores_[unlabelled]) >= \
        roc_auc_score(y[unlabelled], first.oof_scores_[unlabelled]) - 0.005
    # The prior, c and the calibration are the first fit's.
    assert model.class_prior_ == first.class_prior_ and model.calibration_ == first.calibration_
    np.testing.assert_array_equal(model.reweight_background_rows_, model.fold_background_rows_)
    capped = PUClassifier(threshold="posterior", max_reweight_background=500, random_state=0).fit(X, s)
    np.testing.assert_array_equal(capped.reweight_background_rows_, 500)
    assert abs(capped.posterior(X[unlabelled]).mean() - y[unlabelled].mean()) <= 0.05


def test_few_labelled_positives_skip_the_refit_and_say_so():
    X, _, s = blobs(60, 120, 1 / 3, seed=12)  # 20 labelled positives
    model = PUClassifier(threshold="posterior", random_state=0).fit(X, s)
    plain = PUClassifier(threshold="posterior", reweight=False, random_state=0).fit(X, s)
    assert not model.reweighted_ and plain.reweighted_ is False
    assert any("20 labelled positives, fewer than 30" in note and "no weighted refit" in note for note in model.notes_)
    np.testing.assert_array_equal(model.oof_scores_, plain.oof_scores_)
    assert model.offset_ == plain.offset_ != 0.0
    np.testing.assert_array_equal(model.posterior(X[:20]), plain.posterior(X[:20]))
    X2, _, s2 = blobs(90, 180, 1 / 3, seed=12)  # 30 labelled: refit
    assert PUClassifier(random_state=0).fit(X2, s2).reweighted_


def test_known_negatives_join_the_background_but_not_the_prior():
    X, y, s = blobs(900, 2400, 1 / 3, seed=4)
    negative = np.zeros_like(s)
    negative[np.flatnonzero(~y)[:600]] = True
    model = PUClassifier(random_state=0).fit(X, s, negative=negative)
    unlabelled = ~s & ~negative
    assert model.background_rows_ == int(unlabelled.sum())
    assert abs(model.class_prior_ - y[unlabelled].mean()) <= 0.05
    assert roc_auc_score(y[unlabelled], model.oof_scores_[unlabelled]) >= 0.95
    assert np.mean(model.oof_scores_[negative] < model.offset_) >= 0.95
    with pytest.raises(ValueError, match="both labelled positives and known negatives"):
        PUClassifier().fit(X, s, negative=s)
    with pytest.raises(ValueError, match="one value per row"):
        PUClassifier().fit(X, s, negative=negative[:-1])


def test_prior_zero_warns_and_is_clipped():
    # Every positive is labelled: the unlabelled rows hide none. Blobs further apart than in the
    # other tests, so that no negative lies in the positives' tail (with the usual blobs the
    # estimate of this zero is 0.006: near, but above the floor, so rightly no warning).
    X, _, _ = blobs(600, 1800, 1.0, seed=5)
    X[:600] += 8.0 / np.sqrt(D)
    s = np.arange(len(X)) < 600
    with pytest.warns(UserWarning, match=r"class prior .* clipped to 0\.001: .*no more often than chance"):
        model = PUClassifier(random_state=0).fit(X, s)
    assert model.prior_estimates_["prior_calibrated"] < PRIOR_FLOOR
    assert model.class_prior_ == PRIOR_FLOOR
    assert any("clipped" in note for note in model.notes_)


def test_no_warning_when_the_prior_is_inside_its_range(task):
    X, _, s, _ = task
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        PUClassifier(random_state=0).fit(X, s)


def test_thresholds_from_prior_and_from_target_recall(task):
    X, y, s, posterior = task
    unlabelled = ~s
    by_prior = PUClassifier(threshold="prior", random_state=0).fit(X, s)
    share = np.mean(by_prior.score_samples(X[unlabelled]) >= by_prior.offset_)  # as the feed is scored
    assert np.mean((by_prior.score_samples(X[unlabelled]) >= by_prior.offset_) == y[unlabelled]) >= 0.9
    assert share == pytest.approx(by_prior.class_prior_, abs=2 / unlabelled.sum())
    recall = PUClassifier(target_recall=0.8, random_state=0).fit(X, s)
    assert np.mean(recall.oof_scores_[s] >= recall.offset_) == pytest.approx(0.8, abs=0.01)
    assert recall.best_params_["threshold"] == "target_recall 0.8"
    np.testing.assert_array_equal(posterior.posterior(X[:50]) >= 0.5, posterior.predict(X[:50]))
    # Without the refit, the posterior rule is g / c = 1/2 exactly at the threshold, g calibrated
    # on the out-of-fold scores.
    plain = PUClassifier(threshold="posterior", reweight=False, random_state=0).fit(X, s)
    a, b = plain.calibration_
    assert 1 / (1 + np.exp(-(a * plain.offset_ + b))) / plain.label_frequency_ == pytest.approx(0.5)
    np.testing.assert_array_equal(plain.posterior(X[:50]) >= 0.5, plain.predict(X[:50]))
    assert np.mean(plain.predict(X[unlabelled]) == y[unlabelled]) >= 0.9
    with pytest.raises(ValueError, match="threshold must be one of"):
        PUClassifier(threshold="median").fit(X, s)
    with pytest.raises(ValueError, match="target_recall"):
        PUClassifier(target_recall=1.5).fit(X, s)


def test_subsampled_background_stays_calibrated():
    X, y, s = blobs(600, 6000, 1 / 3, seed=6)
    model = PUClassifier(max_background=1000, random_state=0).fit(X, s)
    np.testing.assert_array_equal(model.fold_background_rows_, 1000)
    assert any("max_background" in note for note in model.notes_)
    unlabelled = ~s
    # The kept background rows are weighted up to stand for all 4,800 of a fold, so g is calibrated
    # to the feed's share of labelled rows and c is the share of positives labelled (200 of 600).
    # Unweighted, the fold models see 5x more labelled rows per background row and c came out 0.60.
    assert abs(model.label_frequency_ - 1 / 3) <= 0.1
    assert abs(model.class_prior_ - y[unlabelled].mean()) <= 0.05
    assert roc_auc_score(y[unlabelled], model.oof_scores_[unlabelled]) >= 0.95


def test_deterministic_with_random_state(task):
    X, _, s, model = task
    again = PUClassifier(threshold="posterior", random_state=0).fit(X, s)
    np.testing.assert_array_equal(again.oof_scores_, model.oof_scores_)
    assert again.offset_ == model.offset_ and again.class_prior_ == model.class_prior_
    other = PUClassifier(random_state=1).fit(X, s)
    assert not np.array_equal(other.folds_, model.folds_)


def test_params_round_trip(task):
    X, _, s, _ = task
    est = PUClassifier(cv=3, C=0.5, threshold="prior", target_recall=0.7, max_background=123, reweight=False,
                       max_reweight_background=45, max_iter=50, n_jobs=2, random_state=7)
    params = est.get_params()
    assert params == {"cv": 3, "C": 0.5, "threshold": "prior", "target_recall": 0.7, "max_background": 123,
                      "reweight": False, "max_reweight_background": 45, "max_iter": 50, "n_jobs": 2,
                      "random_state": 7}
    copy = clone(est)
    assert copy.get_params() == params and copy is not est
    assert est.set_params(C=2.0, cv=4) is est
    assert est.get_params()["C"] == 2.0 and est.get_params()["cv"] == 4
    assert PUClassifier(**params).get_params() == params
    assert not hasattr(clone(PUClassifier().fit(X, s)), "pipeline_")


def test_pipeline_is_one_linear_model_a_bundle_can_hold(task):
    X, _, _, model = task
    assert isinstance(model.pipeline_, Pipeline)
    assert [type(step) for _, step in model.pipeline_.steps] == [LogisticRegression]
    np.testing.assert_allclose(pipeline_scores(model.pipeline_, X[:20]), model.score_samples(X[:20]))
    # The bagged model's log-odds are the mean of the fold models' log-odds.
    folds = X[:20] @ model.fold_coef_.T + model.fold_intercept_
    np.testing.assert_allclose(model.score_samples(X[:20]), folds.mean(1), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(model.decision_function(X[:20]), model.score_samples(X[:20]) - model.offset_)
    assert model.threshold_ == model.offset_


# As for OutputLayerHead (tests/test_estimator_checks.py): scores are float32 products, like the
# stored features, and row order moves their last bit.
EXPECTED = {"check_methods_sample_order_invariance": "float32 scores by design; row order moves the last bit (1e-7)"}


# scikit-learn's checks hand it fully labelled two-class data: no positives hide among the "unlabelled"
# rows, the prior is clipped near 0 and the prior rule would pick almost nothing, by design.
@parametrize_with_checks([PUClassifier(cv=3, C=0.1, threshold="posterior")], expected_failed_checks=lambda est: EXPECTED)
def test_sklearn_contract(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # tiny generic data: priors are clipped
        check(estimator)


def test_calibrated_prior_corrects_the_shrunk_scores():
    # A strong penalty shrinks every log-odds towards the base rate: read off the raw scores the
    # weighted estimate falls well short of the truth; calibrated on the out-of-fold scores
    # (Platt) it recovers it.
    X, y, s = blobs(900, 1800, 1 / 3, seed=8)
    model = PUClassifier(C=0.0003, random_state=0).fit(X, s)
    truth = y[~s].mean()
    raw, calibrated = model.prior_estimates_["prior_weight"], model.class_prior_
    assert abs(calibrated - truth) <= 0.05
    assert abs(calibrated - truth) < abs(raw - truth)
    a, b = model.calibration_
    assert a > 1  # the shrunk scores are stretched back
