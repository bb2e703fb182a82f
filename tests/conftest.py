"""Shared fixtures. The real ImageNet weights are resolved once per session (cached per user after that)."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest
from PIL import Image


@pytest.fixture(scope="session")
def weights():
    """Real ResNet50 ImageNet weights (the first run on a machine fetches and converts them)."""
    from stylesift.featurizer.weights import resolve

    return resolve()


@pytest.fixture(scope="session")
def featurizer(weights):
    """One Featurizer (and so one loaded network) for the whole session."""
    from stylesift.featurizer.extract import Featurizer

    return Featurizer(weights, batch_size=8, workers=2, runtime="keras")  # the reference runtime (has .backbone.model)


def write_pictures(folder, n: int, *, seed: int = 0, size=(96, 72)) -> list:
    """Write ``n`` distinct small JPEG pictures (smooth colour gradients with blobs); return their paths."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    yy, xx = np.mgrid[0 : size[1], 0 : size[0]]
    for i in range(n):
        base = rng.uniform(0, 255, 3)
        grad = rng.uniform(-2, 2, (2, 3))
        img = base + xx[..., None] * grad[0] + yy[..., None] * grad[1]
        cx, cy, r = rng.uniform(0, size[0]), rng.uniform(0, size[1]), rng.uniform(5, 25)
        img[(xx - cx) ** 2 + (yy - cy) ** 2 < r * r] = rng.uniform(0, 255, 3)
        path = folder / f"pic_{i:03d}.jpg"
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(path, quality=92)
        paths.append(path)
    return paths


@pytest.fixture
def pictures(tmp_path):
    return write_pictures(tmp_path / "pictures", 12)


@pytest.fixture
def make_pictures():
    """The :func:`write_pictures` function, for tests that need several folders of pictures."""
    return write_pictures


def skimage_photos(flip, crop) -> np.ndarray:
    """Eight uint8 224×224 RGB inputs from scikit-image photos: each flipped by ``flip`` (a PIL
    transpose) and cropped by ``crop(w, h) -> box``, so they differ from the int8 calibration set."""
    import skimage.data as data

    out = []
    for name in ("astronaut", "chelsea", "coffee", "rocket"):
        img = Image.fromarray(getattr(data, name)())
        w, h = img.size
        out.append(img.transpose(flip))
        out.append(img.crop(crop(w, h)))
    return np.stack([np.asarray(p.resize((224, 224), Image.Resampling.BILINEAR)) for p in out])
