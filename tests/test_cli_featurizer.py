"""The `stylesift weights / extract / info` commands, end to end in-process."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from stylesift.cli.main import app

pytestmark = pytest.mark.weights
runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_weights_check_proves_imagenet(weights):
    result = run("weights", "--check", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["fingerprint"] == weights.fingerprint
    assert data["check"]["chelsea"]["ok"] and data["check"]["coffee"]["ok"]
    assert data["check"]["coffee"]["top3"][0][0] == "espresso"


def test_extract_json_then_info(tmp_path, pictures, weights):
    store = tmp_path / "cli.h5"
    result = run("extract", pictures[0].parent, "--store", store, "--label", "good", "--json", "--batch-size", "4")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["new"] == len(pictures) and data["cached"] == 0 and data["failed"] == [] and data["rows"] == len(pictures)
    again = json.loads(run("extract", pictures[0].parent, "--store", store, "--json").stdout)
    assert again["new"] == 0 and again["cached"] == len(pictures)
    info = run("info", store, "--json")
    assert info.exit_code == 0
    meta = json.loads(info.stdout)
    assert meta["rows"] == len(pictures) and meta["feature_dim"] == 2048 and meta["labels"] == {"good": len(pictures)}
    assert meta["fingerprint"]["weights_sha256"] == weights.fingerprint
    human = run("info", store)
    assert "good: 12" in human.stdout


def test_extract_exit_code_3_names_failed_files(tmp_path, pictures):
    bad = tmp_path / "empty.jpg"
    bad.write_bytes(b"")
    result = run("extract", bad, pictures[0], "--store", tmp_path / "s.h5", "--json")
    assert result.exit_code == 3
    data = json.loads(result.stdout)
    assert data["new"] == 1 and data["failed"][0]["path"] == str(bad)
    assert "empty file" in data["failed"][0]["error"]


def test_info_on_a_missing_store_is_a_clear_error(tmp_path):
    result = run("info", tmp_path / "nope.h5")
    assert result.exit_code == 1
    assert "no such feature store" in result.output and "stylesift extract" in result.output
