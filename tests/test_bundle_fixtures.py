"""Model files that stylesift 0.2.0 wrote still load and score the same rows identically.

The bundles under ``tests/fixtures/bundles-0.2.0/`` were written once by 0.2.0 (see
``tests/fixtures/make_bundles_0_2_0.py``) and are never regenerated: the allow-list names classes by
module path, so moving a module without keeping that path importable breaks them, and this test
says so.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from stylesift.classifiers.bundle import Bundle, inspect

HERE = Path(__file__).parent / "fixtures" / "bundles-0.2.0"
EXPECTED = json.loads((HERE / "expected.json").read_text())


@pytest.mark.parametrize("method", sorted(EXPECTED["methods"]))
def test_a_0_2_0_bundle_loads_and_scores_as_it_did(method):
    # The library versions recorded in the file are those of the day it was written; scikit-learn
    # moves on, so the version check (a separate, tested refusal) is not what this test is about.
    bundle = Bundle.load(HERE / f"{method}.ssmodel", fingerprint=EXPECTED["fingerprint"], check_versions=False)
    want = EXPECTED["methods"][method]
    assert bundle.method == method and bundle.threshold == want["threshold"]
    # Float tolerance, not bit equality: the BLAS kernels differ by CPU (an AVX2-only EPYC moved the
    # two-class-default score 0.02541805 to 0.02541801, relative 1.4e-6); a wrong model is off by far more.
    np.testing.assert_allclose(bundle.score(np.load(HERE / "queries.npy")), want["scores"], rtol=1e-5, atol=1e-7)


def test_every_type_a_0_2_0_bundle_names_is_still_on_the_allow_list():
    for method in EXPECTED["methods"]:
        info = inspect(HERE / f"{method}.ssmodel")
        assert info["checksum_ok"] and info["types"], method
        assert info["refused_types"] == [], (method, info["refused_types"])
