"""Where the ``detail`` set looks, and how those pixels are decoded: tiles at the image's own resolution.

Placement: a :data:`GRID` × :data:`GRID` grid of :data:`TILE` × :data:`TILE` tiles whose centres
divide the picture evenly (at 1/6, 1/2 and 5/6 of each side), so the middle, where the subject
usually is, and the background are both seen. Where the picture is smaller than the grid, tiles
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

import numpy as np

from stylesift.featurizer import images

TILE = 128
GRID = 3
TILES = GRID * GRID
CALIBRATION = "skimage-v1 native-resolution tiles, plain and with added noise (detail-v1)"

_ORIENT = {  # EXIF orientation → the transform that shows a stored tile upright (as Pillow's exif_transpose)
    2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
    5: lambda a: a.transpose(1, 0, 2), 6: lambda a: np.rot90(a, -1), 7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),
    8: lambda a: np.rot90(a, 1),
}


def recipe() -> dict:
    """What decides the tiles' pixels; part of the ``detail`` fingerprint."""
    return {"tile": TILE, "grid": f"{GRID}x{GRID}, centres at (i + 1/2)/{GRID} of each side, clamped inside",
            "small": "a side shorter than a tile is mirror-padded", "orientation": "EXIF, per tile",
            # No library version: libvips and Pillow both decode with libjpeg-turbo and give the same pixels
            # (tested), so upgrading either must not turn a store's detail rows into another space.
            "decoder": "full resolution; JPEG: libvips jpegload, sequential, tile rows only; other formats: Pillow"}


def starts(length: int) -> list[int]:
    """Top (or left) coordinates of the grid's tiles along a side of ``length`` pixels."""
    return [min(max(round((i + 0.5) * length / GRID - TILE / 2), 0), max(length - TILE, 0)) for i in range(GRID)]


def cut(picture: np.ndarray) -> np.ndarray:
    """The grid's tiles of an upright uint8 RGB ``(h, w, 3)`` picture → ``(TILES, TILE, TILE, 3)``."""
    h, w = picture.shape[:2]
    if h < TILE or w < TILE:
        picture = np.pad(picture, ((0, max(TILE - h, 0)), (0, max(TILE - w, 0)), (0, 0)), mode="symmetric")
    return np.stack([picture[y:y + TILE, x:x + TILE] for y in starts(h) for x in starts(w)])


def load_tiles(data: bytes, name) -> np.ndarray:
    """The ``detail`` tiles of an image file's bytes: uint8 ``(TILES, TILE, TILE, 3)``; raises ``ImageError``."""
    header = images.jpeg_header(data, name)
    if header is None:
        return images.load_native(io.BytesIO(data), cut, name=name)
    width, height, orientation, coefficients = header
    return _vips_tiles(data, name, width, height, orientation, coefficients)


def _vips_tiles(data: bytes, name, width: int, height: int, orientation: int, coefficients: int) -> np.ndarray:
    pyvips = _pyvips()
    ys, xs = starts(height), starts(width)
    box_w, box_h = min(width, xs[-1] + TILE) - xs[0], min(height, ys[-1] + TILE) - ys[0]
    # One region spanning the grid, streamed in order (libvips refuses out-of-order reads of a
    # sequential JPEG); rows above it are decoded and dropped, rows below are never decoded.
    need = box_w * box_h * 3 + width * 3 * 4 * 256 + coefficients + 16 * 2**20
    with images.decode_memory().reserve(need, name):
        try:
            img = pyvips.Image.new_from_buffer(data, "", access="sequential", fail=True)
            if width < TILE or height < TILE:
                picture = np.ndarray(buffer=img.write_to_memory(), dtype=np.uint8, shape=(height, width, 3))
                tiles = cut(picture)
            else:  # the grid is symmetric: cut in the stored frame, then turn each tile upright
                region = img.crop(xs[0], ys[0], box_w, box_h)
                area = np.ndarray(buffer=region.write_to_memory(), dtype=np.uint8, shape=(box_h, box_w, 3))
                tiles = np.stack([area[y - ys[0]:y - ys[0] + TILE, x - xs[0]:x - xs[0] + TILE] for y in ys for x in xs])
        except pyvips.Error as exc:
            raise images.ImageError(name, f"cannot decode: {str(exc).strip().splitlines()[-1]}") from None
    if orientation in _ORIENT:
        tiles = np.stack([_ORIENT[orientation](t) for t in tiles])
    return np.ascontiguousarray(tiles)


def _pyvips():
    try:
        import pyvips
    except (ImportError, OSError) as exc:
        from stylesift.errors import StylesiftError

        raise StylesiftError(f"the detail feature set decodes JPEGs with libvips, which is not installed ({exc}); "
                             "install it with `pip install pyvips pyvips-binary`") from None
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
