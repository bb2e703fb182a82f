"""The model bundle: round trip, and every check that must refuse a file before anything is unpickled."""

from __future__ import annotations

import io
import json

import joblib
import numpy as np
import pytest

from stylesift.classifiers.bundle import MAGIC, Bundle, BundleError, read_header
from stylesift.classifiers.head import OutputLayerHead

FINGERPRINT = {"backbone": "test", "weights_sha256": "0" * 64, "feature_dim": 16, "dtype": "float32"}


class Tripwire:
    """Unpickling this creates ``path``: proof that a refused bundle was never unpickled."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.fixture(scope="module")
def fitted():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 16)).astype(np.float32)
    y = X[:, 0] > 0
    return OutputLayerHead().fit(X, y), X, y


def make_bundle(fitted, fingerprint=FINGERPRINT) -> Bundle:
    model, X, y = fitted
    sha = np.array([f"{i:064x}" for i in range(len(X))])
    return Bundle(pipeline=model.pipeline_, threshold=model.threshold_, method="head", positive_label="good",
                  negative_label="ordinary", fingerprint=fingerprint, summary={"positives": int(y.sum())},
                  train_sha256=sha, train_labels=np.where(y, "good", "ordinary"))


def write_raw(path, header: dict, payload: bytes) -> None:
    path.write_bytes(MAGIC + json.dumps(header).encode() + b"\n" + payload)


def test_round_trip_keeps_scores_threshold_labels_and_training_ids(tmp_path, fitted):
    model, X, y = fitted
    path = make_bundle(fitted).save(tmp_path / "m.joblib")
    header = read_header(path)
    assert header["method"] == "head" and header["labels"] == {"positive": "good", "negative": "ordinary"}
    assert header["fingerprint"] == FINGERPRINT and header["versions"]["scikit-learn"]
    back = Bundle.load(path, fingerprint=dict(FINGERPRINT))
    np.testing.assert_array_equal(back.score(X), model.decision_function(X))
    assert back.threshold == model.threshold_ and back.summary == {"positives": int(y.sum())}
    assert back.train_sha256.tolist() == [f"{i:064x}" for i in range(len(X))]
    assert back.train_labels.tolist() == np.where(y, "good", "ordinary").tolist()


def test_a_damaged_payload_is_refused_before_unpickling(tmp_path, fitted):
    good = make_bundle(fitted).save(tmp_path / "m.joblib")
    header = read_header(good)
    trap = tmp_path / "unpickled"
    buf = io.BytesIO()
    joblib.dump({"pipeline": Tripwire(trap)}, buf)
    bad = tmp_path / "bad.joblib"
    write_raw(bad, header, buf.getvalue())  # header checksum is the good payload's
    with pytest.raises(BundleError, match="checksum") as exc:
        Bundle.load(bad)
    assert str(bad) in str(exc.value) and "Nothing was unpickled" in str(exc.value)
    assert not trap.exists()
    truncated = tmp_path / "short.joblib"
    truncated.write_bytes(good.read_bytes()[:-10])
    with pytest.raises(BundleError, match="checksum"):
        Bundle.load(truncated)


def test_another_feature_space_is_refused_before_unpickling(tmp_path, fitted):
    import hashlib

    trap = tmp_path / "unpickled"
    buf = io.BytesIO()
    joblib.dump({"pipeline": Tripwire(trap)}, buf)
    payload = buf.getvalue()
    header = make_bundle(fitted).header(payload)
    assert header["payload_sha256"] == hashlib.sha256(payload).hexdigest()
    path = tmp_path / "m.joblib"
    write_raw(path, header, payload)
    other = {**FINGERPRINT, "weights_sha256": "1" * 64}
    with pytest.raises(BundleError, match="another feature space") as exc:
        Bundle.load(path, fingerprint=other)
    assert "weights_sha256" in str(exc.value)
    assert not trap.exists()


def test_a_bundle_from_another_scikit_learn_is_refused(tmp_path, fitted):
    path = make_bundle(fitted).save(tmp_path / "m.joblib")
    raw = path.read_bytes()
    header_line = raw[len(MAGIC):].split(b"\n", 1)[0]
    header = json.loads(header_line)
    header["versions"]["scikit-learn"] = "0.19.1"
    old = tmp_path / "old.joblib"
    write_raw(old, header, raw[len(MAGIC) + len(header_line) + 1:])
    with pytest.raises(BundleError, match="scikit-learn 0.19.1"):
        Bundle.load(old)
    assert Bundle.load(old, check_versions=False).method == "head"


def test_files_that_are_not_bundles(tmp_path, fitted):
    plain = tmp_path / "plain.joblib"
    joblib.dump(fitted[0].pipeline_, plain)  # a bare joblib pickle: no header to verify, so never loaded
    with pytest.raises(BundleError, match="not a stylesift model bundle"):
        Bundle.load(plain)
    broken = tmp_path / "broken.joblib"
    broken.write_bytes(MAGIC + b"{not json\n" + b"x")
    with pytest.raises(BundleError, match="header is damaged"):
        read_header(broken)
    with pytest.raises(BundleError, match="cannot read"):
        Bundle.load(tmp_path / "missing.joblib")
