"""The command line facing hostile or careless input: non-finite numbers, model info and upgrade, literal names."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from stylesift.classifiers.bundle import UPGRADE_COMMAND, Bundle
from stylesift.classifiers.head import OutputLayerHead
from stylesift.cli.main import app

runner = CliRunner()
FINGERPRINT = {"backbone": "test", "weights_sha256": "0" * 64, "feature_dim": 16, "dtype": "float32"}


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def bundle_file(tmp_path_factory):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 16)).astype(np.float32)
    model = OutputLayerHead().fit(X, X[:, 0] > 0)
    path = tmp_path_factory.mktemp("model") / "[bold red]m.ssmodel"
    return Bundle(model.pipeline_, model.threshold_, "head", "[red]good", "ordinary", FINGERPRINT,
                  summary={"positives": 20}).save(path)


@pytest.mark.parametrize("args", [
    ("score", "m.ssmodel", "x.jpg", "--threshold", "nan"),
    ("score", "m.ssmodel", "x.jpg", "--threshold", "inf"),
    ("score", "m.ssmodel", "x.jpg", "--threshold", "-inf"),
    ("score", "m.ssmodel", "x.jpg", "--top-fraction", "nan"),
    ("train", "--positive", "a", "--out", "m.ssmodel", "--target-recall", "nan"),
    ("compare", "--positive", "a", "--negative", "b", "--target-recall", "NaN"),
])
def test_non_finite_numbers_are_usage_errors(args):
    result = run(*args)
    assert result.exit_code == 2, result.output
    assert "--threshold" in result.output or "--top-fraction" in result.output or "--target-recall" in result.output


def test_model_info_shows_the_header_without_loading_and_keeps_brackets(bundle_file):
    result = run("model", "info", bundle_file)
    assert result.exit_code == 0, result.output
    assert str(bundle_file) in result.output and "'[red]good'" in result.output
    assert "checksum:      ok" in result.output and "outside the allow-list: none" in result.output
    data = json.loads(run("model", "info", bundle_file, "--json").stdout)
    assert data["header"]["method"] == "head" and data["checksum_ok"] and data["refused_types"] == []


def test_model_upgrade_needs_trust_pickle_and_converts(tmp_path, bundle_file):
    from helpers.bundles import write_legacy

    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 16)).astype(np.float32)
    y = X[:, 0] > 0
    model = OutputLayerHead().fit(X, y)
    old = tmp_path / "old.joblib"
    write_legacy(old, (model, X, y))
    refused = run("model", "info", old)
    assert refused.exit_code == 0 and UPGRADE_COMMAND in refused.output
    scored = run("score", old, tmp_path)
    assert scored.exit_code == 1 and UPGRADE_COMMAND in scored.output and str(old) in scored.output
    no_flag = run("model", "upgrade", old, tmp_path / "new.ssmodel")
    assert no_flag.exit_code == 2 and "--trust-pickle" in no_flag.output and not (tmp_path / "new.ssmodel").exists()
    done = run("model", "upgrade", old, tmp_path / "new.ssmodel", "--trust-pickle")
    assert done.exit_code == 0, done.output
    np.testing.assert_array_equal(Bundle.load(tmp_path / "new.ssmodel").score(X), model.score_samples(X))


@pytest.mark.parametrize("size", ["lots", "10", "-1G", "nan"])
def test_a_decode_memory_that_is_not_a_usable_size_is_a_usage_error(size):
    result = run("score", "m.ssmodel", "x.jpg", "--decode-memory", size)
    assert result.exit_code == 2 and "--decode-memory" in result.output, result.output


def test_sizes_parse_in_binary_units():
    from stylesift.featurizer.images import parse_bytes

    assert parse_bytes("1G") == parse_bytes("1GiB") == parse_bytes("1024M") == 2**30
    assert parse_bytes("1.5g") == 3 * 2**29 and parse_bytes("65536k") == 64 * 2**20 and parse_bytes("123") == 123


def test_the_console_never_reads_file_names_or_advice_as_markup(capsys):
    from stylesift.cli.app import err, fail

    err.print("kept in /x/[bold red]out")
    with err.status("training [bold]m"):
        pass
    fail("install the extra with `pip install 'stylesift[fast]'`")
    out = capsys.readouterr().err
    assert "/x/[bold red]out" in out and "`pip install 'stylesift[fast]'`" in out


def test_model_info_names_what_a_hostile_or_damaged_file_holds_and_runs_nothing(tmp_path, bundle_file):
    from helpers.bundles import Marker, payload_of, write

    marker = tmp_path / "ran"
    header, payload = payload_of(Bundle.load(bundle_file).pipeline, {"extra": Marker(marker)})
    hostile = write(tmp_path / "hostile.ssmodel", header, payload)
    result = run("model", "info", hostile)
    assert result.exit_code == 1 and f"outside the allow-list: {Marker.__module__}.Marker" in result.output
    assert not marker.exists()
    raw = bundle_file.read_bytes().split(b"\n", 2)
    damaged = tmp_path / "damaged.ssmodel"
    damaged.write_bytes(raw[0] + b"\n" + raw[1].replace(b'"threshold":', b'"threshold":"high","x":') + b"\n" + raw[2])
    result = run("model", "info", damaged)
    assert result.exit_code == 1 and f"{damaged}: bundle header field 'threshold'" in result.output


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_the_python_api_refuses_non_finite_thresholds_too(value):
    from stylesift.classifiers.selection import select

    with pytest.raises(ValueError, match="finite"):
        select(np.zeros(3), threshold=value)
    with pytest.raises(ValueError):
        select(np.zeros(3), top_fraction=value)


BYO = {"backbone": "bring-your-own (ONNX)", "file": "/models/net.onnx", "file_sha256": "a" * 64,
       "sidecar": {"input_size": 224}, "input_size": 224, "feature_dim": 16, "precision": "float32", "dtype": "float32"}


@pytest.mark.parametrize("edit, field", [
    (lambda h: h.update(fingerprint={k: v for k, v in BYO.items() if k != "file"}), "'fingerprint'"),
    (lambda h: h.update(fingerprint={**BYO, "file": 123}), "'fingerprint'"),
    (lambda h: h.update(fingerprint={k: v for k, v in BYO.items() if k != "input_size"}), "'fingerprint'"),
    (lambda h: h.update(fingerprint={**BYO, "sidecar": {"input_size": "big"}}), "'fingerprint'"),
    (lambda h: h.update(created=1e300), "'created'"),
    (lambda h: h.update(summary={"feature_set": "style", "feature_set_fingerprint": None}), "'summary'"),
])
def test_a_header_that_would_fail_later_is_refused_where_it_is_read(tmp_path, bundle_file, edit, field):
    from stylesift.featurizer.space import fingerprint_id

    magic, header, payload = bundle_file.read_bytes().split(b"\n", 2)
    header = json.loads(header)
    edit(header)
    header["fingerprint_id"] = fingerprint_id(header["fingerprint"])  # an editor keeps the id in step
    edited = tmp_path / "edited.ssmodel"
    edited.write_bytes(magic + b"\n" + json.dumps(header).encode() + b"\n" + payload)
    for args in (("model", "info", edited), ("score", edited, tmp_path / "x.jpg", "--store", tmp_path / "s.h5")):
        result = run(*args)
        assert result.exit_code == 1, (args, result.output)
        assert f"bundle header field {field}" in result.output and "Traceback" not in result.output
        assert isinstance(result.exception, SystemExit), result.exception
