"""The feature store (the protocol is described in :mod:`stylesift.featurizer.store.facade`).

``from stylesift.featurizer.store import FeatureStore`` is the entry; the other names are its value
types, errors and the helpers extract uses.
"""

from __future__ import annotations

from stylesift.featurizer.store.facade import CRASH_POINTS, FORMAT, FORMAT_VERSION, FeatureStore
from stylesift.featurizer.store.reader import feature_matrix
from stylesift.featurizer.store.types import (
    Failure,
    FeatureSpaceMismatch,
    StoreBusy,
    StoreError,
    Verdict,
    display_path,
    file_sha256,
    path_bytes,
    path_fields,
)
from stylesift.featurizer.store.writer import NONFINITE, finite_rows, split_finite

__all__ = ["FeatureStore", "StoreError", "StoreBusy", "FeatureSpaceMismatch", "Failure", "Verdict", "display_path",
           "path_fields", "CRASH_POINTS", "FORMAT", "FORMAT_VERSION", "NONFINITE", "split_finite", "finite_rows",
           "path_bytes", "file_sha256", "feature_matrix"]
