"""The pictures quantizers calibrate on and runtime checks compare on: made here, the same on every machine.

scikit-image's sample pictures (whole and a centre crop each) and a few drawn screenshot-like
pages, so both photos and flat synthetic images set the activation ranges; nothing is downloaded
and nothing depends on the user's files, so a recipe built from them is the same everywhere.
"""

from __future__ import annotations

import numpy as np

CALIBRATION_SET = "skimage-v1"


def calibration_images(size: int = 224) -> np.ndarray:
    """The fixed calibration batch, uint8 ``(n, size, size, 3)``: scikit-image's sample pictures
    (whole and a centre crop each) and a few drawn screenshot-like pages, so both photos and flat
    synthetic images set the activation ranges."""
    from PIL import Image

    return np.stack([np.asarray(p.resize((size, size), Image.Resampling.BILINEAR), np.uint8)
                     for p in calibration_pictures()])


def calibration_pictures() -> list:
    """The calibration pictures at their own sizes, as RGB Pillow images (see :func:`calibration_images`)."""
    import skimage.data as data
    from PIL import Image, ImageDraw

    names = ["astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry",
             "retina", "colorwheel", "logo", "page", "text", "camera", "moon", "coins", "clock", "brick",
             "grass", "gravel", "cell", "checkerboard"]
    pictures = []
    for name in names:
        array = np.asarray(getattr(data, name)())
        if array.dtype == bool:
            array = array.astype(np.uint8) * 255
        img = Image.fromarray(array)
        if img.mode == "RGBA":
            img = Image.alpha_composite(Image.new("RGBA", img.size, "white"), img)
        img = img.convert("RGB")
        w, h = img.size
        pictures.append(img)
        pictures.append(img.crop((w // 4, h // 4, w - w // 4, h - h // 4)))
    rng = np.random.default_rng(0)
    for i in range(8):
        page = Image.new("RGB", (390, 844) if i % 2 else (1280, 800), (255, 255, 255) if i % 3 else (32, 33, 36))
        draw = ImageDraw.Draw(page)
        for _ in range(12):
            x0, y0 = int(rng.integers(0, page.width - 40)), int(rng.integers(0, page.height - 20))
            colour = tuple(int(c) for c in rng.integers(0, 256, 3))
            draw.rectangle((x0, y0, x0 + int(rng.integers(20, 300)), y0 + int(rng.integers(10, 120))), fill=colour)
            draw.text((x0 + 4, y0 + 2), "Settings  Inbox  12:45  Search", fill=(0, 0, 0))
        pictures.append(page)
    return pictures


def check_images(size: int = 224) -> np.ndarray:
    """The images a runtime's equality check runs on: 16 of the calibration pictures, mirrored."""
    images = calibration_images(size)
    pick = np.linspace(0, len(images) - 1, 16).round().astype(int)
    return np.ascontiguousarray(images[pick][:, :, ::-1])
