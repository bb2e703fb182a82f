"""The demo's image set: real photos from installed packages, rendered snapshots, an honest held-back split."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from PIL import Image

from stylesift.review.demo_data import HELD_BACK_PHOTOS, available_photos, make_demo_set, render_snapshot


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return make_demo_set(tmp_path_factory.mktemp("demo"), n_train=10, n_new=4, seed=1, max_side=96)


def test_photos_ship_with_installed_packages():
    photos = available_photos()
    assert len(photos) >= 10 and set(HELD_BACK_PHOTOS) <= set(photos)
    for path in photos.values():
        with Image.open(path) as img:
            assert min(img.size) >= 256  # real photographs, not icons


def test_counts_layout_and_distinct_content(demo):
    assert len(demo.train_quality) == len(demo.train_ordinary) == 10
    assert len(demo.new_quality) == len(demo.new_ordinary) == 4 and len(demo.new_broken) == 1
    assert sorted(p.name for p in (demo.root / "new").iterdir()) == sorted(p.name for p in demo.new)
    files = demo.train_quality + demo.train_ordinary + demo.new_quality + demo.new_ordinary
    digests = {hashlib.sha256(p.read_bytes()).hexdigest() for p in files}
    assert len(digests) == len(files)  # every augmented crop and render is a distinct image
    for path in files:
        with Image.open(path) as img:
            img.load()
            assert img.mode == "RGB" and max(img.size) <= 96 * 4


def test_held_back_photos_never_train(demo):
    train_sources = {p.name.rsplit("_", 1)[0] for p in demo.train_quality}
    assert train_sources and not train_sources & set(HELD_BACK_PHOTOS)
    # Neither names nor file formats give the class away.
    assert all(p.stem.startswith("upload_") for p in demo.new)
    for files in (demo.train_quality, demo.train_ordinary):
        assert {p.suffix for p in files} == {".jpg", ".png"}


def test_broken_upload_cannot_be_decoded(demo):
    from stylesift.featurizer.images import ImageError, load_image

    with pytest.raises(ImageError, match="truncated|cannot decode"):
        load_image(demo.new_broken[0])


def test_same_seed_same_bytes(demo, tmp_path):
    again = make_demo_set(tmp_path, n_train=10, n_new=4, seed=1, max_side=96)
    for a, b in zip(demo.train_ordinary + demo.new, again.train_ordinary + again.new):
        assert a.name == b.name and a.read_bytes() == b.read_bytes()


def test_snapshots_are_flat_photos_are_not(demo):
    """What the demo's classes differ in: renders have few distinct colours, photos many."""

    def colours(path):
        with Image.open(path) as img:
            return len(np.unique(np.asarray(img.convert("RGB")).reshape(-1, 3), axis=0))

    rng = np.random.default_rng(0)
    # Lossless files only: JPEG noise adds colours to anything.
    flat = [colours(p) for p in demo.train_ordinary if p.suffix == ".png" and not p.name.startswith("ui_photo")]
    real = [colours(p) for p in demo.train_quality if p.suffix == ".png"]
    assert flat and real
    assert np.median(real) > 4 * np.median(flat)
    img, kind = render_snapshot(rng)
    assert kind != "ui_photo" and img.mode == "RGB"
