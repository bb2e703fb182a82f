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


# Exception classes that are not user errors: internal signals, each raised and caught inside
# stylesift and never let out (were one to escape, it is a bug and must keep its traceback).
NOT_USER_ERRORS = {
    "_TooSlow": "images: raised inside Pillow's read loop at the decode deadline; load_image turns it into an ImageError",
    "Stale": "store: a part changed under a reader; the reader reads the manifest again (or gives a StoreError)",
    "SourceUnavailable": "weights: one weight source failed; resolve tries the next and raises WeightsNotFound at the end",
}


def library_exception_classes() -> dict[str, type]:
    """Every exception class defined in a stylesift module, by qualified name (every module is imported;
    one whose optional extra is not installed is left out)."""
    from helpers.modules import import_all

    modules, _ = import_all()
    found = {}
    for name, module in modules.items():
        for obj in vars(module).values():
            if isinstance(obj, type) and issubclass(obj, BaseException) and obj.__module__ == name:
                found[f"{name}.{obj.__qualname__}"] = obj
    return found


def test_every_library_error_class_is_in_the_family():
    classes = library_exception_classes()
    names = {cls.__name__ for cls in classes.values()}
    # The walk really reached every layer (these live in core, featurizer, classifiers and review).
    assert {"StylesiftError", "MissingExtra", "ImageError", "StoreError", "FeatureSetError", "BundleError", "ReviewError",
            "LabelError", "WeightsNotFound"} <= names, sorted(names)
    assert set(NOT_USER_ERRORS) <= names, "an allow-listed class is gone: take it off NOT_USER_ERRORS"
    outside = [q for q, cls in classes.items() if not issubclass(cls, StylesiftError) and cls.__name__ not in NOT_USER_ERRORS]
    assert outside == [], "exception classes outside the StylesiftError family (subclass it, or say why not above)"
    for name in NOT_USER_ERRORS:
        (cls,) = [c for c in classes.values() if c.__name__ == name]
        assert not issubclass(cls, StylesiftError), name


def test_an_image_error_is_in_the_family_and_still_a_value_error():
    from stylesift.featurizer.images import ImageError

    exc = ImageError("/x/a.jpg", "not a picture")
    assert isinstance(exc, StylesiftError) and isinstance(exc, ValueError) and str(exc) == "/x/a.jpg: not a picture"


def test_message_with_brackets_is_printed_literally(tmp_path):
    name = tmp_path / "[bold red]store.h5"
    result = runner.invoke(app, ["info", str(name)])
    assert result.exit_code == 1 and "[bold red]store.h5" in result.output


def test_bench_without_images_or_subcommand_is_a_usage_error():
    result = runner.invoke(app, ["bench"])
    assert result.exit_code == 2 and "--images" in result.output
