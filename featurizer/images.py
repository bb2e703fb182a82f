"""Decode any image file Pillow can read into the network's input: RGB uint8, whole image, fixed size.

Geometry: the whole image is resized to ``size × size`` without cropping, so a tall screenshot still
looks like a squeezed tall screenshot rather than a crop of its middle. Files are untrusted input:
everything that goes wrong becomes an :class:`ImageError` naming the file and the reason, and the
work per file is bounded: at most ``MAX_FILE_BYTES`` are read, images of more than ``MAX_PIXELS``
are refused before their pixels are decoded, only the first frame of an animation or multi-page
file is decoded, and a decode still running after ``MAX_DECODE_SECONDS`` is abandoned (checked
each time the decoder asks for more input: every 64 KiB for JPEG, PNG, GIF...; WebP and TIFF
decoders take the whole file at once, so for them only the pixel limit bounds the time).

Memory: before any pixel is decoded, :func:`decode_bytes` works out from the header what the
decode will hold at its peak (the decoded image in Pillow's layout, the decoder's own buffer for
formats that decode into one first, and every copy the conversion to RGB makes), and the decode
reserves that many bytes from one process-wide :class:`DecodeBudget` shared by all decode threads
(default ``DEFAULT_DECODE_MEMORY``, set with :func:`set_decode_memory` / ``--decode-memory``). A
file needing more than the whole budget fails with that reason; others wait for room.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import threading
import time
import warnings
from contextlib import contextmanager, nullcontext
from pathlib import Path
from struct import error as struct_error

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from stylesift.errors import StylesiftError
from stylesift.featurizer.previews import centred_crop, fitted

# Extensions taken when walking a folder; a file named explicitly is always tried.
IMAGE_EXTENSIONS = frozenset(
    ".jpg .jpeg .jpe .jfif .png .gif .webp .bmp .dib .tif .tiff .ico .ppm .pgm .pbm .pnm .tga .svg .heic .avif".split()
)
RESAMPLE = Image.Resampling.BILINEAR  # antialiased in Pillow when shrinking
# Pillow allocates pixels in blocks of 16 MiB, a size glibc's malloc serves from its heaps once its
# adaptive mmap threshold has risen (up to 32 MiB): freed, they stay with the process, one heap per
# decode thread, and the peak grows past what the budget reserved. Blocks of 64 MiB are always
# mapped and always returned when the image is freed.
Image.core.set_block_size(max(Image.core.get_block_size(), 64 * 2**20))
ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file is a failure, not a grey half-image

# Bounds on the work one untrusted file may cause (see the README, "Which files are accepted").
MAX_FILE_BYTES = 256 * 2**20  # larger files are refused unread
MAX_PIXELS = 100_000_000  # 100 megapixels (a 10000 × 10000 image); decoding one costs ~0.3-0.5 GB
MAX_DECODE_SECONDS = 30.0
# Bytes all decodes of this process may hold at once: a 100-megapixel RGBA PNG (~0.8 GiB) fits, a
# 100-megapixel WebP (~1.6 GiB: libwebp keeps two canvases) needs --decode-memory 2G.
DEFAULT_DECODE_MEMORY = 1024 * 2**20


class ImageError(StylesiftError, ValueError):
    """A file that cannot be turned into network input; ``str()`` names the file and the reason.

    Part of the :class:`~stylesift.errors.StylesiftError` family (a user can fix the file) and still a
    ``ValueError``, as it always was.
    """

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
               max_pixels: int | None = None, max_seconds: float | None = None,
               budget: "DecodeBudget | None" = None, keep_draft: bool = False):
    """Decode ``source`` (a path or a binary file object) into an RGB array of shape ``(size, size, 3)``, dtype uint8.

    EXIF orientation is applied; palette, alpha (composited over white), CMYK, 16-bit and grayscale
    images become RGB; animations and multi-page files give their first frame. With ``draft`` JPEGs
    are decoded directly at a reduced scale (DCT scaling) that still covers ``size``, which is much
    faster for photos. ``name`` is the file name errors report (default: ``source`` itself).
    Images of more than ``max_pixels`` (default ``MAX_PIXELS``) are refused before decoding, and a
    decode still running after ``max_seconds`` (default ``MAX_DECODE_SECONDS``) is abandoned. The
    decode reserves :func:`decode_bytes` from ``budget`` (default: the process-wide one) first.
    With ``keep_draft``: ``(image, picture)``, also the oriented uint8 RGB picture it was resized from
    (``detail`` ranks tiles on it); it outlives the reservation, so ask only for a JPEG's small draft.
    """
    def resized(rgb):
        return np.asarray(rgb.resize((size, size), RESAMPLE), dtype=np.uint8)

    finish = (lambda rgb: (resized(rgb), np.asarray(rgb, dtype=np.uint8))) if keep_draft else resized
    return _decode(source, size, finish, draft=draft, name=name, max_pixels=max_pixels, max_seconds=max_seconds,
                   budget=budget)


def load_preview(source, size: int, *, sha256: str | None = None, name=None,
                 budget: "DecodeBudget | None" = None) -> Image.Image:
    """The image at ``source`` as an RGB picture fitted into ``size × size`` pixels (aspect kept), for people to see.

    The same bounded decoder as :func:`load_image` (the formats it accepts, the pixel limit, the time
    limit, the decode memory budget), so a thumbnail, a contact sheet or a perceptual hash costs no
    more memory than featurizing. With ``sha256`` the file's bytes must still be that content
    (ImageError otherwise): a page shows what was scored, never whatever was put at the path since.
    """
    source, name = _scored(source, sha256, name)
    return _decode(source, size, fitted(size), draft=True, name=name, budget=budget)


def load_crop(source, size: int = 512, *, sha256: str | None = None, name=None,
              budget: "DecodeBudget | None" = None) -> Image.Image:
    """The centre ``size × size`` pixels of the image at ``source`` at native resolution (never resized), as RGB.

    Taken after EXIF orientation; a side shorter than ``size`` is taken whole, so a small image
    gives all of itself. For people to judge noise, focus and compression at 1:1, so JPEGs are
    decoded at full scale (no draft mode); otherwise exactly :func:`load_preview`: the same bounded
    decoder, ``sha256`` check and decode memory budget, the full decode being what is reserved.
    """
    source, name = _scored(source, sha256, name)
    return _decode(source, size, centred_crop(size), draft=False, name=name, budget=budget)


def _scored(source, sha256: str | None, name):
    """``(source, name)`` to decode: with ``sha256``, the file's bytes once they are proven to be that content."""
    if sha256 is None or hasattr(source, "read"):
        return source, name
    try:
        data = read_image_bytes(Path(source))
    except OSError as exc:  # moved or deleted since scoring: the same error family as any unreadable file
        raise ImageError(source, f"cannot be read: {exc.strerror or exc}") from None
    if hashlib.sha256(data).hexdigest() != sha256:
        raise ImageError(source, "changed since it was scored (its content is not the scored one); not shown")
    return io.BytesIO(data), source if name is None else name


def _decode(source, size: int, finish, *, draft: bool, name, max_pixels: int | None = None,
            max_seconds: float | None = None, budget: "DecodeBudget | None" = None):
    """The one bounded decoder: ``finish`` gets the oriented RGB picture (covering ``size``) inside the reservation."""
    path = name if name is not None else source
    max_pixels = MAX_PIXELS if max_pixels is None else max_pixels
    max_seconds = MAX_DECODE_SECONDS if max_seconds is None else max_seconds
    opened = None
    try:
        if not hasattr(source, "read"):
            opened = source = io.BytesIO(read_image_bytes(Path(source)))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # EXIF/ICC chatter; real problems raise below
            guarded = _Deadline(source, time.monotonic() + max_seconds)
            budget = _BUDGET if budget is None else budget
            # libwebp allocates its canvases when the file is opened, so a WebP is measured from its
            # own header and reserved before Pillow sees it; every other format allocates in load().
            canvas = _webp_canvas(source)
            if canvas:  # before libwebp allocates anything
                _refuse_too_many(path, canvas[0], canvas[1], max_pixels)
            early = budget.reserve(_webp_bytes(*canvas, size=size), path) if canvas else nullcontext()
            with early, Image.open(guarded, formats=_formats()) as img:
                img.seek(0)
                width, height = img.size
                _refuse_too_many(path, width, height, max_pixels)
                coefficients = _jpeg_coefficient_bytes(img, source)  # at full size, so before draft()
                if draft and img.format == "JPEG":
                    img.draft("RGB", (size, size))
                with budget.reserve(0 if canvas else decode_bytes(img, size) + coefficients, path):
                    guarded.restart(max_seconds)  # time spent waiting for memory is not decoding time
                    img.load()
                    img = _apply_orientation(img)
                    rgb = to_rgb(img)
                    del img
                    return finish(rgb)
    except ImageError:
        raise
    except _TooSlow:
        raise too_slow(path, max_seconds) from None
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


def _refuse_too_many(path, width: int, height: int, max_pixels: int) -> None:
    """Raise :class:`ImageError` when a header announces more than ``max_pixels``: checked before any decode."""
    if width * height > max_pixels:
        raise ImageError(path, f"{width}×{height} pixels is more than the limit of {max_pixels:,} "
                         "(refused unread, as a possible decompression bomb); scale it down first")


class _TooSlow(Exception):
    """Raised from inside a decoder's read loop (Pillow's, libvips') once a decode has used up its time."""


def too_slow(path, max_seconds: float) -> ImageError:
    """The one error for a decode abandoned at its time limit (Pillow here, libvips in the detail tiles)."""
    return ImageError(path, f"decoding took longer than {max_seconds:g} s and was abandoned")


class _Deadline:
    """A binary file wrapper whose ``read`` fails once ``deadline`` (``time.monotonic()``) has passed.

    Pillow's decoders pull their input through ``read`` in blocks, so this bounds decode time
    without threads or processes (a single block of at most 64 KiB is never interrupted).
    """

    def __init__(self, fp, deadline: float):
        self._fp = fp
        self._deadline = deadline
        self.expired = False  # set once a read was refused, for decoders that swallow the exception

    def restart(self, seconds: float) -> None:
        self._deadline = time.monotonic() + seconds

    def read(self, n: int = -1) -> bytes:
        if time.monotonic() > self._deadline:
            self.expired = True
            raise _TooSlow
        return self._fp.read(n)

    def __getattr__(self, name):
        return getattr(self._fp, name)


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any Pillow mode to RGB; transparency is composited over white, high bit depths scaled to 8 bits.

    16-bit and 32-bit integer and float images are scaled by the range their values really use:
    the smallest of [0, 1], [0, 255] and [0, 65535] that holds them all (a float image in [0, 1]
    becomes 0-255 rather than black; 16-bit data above 255 is divided by 257), else their own
    minimum to maximum. NaN counts as 0, infinities as the ends of the range.
    """
    if img.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        img = Image.fromarray(_to_uint8(np.asarray(img)), "L")
    if img.mode in _ALPHA_MODES or (img.mode == "P" and "transparency" in img.info):
        return _over_white(img)
    return img if img.mode == "RGB" else img.convert("RGB")


def _to_uint8(array: np.ndarray) -> np.ndarray:
    """Integer or float pixels of any range → uint8, scaled by the range the values really use."""
    if array.dtype.kind in "ui":
        top = int(array.max(initial=0))
        low = int(array.min(initial=0))
        if low >= 0 and top <= 255:
            return array.astype(np.uint8)
        if low >= 0 and top <= 65535:
            return (array // 257).astype(np.uint8)  # 65535 → 255; exact, no float copy
        array = array.astype(np.float32)
    finite = np.isfinite(array)
    values = array[finite] if not finite.all() else array
    low = float(values.min()) if values.size else 0.0
    top = float(values.max()) if values.size else 0.0
    if low >= 0 and top <= 1:
        low, top = 0.0, 1.0
    elif low >= 0 and top <= 255:
        low, top = 0.0, 255.0
    elif low >= 0 and top <= 65535:
        low, top = 0.0, 65535.0
    scale = 255.0 / (top - low) if top > low else 0.0
    out = np.nan_to_num(array, nan=low, posinf=top, neginf=low)
    out -= low
    out *= scale
    np.clip(out, 0, 255, out=out)
    return out.astype(np.uint8)


# Rows converted at a time: an image with transparency is never copied whole, only one band of it.
_BAND_ROWS = 256
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")


def _over_white(img: Image.Image) -> Image.Image:
    """An image with transparency composited over white, as RGB, band by band (no full-size RGBA copies)."""
    width, height = img.size
    out = Image.new("RGB", img.size)
    for top in range(0, height, _BAND_ROWS):
        band = img.crop((0, top, width, min(height, top + _BAND_ROWS)))
        band = band if band.mode == "RGBA" else band.convert("RGBA")
        white = Image.new("RGBA", band.size, (255, 255, 255, 255))
        out.paste(Image.alpha_composite(white, band).convert("RGB"), (0, top))
    return out


# Bytes per pixel of Pillow's in-memory layout (three- and two-band modes are stored in four bytes).
_PIXEL_BYTES = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16L": 2, "I;16B": 2, "I;16N": 2, "I": 4, "F": 4}
# Formats whose decoder fills a buffer of the whole image before copying it into the image.
_WHOLE_BUFFER_FORMATS = {"WEBP", "TIFF", "AVIF", "HEIF", "JPEG2000", "PSD", "DDS", "ICNS", "ICO", "MPO"}


def decode_bytes(img: Image.Image, size: int = 224) -> int:
    """Peak bytes that decoding ``img`` (opened, not loaded; JPEG draft already applied) and
    converting it to a ``size × size`` RGB array will hold: an upper bound from the header alone.
    """
    width, height = img.size
    pixels = width * height
    decoded = pixels * _PIXEL_BYTES.get(img.mode, 4)
    need = decoded
    if img.format == "WEBP":
        return _webp_bytes(width, height, img.mode != "RGB", size)
    if img.format in ("AVIF", "HEIF"):
        need += pixels * 12  # the decoder's YUV planes (up to 16-bit 4:4:4 with alpha) and the frame it hands over
    elif img.format in _WHOLE_BUFFER_FORMATS or img.format not in {"JPEG", "PNG", "GIF", "BMP", "PPM", "TGA"}:
        need += decoded  # the decoder's own buffer of the whole image
    rotated = _rotated(img)
    if rotated:
        need += decoded  # exif_transpose makes a rotated copy
    rgb = pixels * 4  # the RGB image (four bytes a pixel in Pillow)
    if img.mode in _PIXEL_BYTES and img.mode not in ("1", "L", "P"):
        # the larger of two stages (see _to_uint8): the numpy copy with its temporaries and 8-bit
        # result (16-bit stays integer), then the 8-bit image with its RGB conversion
        need += max(pixels * (5 if img.mode.startswith("I;16") else 14), pixels + rgb)
    elif img.mode != "RGB" or rotated:
        need += rgb  # converted (band by band when it has transparency) or rotated
    # resizing: one intermediate pass of size × height (or width × size) plus the small result
    need += max(width, height) * size * 4 + size * size * 4 + _BAND_ROWS * width * 12
    return need * 103 // 100 + 16 * 2**20  # decoder state, tables, headers, allocator rounding


def _webp_bytes(width: int, height: int, alpha: bool = True, size: int = 224) -> int:
    """Peak bytes of decoding a WebP of this canvas: libwebp's two RGBA canvases (current and
    previous frame), the frame copy handed to Pillow, the image, with alpha its RGB conversion, resizing."""
    pixels = width * height
    return ((5 if alpha else 4) * pixels * 4 + max(width, height) * size * 4 + size * size * 4
            + _BAND_ROWS * width * 12 + 16 * 2**20)


def _webp_canvas(source) -> tuple[int, int, bool] | None:
    """``(width, height, alpha)`` from a WebP file's first chunk (VP8X, VP8L or VP8), or None if not a WebP."""
    try:
        at = source.tell()
        head = source.read(30)
        source.seek(at)
    except (OSError, AttributeError, ValueError):
        return None
    if len(head) < 30 or head[:4] != b"RIFF" or head[8:12] != b"WEBP":
        return None
    chunk = head[12:16]
    if chunk == b"VP8X":
        return (1 + int.from_bytes(head[24:27], "little"), 1 + int.from_bytes(head[27:30], "little"),
                bool(head[20] & 0x12))  # alpha or animation flag
    if chunk == b"VP8L" and head[20] == 0x2F:
        bits = int.from_bytes(head[21:25], "little")
        return 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF), bool(bits >> 28 & 1)
    if chunk == b"VP8 " and head[23:26] == b"\x9d\x01\x2a":
        return (int.from_bytes(head[26:28], "little") & 0x3FFF, int.from_bytes(head[28:30], "little") & 0x3FFF,
                False)
    return None


_SCAN = re.compile(rb"\xff\xda")  # start-of-scan marker (0xFF is byte-stuffed inside scan data)


def _jpeg_coefficient_bytes(img: Image.Image, source) -> int:
    """Bytes of DCT coefficients libjpeg buffers for the whole image: a progressive or multi-scan
    JPEG keeps every block's 64 coefficients (2 bytes each) at full size, even when draft mode
    decodes it at 1/8 scale; a single-scan baseline JPEG streams them (0)."""
    if img.format not in ("JPEG", "MPO") or not getattr(img, "layer", None):
        return 0
    if not (img.info.get("progressive") or img.info.get("progression")):
        try:
            with source.getbuffer() as view:  # no copy of the file's bytes
                scans = sum(1 for _, __ in zip(_SCAN.finditer(view), range(2)))
        except (AttributeError, BufferError, TypeError):
            scans = 2  # not an in-memory file: assume the worst
        if scans < 2:
            return 0
    width, height = img.size
    h_max = max(h for _, h, _, _ in img.layer) or 1
    v_max = max(v for _, _, v, _ in img.layer) or 1
    mcus = -(-width // (8 * h_max)) * -(-height // (8 * v_max))
    return mcus * sum(h * v for _, h, v, _ in img.layer) * 64 * 2


def _rotated(img: Image.Image) -> bool:
    """Whether the EXIF orientation asks for a rotated copy, read without decoding any pixels.

    (``getexif`` of a PNG or WebP would load the whole image first; their EXIF block, when it
    precedes the pixels as the specifications ask, is already in ``img.info``.)
    """
    try:
        if img.format in ("JPEG", "MPO", "TIFF"):
            exif = img.getexif()
        elif img.info.get("exif"):
            exif = Image.Exif()
            exif.load(img.info["exif"])
        else:
            return False
        return exif.get(0x0112, 1) not in (None, 1)
    except Exception:  # noqa: BLE001 - a broken EXIF block is ignored by the decode too
        return False


class DecodeBudget:
    """Bytes of decode memory shared by every thread of a process: reserve before decoding, release after.

    Parameters
    ----------
    total : int
        Bytes all decodes together may hold at once.
    """

    def __init__(self, total: int):
        self.total = int(total)
        self.used = 0
        self.peak = 0  # most bytes reserved at once, for tests and benchmarks
        self._cond = threading.Condition()

    @contextmanager
    def reserve(self, nbytes: int, path="image"):
        """Hold ``nbytes`` for the duration of the block, waiting for room; raises :class:`ImageError`
        at once when ``nbytes`` is more than the whole budget."""
        if nbytes > self.total:
            raise ImageError(path, f"decoding it needs about {_mib(nbytes)} of memory, more than the decode memory "
                             f"budget of {_mib(self.total)} (raise it with --decode-memory, or scale the image down)")
        with self._cond:
            while self.used + nbytes > self.total:
                self._cond.wait()
            self.used += nbytes
            self.peak = max(self.peak, self.used)
        try:
            yield
        finally:
            with self._cond:
                self.used -= nbytes
                self._cond.notify_all()


def _mib(nbytes: int) -> str:
    return f"{nbytes / 2**20:,.0f} MiB"


_BUDGET = DecodeBudget(DEFAULT_DECODE_MEMORY)


def set_decode_memory(nbytes: int) -> None:
    """Set the process-wide decode memory budget in bytes (``--decode-memory``); at least 64 MiB."""
    global _BUDGET
    if nbytes < 64 * 2**20:
        raise ValueError(f"a decode memory budget of {nbytes} bytes is below the 64 MiB minimum")
    _BUDGET = DecodeBudget(nbytes)


def decode_memory() -> DecodeBudget:
    """The process-wide decode memory budget."""
    return _BUDGET


def parse_bytes(text: str) -> int:
    """``"1.5G"``, ``"800M"``, ``"2GiB"``, ``"1073741824"`` → bytes (binary units); raises ValueError."""
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([kmgt]?)(?:i?b)?\s*", text.lower())
    if not match:
        raise ValueError(f"{text!r} is not a size; write e.g. 1536M or 2G")
    number, unit = float(match.group(1)), match.group(2)
    return int(number * 1024 ** " kmgt".index(unit or " "))


def _apply_orientation(img: Image.Image) -> Image.Image:
    # In place: without an orientation tag, exif_transpose would return a full copy of the image.
    try:
        ImageOps.exif_transpose(img, in_place=True)
    except Exception:  # noqa: BLE001 - a broken EXIF block must not cost a valid picture
        pass
    return img


# The raster formats decoded; every other Pillow plugin (EPS, which runs Ghostscript; WMF; FITS;
# the scientific stubs; rare legacy formats) is never given an untrusted file.
ACCEPTED_FORMATS = ("JPEG", "MPO", "PNG", "GIF", "WEBP", "AVIF", "HEIF", "TIFF", "BMP", "DIB", "ICO", "CUR", "PPM",
                    "TGA", "QOI")


def _formats() -> list[str]:
    Image.init()
    return [f for f in ACCEPTED_FORMATS if f in Image.OPEN]


def _other_format(source) -> str | None:
    """The format Pillow would read ``source`` as among the plugins not accepted (header parsing only)."""
    try:
        source.seek(0)
        others = [f for f in Image.OPEN if f not in ACCEPTED_FORMATS]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(source, formats=others) as img:
                return img.format
    except Exception:  # noqa: BLE001 - only a diagnosis: anything that fails means "unknown"
        return None


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
    other = _other_format(source) if hasattr(source, "seek") else None
    if other:
        return (f"{other} format, which stylesift does not decode (it decodes {', '.join(_formats())}); "
                "convert it to PNG or JPEG first")
    return "not an image format that Pillow recognises"


_SIGNATURES = ((b"\x89PNG\r\n\x1a\n", "PNG"), (b"\xff\xd8\xff", "JPEG"), (b"GIF8", "GIF"), (b"RIFF", "WebP"),
               (b"BM", "BMP"), (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"))


def perceptual_hash(path) -> int | None:
    """64-bit DCT hash of the image at ``path`` (grey 32x32, the 8x8 lowest frequencies above their median); None if unreadable.

    Near-duplicate grouping (:mod:`stylesift.classifiers.grouping`) compares these by Hamming distance.
    """
    from scipy.fft import dctn

    try:
        # Through the bounded decoder: a JPEG decodes at 1/8 scale (a few milliseconds), and a huge PNG
        # waits for room in the decode budget like any other decode.
        grey = np.asarray(load_preview(path, 64).convert("L").resize((32, 32), Image.Resampling.BILINEAR),
                          dtype=np.float32)
    except ImageError:  # a file moved or damaged since scoring: no hash, the features still group it
        return None
    low = dctn(grey, norm="ortho")[:8, :8].ravel()
    return int(np.packbits(low > np.median(low[1:])).view(">u8")[0])


def load_native(source, finish, *, name=None, budget: "DecodeBudget | None" = None):
    """``finish(uint8 (h, w, 3))`` of the whole oriented picture at full size, inside the bounded decoder.

    For the ``detail`` tiles (:mod:`stylesift.featurizer.tiles`) of formats other than a plain JPEG.
    """
    return _decode(source, 256, lambda rgb: finish(np.asarray(rgb, dtype=np.uint8)), draft=False, name=name,
                   budget=budget)


def jpeg_header(data: bytes, name) -> tuple[int, int, int, int] | None:
    """``(width, height, EXIF orientation, coefficient bytes)`` of a YCbCr JPEG's bytes, or None for anything else.

    Read from the header alone, with the decoder's bounds: a JPEG over the pixel limit raises
    :class:`ImageError` here, before any pixel is decoded.
    """
    try:
        source = io.BytesIO(data)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(source, formats=["JPEG"]) as img:
                if img.format != "JPEG" or img.mode != "RGB":
                    return None
                width, height = img.size
                _refuse_too_many(name, width, height, MAX_PIXELS)
                orientation = img.getexif().get(0x0112, 1) if _rotated(img) else 1
                return width, height, int(orientation), _jpeg_coefficient_bytes(img, source)
    except ImageError:
        raise
    except Exception:  # noqa: BLE001 - not a JPEG this path takes: the full decoder reports what is wrong
        return None
