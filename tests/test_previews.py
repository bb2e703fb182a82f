"""Thumbnails, contact sheets and perceptual hashes go through the bounded decoder (hostile review, #23)."""

from __future__ import annotations

import base64
import hashlib
import io

import pytest
from PIL import Image

from stylesift.featurizer import images
from stylesift.featurizer.images import DecodeBudget, ImageError, load_preview, perceptual_hash
from stylesift.review.report import thumbnail_data_uri


@pytest.fixture()
def small_budget(monkeypatch):
    budget = DecodeBudget(64 * 2**20)
    monkeypatch.setattr(images, "_BUDGET", budget)
    return budget


@pytest.fixture()
def huge_png(tmp_path):
    path = tmp_path / "huge.png"
    Image.new("RGBA", (4000, 4000), (10, 200, 30, 255)).save(path)  # ~80 KB on disk, 64 MB decoded
    return path


def test_a_preview_bigger_than_the_whole_budget_is_refused_like_extract_refuses_it(huge_png, small_budget):
    with pytest.raises(ImageError, match="budget"):
        thumbnail_data_uri(huge_png, 120)
    assert perceptual_hash(huge_png) is None
    assert small_budget.peak == 0 and small_budget.used == 0


def test_a_preview_within_the_budget_reserves_it_and_gives_it_back(tmp_path, small_budget):
    path = tmp_path / "wide.png"
    Image.new("RGB", (600, 300), (200, 10, 10)).save(path)
    data = base64.b64decode(thumbnail_data_uri(path, 120).split(",", 1)[1])
    with Image.open(io.BytesIO(data)) as thumb:
        assert thumb.size == (120, 60)
    assert perceptual_hash(path) is not None
    assert small_budget.peak > 0 and small_budget.used == 0


def test_only_the_formats_extract_accepts_are_shown(tmp_path):
    path = tmp_path / "a.jpg"
    Image.new("RGB", (64, 64), (1, 2, 3)).save(path, format="PCX")  # a PCX put where a JPEG was
    with pytest.raises(ImageError):
        thumbnail_data_uri(path, 120)


def test_with_its_sha256_a_preview_shows_the_scored_content_or_nothing(tmp_path):
    path = tmp_path / "a.jpg"
    Image.new("RGB", (64, 64), (1, 2, 3)).save(path)
    scored = hashlib.sha256(path.read_bytes()).hexdigest()
    assert load_preview(path, 32, sha256=scored).size == (32, 32)
    Image.new("RGB", (64, 64), (250, 2, 3)).save(path)  # replaced after scoring
    with pytest.raises(ImageError, match="changed since it was scored"):
        thumbnail_data_uri(path, 32, sha256=scored)
