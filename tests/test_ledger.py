"""The extraction ledger: what it keeps while a content waits for its features (hostile review, #23)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from stylesift.featurizer.ledger import ExtractReport, Ledger, Outcome, PreparedFile
from stylesift.featurizer.store import FeatureStore

FP = {"backbone": "test", "feature_dim": 8, "dtype": "float32"}


def test_copies_of_one_new_content_wait_without_pixels_and_settle_together(tmp_path):
    with FeatureStore(tmp_path / "s.h5", "a", fingerprint=FP) as st:
        ledger = Ledger(st, ExtractReport(), label=None)
        copies = [PreparedFile(Path(f"/in/{i}.jpg"), 10, 1.0, "ab" * 32, np.zeros((224, 224, 3), np.uint8))
                  for i in range(50)]
        outcomes = [ledger.classify(c) for c in copies]
        assert outcomes == [Outcome.NEW] + [Outcome.DUPLICATE] * 49
        waiting = ledger.pending["ab" * 32]
        assert waiting[0].image is not None  # the one the network still needs
        assert all(c.image is None for c in waiting[1:])
        assert ledger.paths_of("ab" * 32) == [f"/in/{i}.jpg" for i in range(50)]
        st.add(["ab" * 32], np.ones((1, 8), np.float32), [ledger.paths_of("ab" * 32)])
        assert ledger.stored(["ab" * 32]) == 50
        assert (ledger.report.new, ledger.report.cached) == (1, 49)
