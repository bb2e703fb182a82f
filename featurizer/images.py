"""Decode any image file Pillow can read into the network's input: RGB uint8, whole image, fixed size.

Geometry: the whole image is resized to ``size × size`` without cropping, so a tall screenshot still
looks like a squeezed tall screenshot rather than a crop of its middle. Files are untrusted input:
everything that goes wrong becomes an :class:`ImageError` naming the file and the reason.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

# Extensions taken when walking a folder; a file named explicitly is always tried.
IMAGE_EXTENSIONS = frozenset(
    ".jpg .jpeg .jpe .jfif .png .gif .webp .bmp .dib .tif .tiff .ico .ppm .pgm .pbm .pnm .tga .svg .heic .avif".split()
)
RESAMPLE = Image.Resampling.BILINEAR  # antialiased in Pillow when shrinking
ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file is a failure, not a grey half-image


class ImageError(ValueError):
    """A file that cannot be turned into network input; ``str()`` names the file and the reason."""

    def __init__(self, path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


def load_image(source, size: int = 224, *, draft: bool = True, name=None) -> np.ndarray:
    """Decode ``source`` (a path or a binary file object) into an RGB array of shape ``(size, size, 3)``, dtype uint8.

    EXIF orientation is applied; palette, alpha (composited over white), CMYK, 16-bit and grayscale
    images become RGB; animations give their first frame. With ``draft`` JPEGs are decoded directly
    at a reduced scale (DCT scaling) that still covers ``size``, which is much faster for photos.
    ``name`` is the file name errors report (default: ``source`` itself).
    """
    path = name if name is not None else source
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # EXIF/ICC chatter; real problems raise below
            with Image.open(source) as img:
                img.seek(0)
                if draft and img.format == "JPEG":
                    img.draft("RGB", (size, size))
                img.load()
                img = _apply_orientation(img)
                rgb = to_rgb(img)
                rgb = rgb.resize((size, size), RESAMPLE)
                return np.asarray(rgb, dtype=np.uint8)
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError(path, _unidentified_reason(source)) from None
    except Image.DecompressionBombError as exc:
        raise ImageError(path, f"too many pixels, refused as a possible decompression bomb ({exc})") from None
    except FileNotFoundError:
        raise ImageError(path, "file not found (moved or deleted, or a broken symlink)") from None
    except IsADirectoryError:
        raise ImageError(path, "is a directory, not an image file") from None
    except PermissionError:
        raise ImageError(path, "permission denied") from None
    except OSError as exc:
        raise ImageError(path, f"cannot decode: {exc}") from None
    except (ValueError, SyntaxError, IndexError, EOFError, MemoryError) as exc:
        raise ImageError(path, f"cannot decode: {type(exc).__name__}: {exc}") from None


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any Pillow mode to RGB; transparency is composited over white."""
    if img.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        # 16-bit (and 32-bit integer) data: scale to 8 bits instead of letting Pillow clip at 255.
        array = np.asarray(img, dtype=np.float64)
        scale = 257.0 if array.max(initial=0) > 255 else 1.0
        img = Image.fromarray(np.clip(array / scale, 0, 255).astype(np.uint8), "L")
    elif img.mode == "F":
        img = Image.fromarray(np.clip(np.asarray(img), 0, 255).astype(np.uint8), "L")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img if img.mode == "RGB" else img.convert("RGB")


def _apply_orientation(img: Image.Image) -> Image.Image:
    try:
        return ImageOps.exif_transpose(img)
    except Exception:  # noqa: BLE001 - a broken EXIF block must not cost a valid picture
        return img


def _unidentified_reason(source) -> str:
    try:
        if hasattr(source, "read"):
            source.seek(0)
            head = source.read(512)
        else:
            with open(source, "rb") as fh:
                head = fh.read(512)
    except OSError:
        head = b""
    if not head:
        return "empty file (0 bytes)"
    lowered = head.lstrip().lower()
    if lowered.startswith((b"<svg", b"<?xml")) and b"<svg" in head.lower():
        return "SVG is a vector drawing, not a raster image; render it to PNG first"
    if lowered.startswith((b"<!doctype html", b"<html")):
        return "an HTML page, not an image (a failed download saved under an image name?)"
    return "not an image format that Pillow recognises"
