"""Is this upload a re-encoded, resized or cropped copy of that image? Pixel alignment of two small grey thumbnails.

Pooled features say two pictures show the same kind of thing; they cannot say it is the same
picture: a crop keeping 70 % of the area or a hard recompression of a small image moves the cosine
as far as another photo of the same scene does (``benchmarks/reposts.py``). A copy, though, is the
same pixels under a known family of changes: a crop (a window of the original), a uniform resize
and lossy coding. So the test is an alignment: the query's grey thumbnail, resized to every width a
crop keeping at least :data:`MIN_SIDE` of each side could have in the judged image's thumbnail, slid
over every position, and the best normalised cross-correlation (NCC) kept. A copy aligns almost
exactly (NCC near 1 after blurring away the coding noise); a different photo of the same kind does
not, since its edges fall elsewhere.

Thumbnails are :data:`THUMB` pixels on the longer side, grey uint8 (≤ 9 KiB an image), decoded by
the bounded decoder (:func:`~stylesift.featurizer.images.load_preview`: JPEGs at reduced DCT scale).
Rotations, mirror images, borders added around the picture and overlays are not searched.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageFilter
from scipy.signal import fftconvolve

__all__ = ["THUMB", "MIN_SIDE", "MATCH_THRESHOLD", "thumbnail", "thumbnail_of", "alignment"]

THUMB = 96  # longer side of the thumbnails compared: small enough for ~1 ms per scale, large enough for edges
MIN_SIDE = 0.68  # a crop keeping ≥ 70 % of the area keeps ≥ 70 % of each side (rounding: a little less)
MATCH_THRESHOLD = 0.96  # NCC at which two thumbnails are one picture (benchmarks/reposts.py: copies ≥ 0.93, p5 0.965; other photos ≤ 0.94 on food, a few 0.96–0.97 among 64-px screenshots)
BLUR = 0.8  # Gaussian radius (px) before comparing: coding noise and sub-pixel misalignment matter less


def thumbnail(image: Image.Image) -> np.ndarray:
    """Grey uint8 thumbnail ``(h, w)`` of a decoded picture, longer side at most :data:`THUMB` (aspect kept)."""
    grey = image.convert("L")
    scale = THUMB / max(grey.size)
    if scale < 1:
        grey = grey.resize((max(1, round(grey.width * scale)), max(1, round(grey.height * scale))),
                           Image.Resampling.BILINEAR)
    return np.asarray(grey, dtype=np.uint8)


def thumbnail_of(source, *, sha256: str | None = None) -> np.ndarray | None:
    """:func:`thumbnail` of the image at ``source``, or None when it cannot be read (gone, damaged, changed).

    With ``sha256`` the file must still hold that content (a judged row's file replaced since is no
    evidence about the judged picture).
    """
    from stylesift.featurizer.images import ImageError, load_preview

    try:
        # Decoded at twice the size so the final resize averages (a JPEG draft decode is blocky at 1:8).
        return thumbnail(load_preview(source, 2 * THUMB, sha256=sha256))
    except (ImageError, OSError):
        return None


def _prepared(grey: np.ndarray) -> Image.Image:
    return Image.fromarray(grey).filter(ImageFilter.GaussianBlur(BLUR))


def _ncc_map(image: np.ndarray, template: np.ndarray) -> np.ndarray:
    """NCC of ``template`` ``(th, tw)`` at every position inside ``image`` ``(H, W)``: ``(H-th+1, W-tw+1)``."""
    th, tw = template.shape
    t = template - template.mean()
    t_norm = math.sqrt(float((t * t).sum()))
    if t_norm < 1e-6:  # a flat template says nothing about where it is
        return np.zeros((image.shape[0] - th + 1, image.shape[1] - tw + 1), np.float64)
    num = fftconvolve(image, t[::-1, ::-1], mode="valid")
    # window sums of the image and of its square by integral images: the local mean and energy
    c1 = np.pad(image, ((1, 0), (1, 0))).cumsum(0).cumsum(1)
    c2 = np.pad(image * image, ((1, 0), (1, 0))).cumsum(0).cumsum(1)

    def window(c):
        return c[th:, tw:] - c[:-th, tw:] - c[th:, :-tw] + c[:-th, :-tw]

    n = th * tw
    s1, s2 = window(c1), window(c2)
    var = np.maximum(s2 - s1 * s1 / n, 0.0)
    den = np.sqrt(var) * t_norm
    return np.divide(num, den, out=np.zeros_like(num), where=den > 1e-6 * t_norm * math.sqrt(n))


def alignment(query: np.ndarray, judged: np.ndarray, *, min_side: float = MIN_SIDE) -> float:
    """Best NCC of ``query`` placed inside ``judged`` as a resized crop keeping ≥ ``min_side`` of each side.

    Parameters
    ----------
    query, judged : ndarray
        Grey uint8 thumbnails ``(h, w)`` (:func:`thumbnail`).

    Returns
    -------
    float
        In [-1, 1]; near 1 when ``query`` is a crop, resize or recompression of ``judged``; 0 when no
        allowed placement exists (e.g. aspect ratios no crop could give).
    """
    H, W = judged.shape
    qh, qw = query.shape
    if min(H, W, qh, qw) < 8:
        return 0.0
    image = np.asarray(_prepared(judged), np.float64)
    q = _prepared(query)
    best = 0.0
    # The query's aspect is the crop's; only its scale in the judged thumbnail is unknown: one width per pixel.
    for tw in range(max(8, math.ceil(min_side * W)), W + 1):
        th = round(tw * qh / qw)
        if th > H or th < min_side * H or th < 8:
            continue
        t = np.asarray(q.resize((tw, th), Image.Resampling.BILINEAR), np.float64)
        m = _ncc_map(image, t)
        if m.size:
            best = max(best, float(m.max()))
    return best
