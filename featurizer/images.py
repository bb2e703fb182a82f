"""Decode any image file Pillow can read into the network's input: RGB uint8, whole image, fixed size.

Geometry: the whole image is resized to ``size × size`` without cropping, so a tall screenshot still
looks like a squeezed tall screenshot rather than a crop of its middle. Files are untrusted input:
everything that goes wrong becomes an :class:`ImageError` naming the file and the reason, and the
work per file is bounded: at most ``MAX_FILE_BYTES`` are read, images of more than ``MAX_PIXELS``
are refused before their pixels are decoded, only the first frame of an animation or multi-page
file is decoded, and a decode still running after ``MAX_DECODE_SECONDS`` is abandoned (checked
each time the decoder asks for more input: every 64 KiB for JPEG, PNG, GIF...; WebP and TIFF
decoders take the whole file at once, so for them only the pixel limit bounds the time).
"""

from __future__ import annotations

import io
import os
import time
import warnings
from pathlib import Path
from struct import error as struct_error

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

# Extensions taken when walking a folder; a file named explicitly is always tried.
IMAGE_EXTENSIONS = frozenset(
    ".jpg .jpeg .jpe .jfif .png .gif .webp .bmp .dib .tif .tiff .ico .ppm .pgm .pbm .pnm .tga .svg .heic .avif".split()
)
RESAMPLE = Image.Resampling.BILINEAR  # antialiased in Pillow when shrinking
ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file is a failure, not a grey half-image

# Bounds on the work one untrusted file may cause (see the README, "Which files are accepted").
MAX_FILE_BYTES = 256 * 2**20  # larger files are refused unread
MAX_PIXELS = 100_000_000  # 100 megapixels (a 10000 × 10000 image); decoding one costs ~0.3-0.5 GB
MAX_DECODE_SECONDS = 30.0


class ImageError(ValueError):
    """A file that cannot be turned into network input; ``str()`` names the file and the reason."""

    def __init__(self, path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


def read_image_bytes(path: Path, before: os.stat_result | None = None) -> bytes:
    """The bytes of the regular file ``path``, at most ``MAX_FILE_BYTES``; raises :class:`ImageError`.

    ``before`` is the ``os.stat`` taken before reading (taken here when None); a file whose size,
    modification time or identity differs after the read is refused as changing while being read,
    so that a row never describes bytes that were half old, half new. (The failure records the
    earlier size and mtime, so the next run tries the file again.)
    """
    before = before if before is not None else os.stat(path)
    if before.st_size > MAX_FILE_BYTES:
        raise ImageError(path, f"file of {before.st_size} bytes is larger than the {MAX_FILE_BYTES >> 20} MiB limit for one image")
    with open(path, "rb") as fh:
        data = fh.read(MAX_FILE_BYTES + 1)
        after = os.fstat(fh.fileno())
    if len(data) > MAX_FILE_BYTES:
        raise ImageError(path, f"file grew beyond the {MAX_FILE_BYTES >> 20} MiB limit for one image while being read")
    if (after.st_ino, after.st_size, after.st_mtime_ns) != (before.st_ino, before.st_size, before.st_mtime_ns) \
            or len(data) != after.st_size:
        raise ImageError(path, "file changed while being read (still being written?); it is tried again on the next run")
    return data


def load_image(source, size: int = 224, *, draft: bool = True, name=None,
               max_pixels: int | None = None, max_seconds: float | None = None) -> np.ndarray:
    """Decode ``source`` (a path or a binary file object) into an RGB array of shape ``(size, size, 3)``, dtype uint8.

    EXIF orientation is applied; palette, alpha (composited over white), CMYK, 16-bit and grayscale
    images become RGB; animations and multi-page files give their first frame. With ``draft`` JPEGs
    are decoded directly at a reduced scale (DCT scaling) that still covers ``size``, which is much
    faster for photos. ``name`` is the file name errors report (default: ``source`` itself).
    Images of more than ``max_pixels`` (default ``MAX_PIXELS``) are refused before decoding, and a
    decode still running after ``max_seconds`` (default ``MAX_DECODE_SECONDS``) is abandoned.
    """
    path = name if name is not None else source
    max_pixels = MAX_PIXELS if max_pixels is None else max_pixels
    max_seconds = MAX_DECODE_SECONDS if max_seconds is None else max_seconds
    opened = None
    try:
        if not hasattr(source, "read"):
            opened = source = io.BytesIO(read_image_bytes(Path(source)))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # EXIF/ICC chatter; real problems raise below
            with Image.open(_Deadline(source, time.monotonic() + max_seconds)) as img:
                img.seek(0)
                width, height = img.size
                if width * height > max_pixels:
                    raise ImageError(path, f"{width}×{height} pixels is more than the limit of {max_pixels:,} "
                                     "(refused unread, as a possible decompression bomb); scale it down first")
                if draft and img.format == "JPEG":
                    img.draft("RGB", (size, size))
                img.load()
                img = _apply_orientation(img)
                rgb = to_rgb(img)
                rgb = rgb.resize((size, size), RESAMPLE)
                return np.asarray(rgb, dtype=np.uint8)
    except ImageError:
        raise
    except _TooSlow:
        raise ImageError(path, f"decoding took longer than {max_seconds:g} s and was abandoned") from None
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
    except (ValueError, SyntaxError, IndexError, EOFError, MemoryError, TypeError, KeyError,
            ArithmeticError, struct_error) as exc:  # what Pillow's plugins raise on malformed data
        raise ImageError(path, f"cannot decode: {type(exc).__name__}: {exc}") from None
    finally:
        if opened is not None:
            opened.close()


class _TooSlow(Exception):
    """Raised from inside Pillow's read loop once a decode has used up its time."""


class _Deadline:
    """A binary file wrapper whose ``read`` fails once ``deadline`` (``time.monotonic()``) has passed.

    Pillow's decoders pull their input through ``read`` in blocks, so this bounds decode time
    without threads or processes (a single block of at most 64 KiB is never interrupted).
    """

    def __init__(self, fp, deadline: float):
        self._fp = fp
        self._deadline = deadline

    def read(self, n: int = -1) -> bytes:
        if time.monotonic() > self._deadline:
            raise _TooSlow
        return self._fp.read(n)

    def __getattr__(self, name):
        return getattr(self._fp, name)


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any Pillow mode to RGB; transparency is composited over white."""
    if img.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        # 16-bit (and 32-bit integer) data: scale to 8 bits instead of letting Pillow clip at 255.
        array = np.asarray(img, dtype=np.float32)  # exact for 16-bit values, half the memory of float64
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
    for magic, name in _SIGNATURES:
        if head.startswith(magic) and (name != "WebP" or head[8:12] == b"WEBP"):
            return f"starts like a {name} file but its header is damaged (corrupt or not really a {name})"
    return "not an image format that Pillow recognises"


_SIGNATURES = ((b"\x89PNG\r\n\x1a\n", "PNG"), (b"\xff\xd8\xff", "JPEG"), (b"GIF8", "GIF"), (b"RIFF", "WebP"),
               (b"BM", "BMP"), (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"))
