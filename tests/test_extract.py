"""Extraction into the store with the real network: rows, caching, labels, duplicates, failures, agreement."""

from __future__ import annotations

import os
import shutil

import h5py
import numpy as np
import pytest
from PIL import Image

from stylesift.featurizer.backbones import preprocess
from stylesift.featurizer.extract import list_images
from stylesift.featurizer.store import FeatureSpaceMismatch, FeatureStore

pytestmark = pytest.mark.weights


def reference_features(featurizer, paths):
    """The plain pipeline: Pillow full decode, resize to 224×224, preprocess_input, same network."""
    batch = []
    for p in paths:
        with Image.open(p) as img:
            batch.append(np.asarray(img.convert("RGB").resize((224, 224), Image.Resampling.BILINEAR)))
    return np.asarray(featurizer.backbone.model.predict_on_batch(preprocess(np.stack(batch))))


def cosine(a, b):
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_extract_stores_one_row_per_image_and_reruns_featurize_nothing(tmp_path, featurizer, pictures):
    store = tmp_path / "s.h5"
    report = featurizer.extract(pictures[:10], store, label="good")
    assert (report.new, report.cached, report.failed, report.rows) == (10, 0, [], 10)
    with h5py.File(store) as f:  # plain h5py reads it
        assert f["features"].shape == (10, 2048) and f["features"].dtype == np.float32
        assert np.all(np.abs(f["features"][:]).sum(axis=1) > 0)
    assert set(FeatureStore(store).labels) == {"good"}  # (labels live in the store's parts folder)
    again = featurizer.extract([pictures[0].parent], store, label="ordinary")
    assert (again.new, again.cached, again.rows) == (2, 10, 12)
    with FeatureStore(store) as st:
        assert st.label_counts() == {"ordinary": 12}  # relabelled without re-extraction


def test_features_match_the_plain_reference_pipeline(tmp_path, featurizer, make_pictures):
    # Large JPEGs take the draft (DCT-scaled) decode path; small ones the plain path.
    small = make_pictures(tmp_path / "small", 4, seed=3)
    large = make_pictures(tmp_path / "large", 4, seed=4, size=(1800, 1200))
    store = tmp_path / "s.h5"
    featurizer.extract(small + large, store)
    with FeatureStore(store) as st:
        rows = [st.row_of(featurizer_sha(p)) for p in small + large]
        ours = st.features(rows)
    sims = cosine(ours, reference_features(featurizer, small + large))
    assert sims.min() >= 0.99, sims


def featurizer_sha(path):
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_same_bytes_under_two_names_is_one_row_with_both_paths(tmp_path, featurizer, pictures):
    twin = pictures[0].parent / "twin copy ü.jpg"
    shutil.copy(pictures[0], twin)
    store = tmp_path / "s.h5"
    report = featurizer.extract([pictures[0], twin, pictures[1]], store)
    assert report.new == 2 and report.rows == 2
    with FeatureStore(store) as st:
        row = st.row_of(featurizer_sha(twin))
        assert sorted(st.paths(row)) == sorted([str(pictures[0]), str(twin)])


def test_failures_are_recorded_and_retried_only_when_the_file_changes(tmp_path, featurizer, pictures):
    bad = pictures[0].parent / "broken.jpg"
    bad.write_bytes(b"<html>404 not found</html>")
    store = tmp_path / "s.h5"
    first = featurizer.extract([bad, pictures[0]], store)
    assert first.new == 1 and len(first.failed) == 1
    assert "broken.jpg" in first.failed[0]["error"] and "HTML" in first.failed[0]["error"]
    second = featurizer.extract([bad, pictures[0]], store)
    assert second.unchanged_failures == 1 and second.failed[0]["retried"] is False
    shutil.copy(pictures[1], bad)  # the file is fixed
    os.utime(bad, (1, 1))
    third = featurizer.extract([bad], store)
    assert third.new == 1 and third.failed == []
    with FeatureStore(store) as st:
        assert st.failures == [] and len(st) == 2


def test_a_store_of_another_feature_space_is_refused(tmp_path, featurizer, pictures):
    store = tmp_path / "s.h5"
    featurizer.extract(pictures[:2], store)
    other = dict(featurizer.fingerprint, weights_sha256="0" * 64)
    with pytest.raises(FeatureSpaceMismatch, match="another feature space"):
        FeatureStore(store, "a", fingerprint=other)


def test_list_images_walks_folders_for_images_but_keeps_named_files(tmp_path, pictures):
    folder = pictures[0].parent
    (folder / "notes.txt").write_text("not an image")
    (folder / "sub").mkdir()
    shutil.copy(pictures[0], folder / "sub" / "deep.PNG")
    found = list_images([folder, folder / "notes.txt"])
    names = [p.name for p in found]
    assert "deep.PNG" in names and names.count("notes.txt") == 1 and len(found) == len(pictures) + 2
    assert all(p.is_absolute() for p in found)
