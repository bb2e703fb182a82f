"""What the Ray engine computes and refuses, without Ray or a network: the option rules and the worker's
fingerprint check over every feature set (a node with another detail recipe is refused)."""

from __future__ import annotations

import pytest

from stylesift.featurizer.backbones import runtimes
from stylesift.featurizer.ray import RayOptionError, check_feature_sets, worker_spec
from stylesift.featurizer.ray.worker import refusal
from stylesift.featurizer.weights import Weights

SETS = ("pooled", "style", "detail")


def _fingerprints(fingerprint: str = "ab" * 32) -> dict:
    weights = Weights(notop="unused.h5", top=None, source="test", fingerprint=fingerprint)
    return runtimes.fingerprints(weights, "float32", SETS)


def test_every_stored_set_is_computed_on_ray_and_the_spec_names_them():
    check_feature_sets(True, SETS)
    check_feature_sets(False, ("pooled", "bogus"))  # the local engine's own checks apply there
    with pytest.raises(RayOptionError, match="not bogus") as refused:
        check_feature_sets(True, ("pooled", "bogus"))
    assert refused.value.option == "--features"
    assert worker_spec(224, ("pooled", "detail")) == {"space": "float32", "runtime": "keras",
                                                      "feature_sets": ["pooled", "detail"], "input_size": 224}


def test_a_worker_is_refused_when_any_set_differs_and_says_which():
    driver = _fingerprints()
    assert refusal(driver, _fingerprints(), "node-a") is None

    other_recipe = {**driver, "detail": {**driver["detail"], "detail_version": driver["detail"]["detail_version"] + 1}}
    message = refusal(driver, other_recipe, "node-b")
    assert message.startswith("Ray worker on node-b refused") and "in detail;" in message and "detail_version" in message

    other_tiles = {**driver, "detail": {**driver["detail"], "tiles": {**driver["detail"]["tiles"], "tile": 256}}}
    assert "in detail;" in refusal(driver, other_tiles, "node-c")

    other_weights = _fingerprints("cd" * 32)  # every set follows the weights
    assert "in pooled, style, detail;" in refusal(driver, other_weights, "node-d")

    without_detail = {k: v for k, v in driver.items() if k != "detail"}  # a worker that cannot name the set
    assert "in detail;" in refusal(driver, without_detail, "node-e")
