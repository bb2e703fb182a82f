"""Shared fixtures only (helper functions live in tests/helpers/, imported as ``helpers.*``).

The real ImageNet weights are resolved once per session (cached per user after that)."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest
from helpers.pictures import write_pictures


@pytest.fixture(scope="session")
def weights():
    """Real ResNet50 ImageNet weights (the first run on a machine fetches and converts them)."""
    from stylesift.featurizer.weights import resolve

    return resolve()


@pytest.fixture(scope="session")
def featurizer(weights):
    """One Featurizer (and so one loaded network) for the whole session."""
    from stylesift.featurizer.extract import Featurizer

    return Featurizer(weights, batch_size=8, workers=2, runtime="keras")  # the reference runtime (has .backbone.model)


@pytest.fixture
def pictures(tmp_path):
    return write_pictures(tmp_path / "pictures", 12)


@pytest.fixture
def make_pictures():
    """The :func:`write_pictures` function, for tests that need several folders of pictures."""
    return write_pictures
