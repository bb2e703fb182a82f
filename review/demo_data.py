"""The demo's image set, made offline: real photos shipped inside installed packages, and rendered snapshots.

"quality" images are real photographs that ship with scikit-image, matplotlib and scikit-learn
(a cat, an espresso, an astronaut, a rocket, ...). There are only a dozen of them, so each is turned
into several training images by random crops, mirror flips and colour jitter. "ordinary" images are
rendered here with Pillow: text screenshots, app/UI panels, terminals, spreadsheets, flat graphics and
charts, and UI panels with a small photo inside (the hard case). Either class is saved as JPEG or PNG
at random, so the compression cannot give the class away.

The held-back images that the demo scores come from *other* source photos than the training images
(crops of one photo never sit on both sides), plus freshly rendered snapshots and one broken file, so
the report shows what a new stream looks like rather than a memorised one.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFont

from stylesift.errors import StylesiftError
from stylesift.featurizer.images import to_rgb

# (name, package, file inside the package's data folder). All colour or grey photographs of real scenes.
PHOTO_SOURCES = (
    ("chelsea", "skimage", "chelsea.png"),
    ("coffee", "skimage", "coffee.png"),
    ("astronaut", "skimage", "astronaut.png"),
    ("rocket", "skimage", "rocket.jpg"),
    ("motorcycle", "skimage", "motorcycle_left.png"),
    ("hubble", "skimage", "hubble_deep_field.jpg"),
    ("camera", "skimage", "camera.png"),
    ("coins", "skimage", "coins.png"),
    ("grace_hopper", "matplotlib", "grace_hopper.jpg"),
    ("china", "sklearn", "china.jpg"),
    ("flower", "sklearn", "flower.jpg"),
    ("moon", "skimage", "moon.png"),
)
# Source photos kept out of training; the demo scores crops of these as the "new" quality images.
HELD_BACK_PHOTOS = ("coffee", "china", "astronaut")

WORDS = ("the quick brown fox jumps over lazy dog invoice meeting agenda update release notes draft "
         "review budget quarter report settings account password login profile search results "
         "download upload share export import customer order status pending shipped error warning "
         "total amount balance payment due monday friday team project deadline task done").split()
PALETTE = ((33, 150, 243), (76, 175, 80), (244, 67, 54), (255, 193, 7), (156, 39, 176), (0, 150, 136),
           (255, 87, 34), (96, 125, 139), (63, 81, 181), (233, 30, 99))


@dataclass
class DemoSet:
    """Where the demo images were written. Each list holds file paths."""

    root: Path
    train_quality: list[Path] = field(default_factory=list)
    train_ordinary: list[Path] = field(default_factory=list)
    new_quality: list[Path] = field(default_factory=list)
    new_ordinary: list[Path] = field(default_factory=list)
    new_broken: list[Path] = field(default_factory=list)
    sources: dict[str, str] = field(default_factory=dict)  # photo name -> file it was read from
    train_photos: list[str] = field(default_factory=list)  # names of the photos cropped for training

    @property
    def new(self) -> list[Path]:
        return sorted(self.new_quality + self.new_ordinary + self.new_broken)


def photo_path(package: str, filename: str) -> Path:
    """The file of a photo that ships inside an installed package (no network)."""
    if package == "skimage":
        from stylesift.extras import require

        require("skimage", "demo", "the demo's sample photos")
        import skimage.data

        folder = Path(skimage.data.__file__).parent
    elif package == "matplotlib":
        import matplotlib

        folder = Path(matplotlib.get_data_path()) / "sample_data"
    elif package == "sklearn":
        import sklearn.datasets

        folder = Path(sklearn.datasets.__file__).parent / "images"
    else:
        raise ValueError(f"unknown package {package!r}")
    return folder / filename


def available_photos() -> dict[str, Path]:
    """Source photos found in this installation, by name (a missing one is skipped, not an error)."""
    found = {}
    for name, package, filename in PHOTO_SOURCES:
        try:
            path = photo_path(package, filename)
        except ImportError:
            continue
        if path.is_file():
            found[name] = path
    return found


def make_demo_set(root: str | os.PathLike, *, n_train: int = 72, n_new: int = 24, seed: int = 0,
                  max_side: int = 320) -> DemoSet:
    """Write the demo images under ``root`` and return where they are.

    Layout: ``root/train/quality``, ``root/train/ordinary`` and ``root/new`` (held-back quality crops,
    new snapshots and one unreadable file, shuffled names so the folder does not give the answer away).

    Parameters
    ----------
    root : path
        Output folder; existing demo files are overwritten with identical content (deterministic).
    n_train : int
        Training images per class.
    n_new : int
        Held-back images per class to score.
    seed : int
        Random seed; the same seed writes byte-identical files.
    max_side : int
        Longest side of the written images, in pixels (small keeps the demo fast).
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    photos = available_photos()
    held = [n for n in HELD_BACK_PHOTOS if n in photos]
    train_names = [n for n in photos if n not in held]
    if len(train_names) < 3 or not held:
        raise StylesiftError(f"only {len(photos)} demo photos found ({', '.join(photos) or 'none'}); "
                           "reinstall scikit-image, matplotlib and scikit-learn with their data files")
    originals = {n: _open_photo(p) for n, p in photos.items()}
    demo = DemoSet(root, sources={n: str(p) for n, p in photos.items()}, train_photos=train_names)
    dirs = {k: root / k for k in ("train/quality", "train/ordinary", "new")}
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
        for old in d.iterdir():  # a previous demo run with other counts must not leave extra files
            if old.is_file():
                old.unlink()

    for i in range(n_train):
        name = train_names[i % len(train_names)]
        img = augment(originals[name], rng, max_side)
        demo.train_quality.append(_save(img, dirs["train/quality"] / f"{name}_{i:03d}", rng))
    for i in range(n_train):
        img, kind = render_snapshot(rng, photos=[originals[n] for n in train_names])
        demo.train_ordinary.append(_save(img, dirs["train/ordinary"] / f"{kind}_{i:03d}", rng))

    names = [f"upload_{i:03d}" for i in rng.permutation(2 * n_new + 1)]
    for i in range(n_new):
        name = held[i % len(held)]
        demo.new_quality.append(_save(augment(originals[name], rng, max_side), dirs["new"] / names.pop(), rng))
    for i in range(n_new):
        img, _ = render_snapshot(rng, photos=[originals[n] for n in held])
        demo.new_ordinary.append(_save(img, dirs["new"] / names.pop(), rng))
    broken = dirs["new"] / f"{names.pop()}.jpg"
    # A real upload failure: the first kilobyte of a JPEG, as a dropped connection leaves it.
    jpeg = io.BytesIO()
    augment(originals[held[0]], rng, max_side).save(jpeg, "JPEG", quality=90)
    broken.write_bytes(jpeg.getvalue()[:1024])
    demo.new_broken.append(broken)
    return demo


def augment(photo: Image.Image, rng: np.random.Generator, max_side: int = 320) -> Image.Image:
    """A random crop (35–100 % of the area, aspect 3:4 to 4:3), maybe mirrored, with colour jitter."""
    w, h = photo.size
    area = rng.uniform(0.35, 1.0) * w * h
    aspect = float(np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3))))
    cw, ch = min(w, int(round(np.sqrt(area * aspect)))), min(h, int(round(np.sqrt(area / aspect))))
    x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    img = photo.crop((x, y, x + cw, y + ch))
    if rng.random() < 0.5:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    for enhancer in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
        img = enhancer(img).enhance(float(rng.uniform(0.8, 1.2)))
    img.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    return img


def render_snapshot(rng: np.random.Generator, photos: list[Image.Image] = ()) -> tuple[Image.Image, str]:
    """One "ordinary" image: returns ``(image, kind)`` with kind one of the renderers' names."""
    kinds = ["text", "ui", "terminal", "table", "flat", "chart"] + (["ui_photo"] if photos else [])
    kind = kinds[int(rng.integers(len(kinds)))]
    if kind == "ui_photo":
        return _render_ui(rng, photo=photos[int(rng.integers(len(photos)))]), kind
    return _RENDERERS[kind](rng), kind


# ----------------------------------------------------------------------------- renderers
def _font(size: int, mono: bool = False, bold: bool = False) -> ImageFont.FreeTypeFont:
    import matplotlib

    name = "DejaVuSansMono" if mono else "DejaVuSans"
    name += "-Bold" if bold else ""
    path = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / f"{name}.ttf"
    try:
        return ImageFont.truetype(str(path), size)
    except OSError:
        return ImageFont.load_default(size=size)


def _sentence(rng, n_min=3, n_max=9) -> str:
    words = [WORDS[int(i)] for i in rng.integers(0, len(WORDS), int(rng.integers(n_min, n_max + 1)))]
    return " ".join(words).capitalize()


def _screen_size(rng) -> tuple[int, int]:
    return [(320, 200), (300, 220), (180, 320), (320, 240), (240, 240)][int(rng.integers(5))]


def _render_text(rng) -> Image.Image:
    w, h = _screen_size(rng)
    bg = tuple(int(v) for v in rng.integers(235, 256, 3))
    img = Image.new("RGB", (w, h), bg)
    d = ImageDraw.Draw(img)
    size = int(rng.integers(10, 15))
    d.text((10, 8), _sentence(rng, 2, 4), fill=(20, 20, 20), font=_font(size + 5, bold=True))
    y = 14 + size + 10
    body = _font(size)
    while y < h - size:
        d.text((10, y), _sentence(rng, 4, 8), fill=(40, 40, 40), font=body)
        y += int(size * 1.5)
    return img


def _render_ui(rng, photo: Image.Image | None = None) -> Image.Image:
    w, h = _screen_size(rng)
    accent = PALETTE[int(rng.integers(len(PALETTE)))]
    img = Image.new("RGB", (w, h), (248, 249, 250))
    d = ImageDraw.Draw(img)
    d.rectangle((0, 0, w, 28), fill=accent)
    d.text((8, 7), _sentence(rng, 1, 3), fill="white", font=_font(13, bold=True))
    sidebar = w > h and rng.random() < 0.6
    x0 = 80 if sidebar else 8
    if sidebar:
        d.rectangle((0, 28, 72, h), fill=(235, 237, 240))
        for i, y in enumerate(range(40, h - 14, 22)):
            d.text((8, y), WORDS[int(rng.integers(len(WORDS)))], fill=(60, 60, 60), font=_font(11))
    y = 38
    if photo is not None:
        thumb = augment(photo, rng, max_side=int(min(w - x0, h) * 0.45))
        img.paste(thumb, (x0, y))
        y += thumb.size[1] + 8
    while y < h - 30:
        choice = rng.random()
        if choice < 0.4:  # input field with a label
            d.text((x0, y), _sentence(rng, 1, 2), fill=(90, 90, 90), font=_font(10))
            d.rounded_rectangle((x0, y + 14, w - 10, y + 34), 4, outline=(180, 180, 180), fill="white")
            y += 44
        elif choice < 0.7:  # button row
            x = x0
            for _ in range(int(rng.integers(1, 4))):
                label = WORDS[int(rng.integers(len(WORDS)))].title()
                bw = 16 + 8 * len(label)
                if x + bw > w - 8:
                    break
                d.rounded_rectangle((x, y, x + bw, y + 24), 6, fill=accent)
                d.text((x + 8, y + 5), label, fill="white", font=_font(11, bold=True))
                x += bw + 8
            y += 34
        else:  # toggle row
            d.text((x0, y + 2), _sentence(rng, 2, 3), fill=(50, 50, 50), font=_font(11))
            on = rng.random() < 0.5
            d.rounded_rectangle((w - 50, y, w - 14, y + 18), 9, fill=accent if on else (200, 200, 200))
            cx = w - 23 if on else w - 41
            d.ellipse((cx - 7, y + 2, cx + 7, y + 16), fill="white")
            y += 28
    return img


def _render_terminal(rng) -> Image.Image:
    w, h = _screen_size(rng)
    img = Image.new("RGB", (w, h), tuple(int(v) for v in rng.integers(15, 40, 3)))
    d = ImageDraw.Draw(img)
    font = _font(11, mono=True)
    colours = [(200, 200, 200), (120, 220, 120), (240, 200, 90), (120, 170, 255), (240, 110, 110)]
    for y in range(6, h - 12, 15):
        prefix = "$ " if rng.random() < 0.3 else "  " * int(rng.integers(0, 3))
        d.text((6, y), prefix + _sentence(rng, 2, 6).lower().replace(" ", rng.choice(["_", " ", ".", "("])),
               fill=colours[int(rng.integers(len(colours)))], font=font)
    return img


def _render_table(rng) -> Image.Image:
    w, h = _screen_size(rng)
    img = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(img)
    cols, row_h = int(rng.integers(3, 6)), 18
    col_w = w // cols
    d.rectangle((0, 0, w, row_h), fill=(220, 230, 241))
    font = _font(10)
    for r, y in enumerate(range(0, h, row_h)):
        for c in range(cols):
            text = WORDS[int(rng.integers(len(WORDS)))].title() if r == 0 or c == 0 else f"{rng.uniform(0, 9999):,.2f}"
            d.text((c * col_w + 4, y + 3), text, fill=(30, 30, 30), font=font)
        d.line((0, y, w, y), fill=(200, 200, 200))
    for c in range(cols):
        d.line((c * col_w, 0, c * col_w, h), fill=(200, 200, 200))
    return img


def _render_flat(rng) -> Image.Image:
    w, h = _screen_size(rng)
    colours = [PALETTE[int(i)] for i in rng.permutation(len(PALETTE))[:4]]
    img = Image.new("RGB", (w, h), colours[0])
    d = ImageDraw.Draw(img)
    for colour in colours[1:] * 2:
        x, y, s = int(rng.integers(0, w)), int(rng.integers(0, h)), int(rng.integers(20, 90))
        shape = int(rng.integers(3))
        if shape == 0:
            d.ellipse((x - s, y - s, x + s, y + s), fill=colour)
        elif shape == 1:
            d.rectangle((x - s, y - s // 2, x + s, y + s // 2), fill=colour)
        else:
            d.polygon([(x, y - s), (x + s, y + s), (x - s, y + s)], fill=colour)
    if rng.random() < 0.7:
        d.text((12, h - 40), _sentence(rng, 1, 3).upper(), fill="white", font=_font(int(rng.integers(16, 24)), bold=True))
    return img


def _render_chart(rng) -> Image.Image:
    w, h = _screen_size(rng)
    img = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(img)
    d.text((10, 6), _sentence(rng, 2, 4), fill=(30, 30, 30), font=_font(12, bold=True))
    left, bottom, top = 30, h - 20, 30
    d.line((left, top, left, bottom), fill=(80, 80, 80))
    d.line((left, bottom, w - 10, bottom), fill=(80, 80, 80))
    n = int(rng.integers(4, 10))
    colour = PALETTE[int(rng.integers(len(PALETTE)))]
    values = rng.uniform(0.1, 1.0, n)
    step = (w - left - 20) / n
    if rng.random() < 0.5:
        for i, v in enumerate(values):
            x = left + 6 + i * step
            d.rectangle((x, bottom - v * (bottom - top), x + step * 0.7, bottom), fill=colour)
    else:
        pts = [(left + 6 + i * step, bottom - v * (bottom - top)) for i, v in enumerate(values)]
        d.line(pts, fill=colour, width=3)
        for x, y in pts:
            d.ellipse((x - 3, y - 3, x + 3, y + 3), fill=colour)
    return img


_RENDERERS = {"text": _render_text, "ui": _render_ui, "terminal": _render_terminal, "table": _render_table,
              "flat": _render_flat, "chart": _render_chart}


def _open_photo(path: Path) -> Image.Image:
    with Image.open(path) as img:
        img.load()
        return to_rgb(img)


def _save(img: Image.Image, stem: Path, rng: np.random.Generator) -> Path:
    # Either format for either class: the model must learn the pictures, not the compression.
    if rng.random() < 0.5:
        path = stem.with_name(stem.name + ".jpg")
        img.save(path, quality=int(rng.integers(75, 96)))
    else:
        path = stem.with_name(stem.name + ".png")
        img.save(path)
    return path
