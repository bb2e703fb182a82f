"""Where the ``detail`` set looks, and how those pixels are decoded: tiles at the image's own resolution.

Placement: a :data:`GRID` × :data:`GRID` grid of :data:`TILE` × :data:`TILE` tiles whose centres
are at 1/4, 1/2 and 3/4 of each side, so the middle, where the subject usually is, and the
background are both seen, and a JPEG is decoded only to 77 % of its rows (85 % with centres at
1/6..5/6, version 1; entropy decoding cannot skip rows, so rows are most of the decode's cost). Where the picture is smaller than the grid, tiles
overlap; a side shorter than one tile is padded by mirroring the picture (measured: see
docs/choosing-features.md; mirroring keeps the noise and sharpness statistics, a constant border
would add an edge). Texture-aware placement (the flattest or the busiest tiles of a finer grid) was
measured too and lost to the plain grid (same page).

Decoding: a JPEG is decoded by libvips (pyvips with its bundled library) reading scanlines in
order and keeping only the tile rows, never the whole frame: for a 12-megapixel photo about 28 ms
and a few megabytes instead of Pillow's 110 ms and 36 MB. EXIF orientation is applied to each tile
(the grid is the same in either orientation, only its order changes, and tiles are averaged).
Other formats go through the project's one bounded decoder (:func:`stylesift.featurizer.images.load_native`)
at full size. Both reserve their memory from the same process-wide decode budget.
"""

from __future__ import annotations

import io
import time

import numpy as np

from stylesift.featurizer import images

TILE = 112
GRID = 3
TILES = GRID * GRID
CALIBRATION = "skimage-v1 native-resolution tiles, plain and with added noise (detail-v2)"

_ORIENT = {  # EXIF orientation → the transform that shows a stored tile upright (as Pillow's exif_transpose)
    2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
    5: lambda a: a.transpose(1, 0, 2), 6: lambda a: np.rot90(a, -1), 7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),
    8: lambda a: np.rot90(a, 1),
}


def recipe() -> dict:
    """What decides the tiles' pixels; part of the ``detail`` fingerprint."""
    return {"tile": TILE, "grid": f"{GRID}x{GRID}, centres at (i + 1)/{GRID + 1} of each side, clamped inside",
            "small": "a side shorter than a tile is mirror-padded", "orientation": "EXIF, per tile",
            # No library version: libvips and Pillow both decode with libjpeg-turbo and give the same pixels
            # (tested), so upgrading either must not turn a store's detail rows into another space.
            "decoder": "full resolution; JPEG: libvips jpegload, sequential, tile rows only; other formats: Pillow"}


def starts(length: int) -> list[int]:
    """Top (or left) coordinates of the grid's tiles along a side of ``length`` pixels."""
    return [min(max(round((i + 1) * length / (GRID + 1) - TILE / 2), 0), max(length - TILE, 0)) for i in range(GRID)]


def cut(picture: np.ndarray) -> np.ndarray:
    """The grid's tiles of an upright uint8 RGB ``(h, w, 3)`` picture → ``(TILES, TILE, TILE, 3)``."""
    h, w = picture.shape[:2]
    if h < TILE or w < TILE:
        picture = np.pad(picture, ((0, max(TILE - h, 0)), (0, max(TILE - w, 0)), (0, 0)), mode="symmetric")
    return np.stack([picture[y:y + TILE, x:x + TILE] for y in starts(h) for x in starts(w)])


def load_tiles(data: bytes, name, budget: "images.DecodeBudget | None" = None) -> np.ndarray:
    """The ``detail`` tiles of an image file's bytes: uint8 ``(TILES, TILE, TILE, 3)``; raises ``ImageError``.

    The decode reserves its memory from ``budget`` (default: the process-wide one).
    """
    header = images.jpeg_header(data, name)
    if header is None:
        return images.load_native(io.BytesIO(data), cut, name=name, budget=budget)
    width, height, orientation, coefficients = header
    return _vips_tiles(data, name, width, height, orientation, coefficients, budget)


def _vips_tiles(data: bytes, name, width: int, height: int, orientation: int, coefficients: int,
                budget: "images.DecodeBudget | None" = None) -> np.ndarray:
    pyvips = _pyvips()
    ys, xs = starts(height), starts(width)
    box_w = min(width, xs[-1] + TILE) - xs[0]
    bands = _bands(ys, height)
    # Only the bands of tile rows are kept, streamed in order (libvips refuses out-of-order reads of a
    # sequential JPEG): rows between them are decoded and dropped, rows below the last are never decoded.
    need = sum(h for _, h in bands) * box_w * 3 + width * 3 * 4 * 256 + coefficients + 16 * 2**20
    with (budget or images.decode_memory()).reserve(need, name):
        # The same time bound as every other decode, checked each time libvips pulls more of the
        # file; time spent waiting for memory above is not decoding time.
        guarded = images._Deadline(io.BytesIO(data), time.monotonic() + images.MAX_DECODE_SECONDS)
        try:
            img = pyvips.Image.new_from_source(_source(pyvips, guarded), "", access="sequential", fail=True)
            if width < TILE or height < TILE:
                picture = np.ndarray(buffer=img.write_to_memory(), dtype=np.uint8, shape=(height, width, 3))
                tiles = cut(picture)
            else:  # the grid is symmetric: cut in the stored frame, then turn each tile upright
                rows, region = {}, pyvips.Region.new(img.crop(xs[0], ys[0], box_w, bands[-1][0] + bands[-1][1] - ys[0]))
                for top, h in bands:  # one pipeline, fetched top to bottom: only these rows are kept
                    area = np.frombuffer(region.fetch(0, top - ys[0], box_w, h), np.uint8).reshape(h, box_w, 3)
                    rows.update({y: area[y - top:y - top + TILE] for y in ys if top <= y < top + h})
                tiles = np.stack([rows[y][:, x - xs[0]:x - xs[0] + TILE] for y in ys for x in xs])
        except pyvips.Error as exc:
            if guarded.expired:
                raise images.too_slow(name, images.MAX_DECODE_SECONDS) from None
            raise images.ImageError(name, f"cannot decode: {str(exc).strip().splitlines()[-1]}") from None
    if orientation in _ORIENT:
        tiles = np.stack([_ORIENT[orientation](t) for t in tiles])
    return np.ascontiguousarray(tiles)


def _bands(ys: list[int], height: int) -> list[tuple[int, int]]:
    """``(top, rows)`` of each run of tile rows, overlapping tiles merged (a band is never read twice)."""
    out: list[list[int]] = []
    for y in ys:
        if out and y <= out[-1][0] + out[-1][1]:
            out[-1][1] = max(out[-1][1], y + TILE - out[-1][0])
        else:
            out.append([y, TILE])
    return [(top, min(h, height - top)) for top, h in out]


def _source(pyvips, guarded):
    """A libvips source pulling the file through ``guarded`` (a deadline-checked reader).

    Past the deadline it reports the end of the file: libvips then fails on a truncated JPEG, and
    the caller tells that apart by ``guarded.expired``.
    """
    source = pyvips.SourceCustom()

    def read(size: int) -> bytes:
        try:
            return guarded.read(size)
        except images._TooSlow:
            return b""

    source.on_read(read)
    return source


def _pyvips():
    try:
        import pyvips
    except (ImportError, OSError) as exc:
        from stylesift.errors import StylesiftError

        raise StylesiftError(f"the detail feature set decodes JPEGs with libvips, which is not installed ({exc}); "
                             "install it with `pip install pyvips pyvips-binary`") from None
    # Every decode is of another file's bytes: libvips' operation cache would only keep them (and
    # their buffers) alive after use, growing the process past the decode budget.
    pyvips.cache_set_max(0)
    return pyvips


def calibration_tiles() -> np.ndarray:
    """Native-resolution tiles of the calibration pictures, plain and with added noise: uint8 ``(n, TILE, TILE, 3)``.

    The INT8 detail network is calibrated on these: noise and fine texture give early stages their
    largest activations, and they are what the set exists to see.
    """
    from stylesift.featurizer.backbones.calibration import calibration_pictures

    rng = np.random.default_rng(0)
    out = []
    for i, picture in enumerate(calibration_pictures()):
        tiles = cut(np.asarray(picture))[::2]  # corners and centre
        out.append(tiles)
        if i % 2 == 0:
            noisy = tiles.astype(np.float32) + rng.normal(0, 6 + 4 * (i % 5), tiles.shape)
            out.append(np.clip(noisy, 0, 255).astype(np.uint8))
    return np.ascontiguousarray(np.concatenate(out))
