"""Pictures written on the fly: smooth gradients with blobs, busy textures, and scikit-image photos."""

from __future__ import annotations

import numpy as np
from PIL import Image


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


def write_textures(folder, n: int, *, seed: int = 0, size=(96, 72)) -> list:
    """``n`` busy pictures (high-frequency stripes and noise): a style far from smooth gradients."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[0 : size[1], 0 : size[0]]
    paths = []
    for i in range(n):
        period = rng.uniform(2.5, 6)
        stripes = (np.sin((xx * rng.uniform(-1, 1) + yy) * 2 * np.pi / period) > 0)[..., None]
        img = np.where(stripes, rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)) + rng.normal(0, 40, (*xx.shape, 3))
        path = folder / f"tex_{i:03d}.jpg"
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(path, quality=92)
        paths.append(path)
    return paths


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
