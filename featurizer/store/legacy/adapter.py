"""Opening a format_version 1 store for reading: the reading interface of the current store over a V1 reader.

:class:`~stylesift.featurizer.store.FeatureStore` opened ``"r"`` on an old store reads through a
:class:`V1Adapter` (the same methods its current-format reader has); a writer upgrades the store first.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import h5py
import numpy as np

from stylesift.featurizer.store.files import FORMAT, Layout, extract_hint
from stylesift.featurizer.store.legacy.v1 import V1Reader
from stylesift.featurizer.store.types import Failure, StoreError, Verdict, path_bytes

__all__ = ["V1Adapter", "is_legacy"]


def is_legacy(path: Path) -> bool:
    """A format_version 1 store (main file and/or journal) without a current manifest."""
    layout = Layout(Path(path))
    if layout.manifest.exists():
        return False
    if layout.journal.is_dir() and any(e.suffix == ".npz" for e in layout.journal.iterdir()):
        return True
    if not layout.path.is_file():
        return False
    try:
        with h5py.File(layout.path, "r") as f:
            return f.attrs.get("format") == FORMAT and int(f.attrs.get("format_version", 0)) == 1
    except (OSError, ValueError):
        return False


class V1Adapter:
    """An old store, read as it is (verdicts did not exist then: there are none)."""

    format_version = 1

    def __init__(self, path, fingerprint: dict | None = None):
        self.path = Path(path)
        self._v1 = V1Reader(path, fingerprint=fingerprint)

    def __len__(self) -> int:
        return len(self._v1)

    @property
    def feature_sets(self) -> dict[str, dict]:
        fp = self._v1.fingerprint
        return {"pooled": fp} if fp else {}

    @property
    def sha256(self) -> np.ndarray:
        return self._v1.sha256

    @property
    def added(self) -> np.ndarray:
        return self._v1.added

    @property
    def labels(self) -> np.ndarray:
        return self._v1.labels

    def path_bytes(self, row: int) -> list[bytes]:
        return [path_bytes(p) for p in self._v1.paths(row)]

    @property
    def failures(self) -> list[Failure]:
        return self._v1.failures

    def rows_of(self, sha256s: Sequence[str]) -> np.ndarray:
        return np.array([-1 if (r := self._v1.row_of(str(s))) is None else r for s in sha256s], np.int64)

    def has_features(self, name: str = "pooled") -> np.ndarray:
        return np.full(len(self), name == "pooled" and bool(self.feature_sets))

    def features(self, rows, feature_set: str = "pooled") -> np.ndarray:
        if feature_set not in self.feature_sets:
            have = ", ".join(sorted(self.feature_sets)) or "none"
            raise StoreError(f"{self.path}: no feature set {feature_set!r} in this store (it holds: {have}); add it with "
                             + extract_hint(self.path, feature_set))
        return self._v1.features(rows)

    generation = None  # an old store read as it is: no manifest, nothing to compare

    def verdicts(self) -> list[Verdict]:
        return []
