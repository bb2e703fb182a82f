"""End to end with the real network: hostile and old models refused by `score`, an int8 model scored, names kept literally."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import skops.io
from helpers.pictures import write_pictures
from typer.testing import CliRunner

from stylesift.classifiers.bundle import MAGIC, UPGRADE_COMMAND, Bundle
from stylesift.classifiers.head import OutputLayerHead
from stylesift.cli.main import app

pytestmark = [pytest.mark.weights, pytest.mark.slow]
runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


class Marker:
    """Building one (skops calls ``__setstate__``) writes its file: proof that code from the model ran."""

    def __init__(self, path):
        self.path = str(path)

    def __setstate__(self, state):
        Path(state["path"]).write_text("code ran")


def hostile_bundle(path, fingerprint, marker) -> Path:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(20, 2048)).astype(np.float32)
    model = OutputLayerHead().fit(X, X[:, 0] > 0)
    payload = skops.io.dumps({"pipeline": model.pipeline_, "train_sha256": np.array(["0" * 64]),
                              "train_labels": np.array(["good"]), "extra": Marker(marker)})
    header = Bundle(model.pipeline_, 0.0, "head", "good", "ordinary", fingerprint).header(payload)
    header.update(payload_sha256=hashlib.sha256(payload).hexdigest(), payload_bytes=len(payload))
    path.write_bytes(MAGIC + json.dumps(header).encode() + b"\n" + payload)
    return path


def test_score_refuses_a_hostile_model_of_the_right_feature_space_and_runs_nothing(tmp_path, featurizer):
    marker = tmp_path / "ran"
    model = hostile_bundle(tmp_path / "m.ssmodel", featurizer.fingerprint, marker)
    pictures = write_pictures(tmp_path / "new", 2)
    result = run("score", model, *pictures, "--store", tmp_path / "s.h5")
    assert result.exit_code == 1, result.output
    assert "allow-list" in result.output and f"{__name__}.Marker" in result.output and str(model) in result.output
    assert not marker.exists() and not (tmp_path / "s.h5").exists()


def test_file_names_with_brackets_are_reported_literally(tmp_path, featurizer):
    folder = tmp_path / "in"
    write_pictures(folder, 2)
    (folder / "[bold red]photo.jpg").write_bytes(b"not a picture")
    store = tmp_path / "s.h5"
    result = run("extract", folder, "--store", store, "--verbose")
    assert result.exit_code == 3, result.output
    assert f"failed: {folder / '[bold red]photo.jpg'}: not an image format" in result.output
    missing = run("score", tmp_path / "[red]model.ssmodel", folder, "--store", store)
    assert missing.exit_code == 1 and f"{tmp_path / '[red]model.ssmodel'}: cannot read" in missing.output


def test_extract_json_counts_skipped_files_and_verbose_names_them(tmp_path, featurizer):
    folder = tmp_path / "in"
    write_pictures(folder, 1)
    (folder / "notes.txt").write_text("x")
    (folder / ".hidden.jpg").write_bytes(b"x")
    report = json.loads(run("extract", folder, "--store", tmp_path / "s.h5", "--json").stdout)
    assert report["skipped"] == 2 and report["new"] == 1
    verbose = run("extract", folder, "--store", tmp_path / "s.h5", "--verbose")
    assert f"skipped: {folder / 'notes.txt'}: no image extension" in verbose.output
    assert f"skipped: {folder / '.hidden.jpg'}: hidden file" in verbose.output


def test_an_old_pickle_model_is_refused_by_score_with_the_upgrade_command(tmp_path, featurizer):
    import joblib

    from stylesift.classifiers.bundle import LEGACY_MAGIC

    marker = tmp_path / "ran"

    class Tripwire:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    import io

    buf = io.BytesIO()
    joblib.dump({"pipeline": Tripwire()}, buf)
    payload = buf.getvalue()
    header = {"format": "stylesift-bundle", "format_version": 1, "payload_sha256": hashlib.sha256(payload).hexdigest(),
              "payload_bytes": len(payload), "method": "head", "threshold": 0.0,
              "labels": {"positive": "good", "negative": None}, "fingerprint": featurizer.fingerprint,
              "versions": {"scikit-learn": "x", "numpy": "2"}}
    old = tmp_path / "old.joblib"
    old.write_bytes(LEGACY_MAGIC + json.dumps(header).encode() + b"\n" + payload)
    result = run("score", old, *write_pictures(tmp_path / "new", 1), "--store", tmp_path / "s.h5")
    assert result.exit_code == 1 and UPGRADE_COMMAND in result.output and not marker.exists()


def test_a_model_trained_on_int8_features_scores_through_the_cli(tmp_path, weights):
    pytest.importorskip("onnxruntime")
    store = tmp_path / "int8.h5"
    write_pictures(tmp_path / "good", 6, seed=1)
    write_pictures(tmp_path / "other", 6, seed=5, size=(40, 120))
    for label in ("good", "other"):
        result = run("extract", tmp_path / label, "--store", store, "--label", label, "--precision", "int8")
        assert result.exit_code == 0, result.output
    model = tmp_path / "m.ssmodel"
    result = run("train", "--store", store, "--positive", "good", "--negative", "other", "--method", "head",
                 "--out", model)
    assert result.exit_code == 0, result.output
    assert Bundle.load(model).fingerprint.get("precision") == "int8"
    new = write_pictures(tmp_path / "new", 2, seed=9)
    scored = run("score", model, *new, "--store", tmp_path / "fresh.h5", "--json")  # no flag: the bundle decides
    assert scored.exit_code == 0, scored.output
    rows = json.loads(scored.stdout)
    assert len(rows) == 2 and all(np.isfinite(r["score"]) for r in rows)


def test_score_names_skipped_files_with_verbose(tmp_path, featurizer):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(20, 2048)).astype(np.float32)
    head = OutputLayerHead().fit(X, X[:, 0] > 0)
    model = Bundle(head.pipeline_, head.threshold_, "head", "good", "ordinary", featurizer.fingerprint).save(tmp_path / "m.ssmodel")
    folder = tmp_path / "in"
    write_pictures(folder, 1)
    (folder / "notes.txt").write_text("x")
    quiet = run("score", model, folder, "--store", tmp_path / "s.h5")
    assert quiet.exit_code == 0 and "1 files skipped by the folder walk" in quiet.output, quiet.output
    verbose = run("score", model, folder, "--store", tmp_path / "s.h5", "--verbose")
    assert f"skipped: {folder / 'notes.txt'}: no image extension" in verbose.output
