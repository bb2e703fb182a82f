"""The CLI's one error boundary: user-fixable errors print one line and exit 1; bugs keep their traceback."""

from __future__ import annotations

from typer.testing import CliRunner

from stylesift.cli.main import app
from stylesift.errors import StylesiftError

runner = CliRunner()


def test_user_error_is_one_line_and_exit_1(tmp_path):
    result = runner.invoke(app, ["info", str(tmp_path / "missing.h5")])
    assert result.exit_code == 1
    assert "error:" in result.output and "missing.h5" in result.output
    assert "Traceback" not in result.output and isinstance(result.exception, SystemExit)


def test_bug_is_not_disguised_as_user_error(tmp_path, monkeypatch):
    import stylesift.featurizer.store as store

    def broken(*args, **kwargs):
        raise ZeroDivisionError("a real bug")

    monkeypatch.setattr(store, "FeatureStore", broken)
    result = runner.invoke(app, ["info", str(tmp_path / "s.h5")])
    assert isinstance(result.exception, ZeroDivisionError)
    assert "error:" not in result.output


def test_every_library_error_class_is_in_the_family():
    from stylesift.classifiers.bundle import BundleError
    from stylesift.classifiers.train import TrainingError
    from stylesift.featurizer.fast_backbone import FastBackboneUnavailable
    from stylesift.featurizer.ray_engine import RayEngineError
    from stylesift.featurizer.store import FeatureSpaceMismatch, StoreError
    from stylesift.featurizer.weights import WeightsNotFound

    for cls in (BundleError, TrainingError, FastBackboneUnavailable, RayEngineError, FeatureSpaceMismatch, StoreError,
                WeightsNotFound):
        assert issubclass(cls, StylesiftError), cls


def test_message_with_brackets_is_printed_literally(tmp_path):
    name = tmp_path / "[bold red]store.h5"
    result = runner.invoke(app, ["info", str(name)])
    assert result.exit_code == 1 and "[bold red]store.h5" in result.output


def test_bench_without_images_or_subcommand_is_a_usage_error():
    result = runner.invoke(app, ["bench"])
    assert result.exit_code == 2 and "--images" in result.output
