"""What people see of an image: the finishing steps the bounded decoder applies for previews and 1:1 crops.

:func:`~stylesift.featurizer.images.load_preview` and :func:`~stylesift.featurizer.images.load_crop`
hand one of these to the decoder (``images._decode``), which calls it with the oriented RGB picture
while the decode's memory is still reserved; the result is all that outlives the reservation. They
live here, not in :mod:`stylesift.featurizer.images`, to keep that module within its size limit;
``images`` imports them, so both names work.
"""

from __future__ import annotations

from typing import Callable

from PIL import Image


def fitted(size: int) -> Callable[[Image.Image], Image.Image]:
    """A finishing step that shrinks the picture in place to fit ``size × size`` (aspect kept, never enlarged).

    Parameters
    ----------
    size : int
        Longest side of the result, in pixels.

    Returns
    -------
    callable
        ``finish(rgb) -> rgb``, for the decoder.
    """

    def fit(rgb: Image.Image) -> Image.Image:
        rgb.thumbnail((size, size), Image.Resampling.LANCZOS)
        return rgb

    return fit


def centre_box(width: int, height: int, size: int) -> tuple[int, int, int, int]:
    """``(left, top, right, bottom)`` of the ``size × size`` box at the centre of a ``width × height`` picture.

    Clipped to the picture on each axis: a side shorter than ``size`` is taken whole, so a picture
    smaller than the box gives all of itself and nothing is ever padded or scaled.

    Parameters
    ----------
    width, height : int
        The picture's size, after EXIF orientation.
    size : int
        Side of the box, in pixels (at least 1).

    Returns
    -------
    tuple of int
        The box, in Pillow's ``crop`` convention (right and bottom exclusive).
    """
    if size < 1:
        raise ValueError(f"a crop is at least 1 pixel wide, not {size}")
    w, h = min(size, width), min(size, height)
    left, top = (width - w) // 2, (height - h) // 2
    return left, top, left + w, top + h


def centred_crop(size: int) -> Callable[[Image.Image], Image.Image]:
    """A finishing step that keeps the picture's centre ``size × size`` pixels at native resolution (see :func:`centre_box`).

    Parameters
    ----------
    size : int
        Side of the crop, in pixels.

    Returns
    -------
    callable
        ``finish(rgb) -> crop``, for the decoder; the crop is a copy, so the whole picture is freed
        when the decoder's reservation ends.
    """
    centre_box(size, size, size)  # a bad size fails here, before anything is read

    def crop(rgb: Image.Image) -> Image.Image:
        return rgb.crop(centre_box(*rgb.size, size))

    return crop
