"""The model bundle: round trip, header validation, and every check that must refuse a file before anything is built."""

from __future__ import annotations

import hashlib
import io
import json

import joblib
import numpy as np
import pytest
from helpers.bundles import FINGERPRINT, make_bundle, write_legacy, write_raw

from stylesift.classifiers.bundle import LEGACY_MAGIC, MAGIC, UPGRADE_COMMAND, Bundle, BundleError, inspect, read_header, upgrade
from stylesift.classifiers.head import OutputLayerHead


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


def split(path) -> tuple[dict, bytes]:
    raw = path.read_bytes()
    line, payload = raw[len(MAGIC):].split(b"\n", 1)
    return json.loads(line), payload


def test_round_trip_keeps_scores_threshold_labels_and_training_ids(tmp_path, fitted):
    model, X, y = fitted
    path = make_bundle(fitted).save(tmp_path / "m.ssmodel")
    header = read_header(path)
    assert header["method"] == "head" and header["labels"] == {"positive": "good", "negative": "ordinary"}
    assert header["fingerprint"] == FINGERPRINT and header["versions"]["scikit-learn"] and header["versions"]["skops"]
    back = Bundle.load(path, fingerprint=dict(FINGERPRINT))
    np.testing.assert_array_equal(back.score(X), model.score_samples(X))
    assert back.threshold == model.threshold_ and back.summary == {"positives": int(y.sum())}
    assert back.train_sha256.tolist() == [f"{i:064x}" for i in range(len(X))]
    assert back.train_labels.tolist() == np.where(y, "good", "ordinary").tolist()
    info = inspect(path)
    assert info["checksum_ok"] and info["refused_types"] == [] and "sklearn.pipeline.Pipeline" in info["types"]


def test_the_payload_is_a_zip_of_json_and_arrays_not_a_pickle(tmp_path, fitted):
    import zipfile

    _, payload = split(make_bundle(fitted).save(tmp_path / "m.ssmodel"))
    names = zipfile.ZipFile(io.BytesIO(payload)).namelist()
    assert "schema.json" in names and all(n == "schema.json" or n.endswith(".npy") for n in names)
    assert b"\x80\x04" not in payload[:2] and not payload.startswith(b"\x78")  # no pickle, no zlib'd pickle


def test_a_damaged_payload_is_refused_before_loading(tmp_path, fitted):
    good = make_bundle(fitted).save(tmp_path / "m.ssmodel")
    header, _ = split(good)
    trap = tmp_path / "unpickled"
    buf = io.BytesIO()
    joblib.dump({"pipeline": Tripwire(trap)}, buf)
    bad = tmp_path / "bad.ssmodel"
    write_raw(bad, header, buf.getvalue())  # header checksum is the good payload's
    with pytest.raises(BundleError, match="checksum") as exc:
        Bundle.load(bad)
    assert str(bad) in str(exc.value) and "Nothing was loaded" in str(exc.value)
    assert not trap.exists()
    truncated = tmp_path / "short.ssmodel"
    truncated.write_bytes(good.read_bytes()[:-10])
    with pytest.raises(BundleError, match="checksum"):
        Bundle.load(truncated)
    assert inspect(truncated)["checksum_ok"] is False


def test_another_feature_space_is_refused(tmp_path, fitted):
    path = make_bundle(fitted).save(tmp_path / "m.ssmodel")
    other = {**FINGERPRINT, "weights_sha256": "1" * 64}
    with pytest.raises(BundleError, match="another feature space") as exc:
        Bundle.load(path, fingerprint=other)
    assert "weights_sha256" in str(exc.value)


def test_a_bundle_from_another_scikit_learn_is_refused(tmp_path, fitted):
    path = make_bundle(fitted).save(tmp_path / "m.ssmodel")
    header, payload = split(path)
    header["versions"]["scikit-learn"] = "0.19.1"
    old = tmp_path / "old.ssmodel"
    write_raw(old, header, payload)
    with pytest.raises(BundleError, match="scikit-learn 0.19.1"):
        Bundle.load(old)
    assert Bundle.load(old, check_versions=False).method == "head"


def test_files_that_are_not_bundles(tmp_path, fitted):
    plain = tmp_path / "plain.joblib"
    joblib.dump(fitted[0].pipeline_, plain)  # a bare joblib pickle: no header to verify, so never loaded
    with pytest.raises(BundleError, match="not a stylesift model bundle"):
        Bundle.load(plain)
    broken = tmp_path / "broken.ssmodel"
    broken.write_bytes(MAGIC + b"{not json\n" + b"x")
    with pytest.raises(BundleError, match="header is damaged") as exc:
        read_header(broken)
    assert str(broken) in str(exc.value)
    with pytest.raises(BundleError, match="cannot read"):
        Bundle.load(tmp_path / "missing.ssmodel")
    with pytest.raises(BundleError, match="is a directory"):
        Bundle.load(tmp_path)


def _replace(header: dict, field: str, value):
    edited = json.loads(json.dumps(header))
    if value is _MISSING:
        del edited[field]
    else:
        edited[field] = value
    return edited


_MISSING = object()


@pytest.mark.parametrize("field, value", [
    ("format", "other"), ("format_version", "abc"), ("format_version", 1.5), ("format_version", True),
    ("payload_format", "pickle"), ("payload_sha256", 5), ("payload_sha256", "zz"), ("payload_bytes", _MISSING),
    ("payload_bytes", -1), ("payload_bytes", "12"), ("method", _MISSING), ("method", ["head"]), ("threshold", "high"),
    ("threshold", None), ("threshold", True), ("labels", []), ("labels", {"positive": 3}),
    ("labels", {"negative": "x"}), ("fingerprint", _MISSING), ("fingerprint", "resnet"), ("fingerprint", {}),
    ("fingerprint_id", "0" * 16), ("versions", None), ("versions", {"numpy": "2"}), ("created", "yesterday"),
    ("summary", [1, 2]),
])
def test_every_header_field_is_validated_with_one_error_naming_file_and_field(tmp_path, fitted, field, value):
    header, payload = split(make_bundle(fitted).save(tmp_path / "m.ssmodel"))
    path = tmp_path / "edited.ssmodel"
    write_raw(path, _replace(header, field, value), payload)
    for load in (read_header, Bundle.load):
        with pytest.raises(BundleError) as exc:
            load(path)
        assert str(path) in str(exc.value) and repr(field) in str(exc.value), str(exc.value)


@pytest.mark.parametrize("line", [b"[1, 2]", b'"text"', b"null", b"3"])
def test_a_header_that_is_not_an_object_is_refused(tmp_path, line):
    path = tmp_path / "m.ssmodel"
    path.write_bytes(MAGIC + line + b"\nxx")
    with pytest.raises(BundleError, match="header is damaged") as exc:
        read_header(path)
    assert str(path) in str(exc.value)


def test_a_nan_threshold_in_the_header_is_refused(tmp_path, fitted):
    header, payload = split(make_bundle(fitted).save(tmp_path / "m.ssmodel"))
    path = tmp_path / "nan.ssmodel"
    path.write_bytes(MAGIC + json.dumps({**header, "threshold": float("nan")}).encode() + b"\n" + payload)
    with pytest.raises(BundleError, match="'threshold'"):
        Bundle.load(path)


def test_a_newer_format_asks_for_a_newer_stylesift(tmp_path, fitted):
    header, payload = split(make_bundle(fitted).save(tmp_path / "m.ssmodel"))
    path = tmp_path / "future.ssmodel"
    write_raw(path, {**header, "format_version": 9}, payload)
    with pytest.raises(BundleError, match="newer than this stylesift"):
        read_header(path)


def test_a_format_1_pickle_bundle_is_refused_with_the_upgrade_command_and_never_unpickled(tmp_path, fitted):
    trap = tmp_path / "unpickled"
    old = tmp_path / "old.joblib"
    write_legacy(old, fitted, {"pipeline": Tripwire(trap), "train_sha256": np.array([]), "train_labels": np.array([])})
    for load in (read_header, Bundle.load):
        with pytest.raises(BundleError) as exc:
            load(old)
        assert UPGRADE_COMMAND in str(exc.value) and str(old) in str(exc.value)
    info = inspect(old)
    assert info["format_version"] == 1 and info["needs_upgrade"] == UPGRADE_COMMAND
    with pytest.raises(BundleError, match="--trust-pickle"):
        upgrade(old, tmp_path / "new.ssmodel")
    assert not trap.exists()


def test_upgrade_converts_a_format_1_bundle_when_trusted(tmp_path, fitted):
    model, X, _ = fitted
    old = tmp_path / "old.joblib"
    write_legacy(old, fitted)
    new = upgrade(old, tmp_path / "new.ssmodel", trust_pickle=True)
    assert new.read_bytes().startswith(MAGIC)
    back = Bundle.load(new, fingerprint=FINGERPRINT)
    np.testing.assert_array_equal(back.score(X), model.score_samples(X))
    assert back.threshold == model.threshold_ and back.train_sha256.tolist()[:1] == ["0" * 64]
    assert back.summary["upgraded_from"]["file"] == str(old)
    with pytest.raises(BundleError, match="already a format-2"):
        upgrade(new, tmp_path / "again.ssmodel", trust_pickle=True)
    # an edited pickle is refused by its checksum before unpickling, even when trusted
    header, payload = split(old)
    tampered = tmp_path / "tampered.joblib"
    trap = tmp_path / "unpickled"
    buf = io.BytesIO()
    joblib.dump({"pipeline": Tripwire(trap)}, buf)
    write_raw(tampered, header, buf.getvalue(), LEGACY_MAGIC)
    with pytest.raises(BundleError, match="checksum"):
        upgrade(tampered, tmp_path / "t.ssmodel", trust_pickle=True)
    assert not trap.exists()
    assert hashlib.sha256(payload).hexdigest() == header["payload_sha256"]


def test_small_payloads_are_deflated_and_large_float_ones_stored_both_loading_back(tmp_path, fitted, monkeypatch):
    import zipfile

    from stylesift.classifiers.bundle import model as bundle_model

    def kinds(path):
        return {i.compress_type for i in zipfile.ZipFile(io.BytesIO(split(path)[1])).infolist()}

    model, X, _ = fitted
    small = make_bundle(fitted).save(tmp_path / "small.ssmodel")
    assert kinds(small) == {zipfile.ZIP_DEFLATED}
    monkeypatch.setattr(bundle_model, "DEFLATE_UP_TO", len(split(small)[1]) // 2)  # this payload now counts as large
    large = make_bundle(fitted).save(tmp_path / "large.ssmodel")
    assert kinds(large) == {zipfile.ZIP_STORED}
    assert len(split(large)[1]) > len(split(small)[1])
    for path in (small, large):
        np.testing.assert_array_equal(Bundle.load(path, fingerprint=dict(FINGERPRINT)).score(X), model.score_samples(X))
