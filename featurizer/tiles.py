"""Where the ``detail`` set looks, and how those pixels are decoded: tiles at the image's own resolution.

Placement (version 4): :data:`TILES` tiles of :data:`TILE` × :data:`TILE` pixels. Candidates are an
``n`` × ``n`` grid whose centres are at ``(i + 1) / (n + 1)`` of each side, ``n`` = the short side over
two tiles, at least :data:`GRID` and at most :data:`MAX_GRID` (:func:`grid_size`). Up to 895 px on the
short side that is the plain 3 × 3 grid at 1/4, 1/2 and 3/4, all kept (version 2; every shared
task's photos); on larger frames the :data:`TILES` busiest candidates are kept (:func:`busyness`: the
L1 norm of the grey Laplacian, in integers so every machine picks the same ones), measured on the
picture reduced by the JPEG draft scale of a 224-px input (:func:`draft_scale`: 1/4 or 1/8), i.e. on
the draft the whole-image input is decoded from anyway (other formats: box means of the same size).
Why the busiest: on a large frame most 112-px patches are flat sky or wall, where a slight blur
changes nothing, and the plain grid missed defocus there (head 0.863 / 0.934; the nine busiest of 64:
1.000 / 1.000), while on ~512-px photos a tile already spans a fifth of the side and keeping the
busiest lost on noise and grain, which show in flat parts (docs/choosing-features.md, "detail"). Why
on the draft (version 3 ranked on the full-size candidates): then only the nine kept tiles are decoded
at full size, 23 instead of 32 ms for a 12-MP photo. Where the picture is smaller than the grid, tiles
overlap; a side shorter than one tile is padded by mirroring the picture (measured: mirroring keeps
the noise and sharpness statistics, a constant border would add an edge).

Decoding: a JPEG is decoded by libvips (pyvips with its bundled library) reading scanlines in
order and keeping only the kept tiles' pixels, never the whole frame: rows below the last kept tile
are never decoded (entropy decoding cannot skip rows, so rows are most of the decode's cost); for a
12-megapixel photo a few megabytes instead of Pillow's 36 MB. EXIF orientation is applied to each
tile, and candidates are ranked in the upright frame (the grid is mirrored about the middle and the
busyness is the same in either orientation). Other formats go through the project's one bounded
decoder (:func:`stylesift.featurizer.images.load_native`) at full size. Both reserve their memory
from the same process-wide decode budget.
"""

from __future__ import annotations

import io
import time

import numpy as np
from PIL import Image

from stylesift.featurizer import images

TILE = 112
GRID = 3  # the smallest candidate grid: on small frames every candidate is kept
MAX_GRID = 8
TILES = GRID * GRID  # tiles the network sees, on every frame
DRAFT_SIZE = 224  # large frames rank their candidates on the JPEG draft for a 224-px input (the pooled decode's)
CALIBRATION = "skimage-v1 native-resolution tiles, plain and with added noise (detail-v4)"

_ORIENT = {  # EXIF orientation → the transform that shows a stored tile upright (as Pillow's exif_transpose)
    2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
    5: lambda a: a.transpose(1, 0, 2), 6: lambda a: np.rot90(a, -1), 7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),
    8: lambda a: np.rot90(a, 1),
}


def recipe() -> dict:
    """What decides the tiles' pixels; part of the ``detail`` fingerprint."""
    return {"tile": TILE,
            "grid": f"n x n candidates, n = short side // {2 * TILE} clamped to {GRID}..{MAX_GRID}, centres at "
                    "(i + 1)/(n + 1) of each side, clamped inside, mirrored about the middle",
            "placement": f"all when n = {GRID}, else the {TILES} busiest: L1 norm of the 4-neighbour Laplacian of "
                         "R + 2G + B of each candidate on the upright picture at 1/s, s = the DCT scale of a JPEG draft "
                         f"for a {DRAFT_SIZE}-px input (JPEG: that draft; other formats: box means), ties to the first "
                         "in upright raster order",
            "small": "a side shorter than a tile is mirror-padded", "orientation": "EXIF, per tile",
            # No library version: libvips and Pillow both decode with libjpeg-turbo and give the same pixels
            # (tested), so upgrading either must not turn a store's detail rows into another space.
            "decoder": "full resolution; JPEG: libvips jpegload, sequential, the kept tiles only; other formats: Pillow"}


def grid_size(height: int, width: int) -> int:
    """Candidates per side, ``n``, for a picture of ``height`` × ``width`` pixels (same for either orientation)."""
    return min(max(min(height, width) // (2 * TILE), GRID), MAX_GRID)


def starts(length: int, n: int = GRID) -> list[int]:
    """Top (or left) coordinates of ``n`` candidate tiles along a side of ``length`` pixels.

    Centres at ``(i + 1) / (n + 1)`` of the side (``n`` = 3: 1/4, 1/2, 3/4); mirrored about the middle, so a picture turned by its EXIF orientation gets the same tiles.
    """
    room = max(length - TILE, 0)
    first = [min(max(round((i + 1) * length / (n + 1) - TILE / 2), 0), room) for i in range(n // 2)]
    middle = [min(max(round(length / 2 - TILE / 2), 0), room)] if n % 2 else []
    return first + middle + [room - x for x in reversed(first)]


def draft_scale(height: int, width: int) -> int:
    """The DCT scale (1, 2, 4 or 8) of the JPEG draft for a :data:`DRAFT_SIZE` input: the picture candidates are ranked on.

    Pillow's rule (the largest of 8, 4, 2, 1 not above ``min(width // 224, height // 224)``); frames
    with more than :data:`GRID` candidates a side have 4 or 8.
    """
    fit = min(height, width) // DRAFT_SIZE
    return next(s for s in (8, 4, 2, 1) if fit >= s)


def busyness(tiles: np.ndarray) -> np.ndarray:
    """How much edge and texture each tile has: uint8 ``(m, k, k, 3)`` → int64 ``(m,)``.

    The L1 norm of the 4-neighbour Laplacian of ``R + 2G + B``, exact in integers (the ranking must
    not depend on a machine's floating-point order) and unchanged by turning or mirroring a tile.
    """
    g = tiles[..., 1].astype(np.int16) * 2  # in place from here: 1.5 instead of 6.5 ms for 64 tiles
    g += tiles[..., 0]
    g += tiles[..., 2]
    lap = g[:, 1:-1, 1:-1] * 4  # |lap| <= 4 * 1020: int16 holds it
    for shifted in (g[:, :-2, 1:-1], g[:, 2:, 1:-1], g[:, 1:-1, :-2], g[:, 1:-1, 2:]):
        lap -= shifted
    np.abs(lap, out=lap)
    return lap.sum(axis=(1, 2), dtype=np.int64)


def chosen(height: int, width: int, reduced: np.ndarray | None = None) -> np.ndarray:
    """Which of the ``n`` × ``n`` candidates of an upright ``height`` × ``width`` picture are kept: indices, upright raster order.

    All of them when ``n`` is :data:`GRID`; otherwise the :data:`TILES` busiest, measured on
    ``reduced``, the upright picture at 1 / :func:`draft_scale` (uint8 ``(ceil(height / s), ceil(width / s), 3)``),
    ties to the first. Sorted ascending.
    """
    n = grid_size(height, width)
    if n * n <= TILES:
        return np.arange(n * n)
    s = draft_scale(height, width)
    k = TILE // s
    ys, xs = starts(height, n), starts(width, n)
    candidates = np.stack([reduced[y // s:y // s + k, x // s:x // s + k] for y in ys for x in xs])
    return np.sort(np.argsort(-busyness(candidates), kind="stable")[:TILES])


def reduce(picture: np.ndarray) -> np.ndarray:
    """An upright picture at 1 / :func:`draft_scale`, for formats without a draft: box means (Pillow ``reduce``)."""
    s = draft_scale(*picture.shape[:2])
    return picture if s == 1 else np.asarray(Image.fromarray(picture).reduce(s), dtype=np.uint8)


def cut(picture: np.ndarray, reduced: np.ndarray | None = None) -> np.ndarray:
    """The chosen tiles of an upright uint8 RGB ``(h, w, 3)`` picture → ``(TILES, TILE, TILE, 3)``.

    ``reduced`` is the picture at 1 / :func:`draft_scale` to rank candidates on (default: :func:`reduce` of it).
    """
    h, w = picture.shape[:2]
    if h < TILE or w < TILE:
        picture = np.pad(picture, ((0, max(TILE - h, 0)), (0, max(TILE - w, 0)), (0, 0)), mode="symmetric")
    n = grid_size(h, w)
    if n * n > TILES and reduced is None:
        reduced = reduce(picture)
    ys, xs = starts(h, n), starts(w, n)
    return np.stack([picture[ys[i // n]:ys[i // n] + TILE, xs[i % n]:xs[i % n] + TILE] for i in chosen(h, w, reduced)])


def load_tiles(data: bytes, name, budget: "images.DecodeBudget | None" = None, *,
               draft: np.ndarray | None = None) -> np.ndarray:
    """The ``detail`` tiles of an image file's bytes: uint8 ``(TILES, TILE, TILE, 3)``; raises ``ImageError``.

    The decode reserves its memory from ``budget`` (default: the process-wide one). ``draft`` is the
    file's upright JPEG draft for a :data:`DRAFT_SIZE` input, where the caller has it already
    (:func:`load_image_and_tiles`); a large JPEG's candidates are ranked on it, and without it
    (or when it is not that draft) it is decoded here.
    """
    header = images.jpeg_header(data, name)
    if header is None:
        return images.load_native(io.BytesIO(data), cut, name=name, budget=budget)
    width, height, orientation, coefficients = header
    return _vips_tiles(data, name, width, height, orientation, coefficients, budget, draft)


def load_image_and_tiles(data: bytes, name, input_size: int, budget: "images.DecodeBudget | None" = None):
    """``(image, tiles)``: the whole-image input (:func:`~stylesift.featurizer.images.load_image`) and the ``detail`` tiles.

    A large JPEG's draft, decoded for the whole-image input, also ranks its tile candidates, so the
    file is decoded at full size only down to the last chosen tile (12-MP photo: 23 instead of 32 ms).
    """
    header = images.jpeg_header(data, name)
    ranked = header is not None and input_size == DRAFT_SIZE and grid_size(header[1], header[0]) ** 2 > TILES
    if not ranked:
        return images.load_image(io.BytesIO(data), input_size, name=name, budget=budget), load_tiles(data, name, budget)
    image, draft = images.load_image(io.BytesIO(data), input_size, name=name, budget=budget, keep_draft=True)
    return image, _vips_tiles(data, name, *header, budget, draft)


def _vips_tiles(data: bytes, name, width: int, height: int, orientation: int, coefficients: int,
                budget: "images.DecodeBudget | None" = None, draft: np.ndarray | None = None) -> np.ndarray:
    pyvips = _pyvips()
    n, turn = grid_size(height, width), _ORIENT.get(orientation)
    ys, xs = starts(height, n), starts(width, n)
    # The candidates are ranked in the upright frame (the grid is mirrored about the middle, so its
    # positions are the same), then mapped to where they are stored: order[u] is the stored index
    # of upright candidate u.
    up_h, up_w = (width, height) if orientation in (5, 6, 7, 8) else (height, width)
    order = turn(np.arange(n * n).reshape(n, n, 1))[..., 0].ravel() if turn else np.arange(n * n)
    if n * n > TILES:
        s = draft_scale(height, width)
        if draft is None or draft.shape[:2] != (-(-up_h // s), -(-up_w // s)):
            draft = images.load_image(io.BytesIO(data), DRAFT_SIZE, name=name, budget=budget, keep_draft=True)[1]
            if draft.shape[:2] == (up_h, up_w):  # Pillow did not apply draft mode: box means instead
                draft = reduce(draft)
        keep = order[chosen(up_h, up_w, draft)]
    else:
        keep = order
    del draft
    wanted = [(ys[i // n], xs[i % n]) for i in keep]
    bands = _bands(sorted({y for y, _ in wanted}), height)
    # Only the kept tiles' pixels are fetched, band by band in order (libvips refuses out-of-order
    # reads of a sequential JPEG) and column by column within a band (converting and copying whole
    # band rows cost more than decoding: 43.9 instead of 27.6 ms for 64 candidates of a 12-MP frame):
    # rows between bands are decoded and dropped, rows below the last are never decoded.
    need = (len(wanted) * TILE * TILE * 3 + max(h for _, h in bands) * width * 3 + width * 3 * 4 * 256
            + coefficients + 16 * 2**20)
    with (budget or images.decode_memory()).reserve(need, name):
        # The same time bound as every other decode, checked each time libvips pulls more of the
        # file; time spent waiting for memory above is not decoding time.
        guarded = images._Deadline(io.BytesIO(data), time.monotonic() + images.MAX_DECODE_SECONDS)
        try:
            img = pyvips.Image.new_from_source(_source(pyvips, guarded), "", access="sequential", fail=True)
            if width < TILE or height < TILE:  # padded in the upright frame, as the Pillow path does
                picture = np.ndarray(buffer=img.write_to_memory(), dtype=np.uint8, shape=(height, width, 3))
                return np.ascontiguousarray(cut(turn(picture) if turn else picture))
            found, region = {}, pyvips.Region.new(img)
            for top, h in bands:
                rows = {y for y, _ in wanted if top <= y < top + h}
                for x in sorted({x for y, x in wanted if y in rows}):
                    strip = np.frombuffer(region.fetch(x, top, TILE, h), np.uint8).reshape(h, TILE, 3)
                    found.update({(y, x): strip[y - top:y - top + TILE] for y in rows})
        except pyvips.Error as exc:
            if guarded.expired:
                raise images.too_slow(name, images.MAX_DECODE_SECONDS) from None
            raise images.ImageError(name, f"cannot decode: {str(exc).strip().splitlines()[-1]}") from None
    # Each tile turned upright, in upright raster order: the tiles the upright picture gives.
    return np.stack([turn(found[p]) if turn else found[p] for p in wanted])


def _bands(ys: list[int], height: int) -> list[tuple[int, int]]:
    """``(top, rows)`` of each run of tile rows, overlapping tiles merged (rows are fetched in order, never above a finished band)."""
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
