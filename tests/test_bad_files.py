"""Hostile and odd files: a corpus the tests generate (40 kinds); valid ones are featurized correctly,
invalid ones are recorded with a reason that names the file, and a run over all of them completes."""

from __future__ import annotations

import io
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from PIL import Image, features

from stylesift.featurizer import images as I
from stylesift.featurizer.extract import list_images, prepare_file
from stylesift.featurizer.images import ImageError, load_image
from stylesift.featurizer.store import FeatureStore

RED, GREEN, BLUE, WHITE = (220, 20, 30), (20, 200, 40), (30, 40, 210), (255, 255, 255)


@dataclass
class Kind:
    name: str  # file name inside the corpus folder
    make: Callable[[Path], None]
    check: Callable[[np.ndarray], bool] | None = None  # valid file: what its decoded pixels must show
    reason: str | None = None  # invalid file: a regex its failure reason must match


def near(colour, tol=30):
    return lambda a: bool(np.abs(a.reshape(-1, 3).mean(0) - colour).max() < tol)


def halves(top, bottom, axis=0, tol=40):
    def check(a):
        first, second = (a[:90], a[-90:]) if axis == 0 else (a[:, :90], a[:, -90:])
        return near(top, tol)(first) and near(bottom, tol)(second)
    return check


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bytes(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG", **kw)
    return buf.getvalue()


def jpeg_bytes(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90, **kw)
    return buf.getvalue()


def split(size, a, b, mode="RGB", vertical=True):
    """An image whose left (or top) half is ``a`` and the other half ``b``."""
    img = Image.new(mode, size, a)
    w, h = size
    img.paste(b, (w // 2, 0, w, h) if vertical else (0, h // 2, w, h))
    return img


def write(data_or_img, fmt=None, **kw):
    def make(path: Path):
        if isinstance(data_or_img, bytes):
            path.write_bytes(data_or_img)
        else:
            data_or_img.save(path, fmt, **kw)
    return make


def make_bomb(path: Path):
    # Header claims 100000 × 100000 RGB (30 GB of pixels); the data is a few bytes.
    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(b"\0" * 1000))
                     + png_chunk(b"IEND", b""))


def make_too_many_pixels(path: Path):
    # A complete, valid 12000 × 10000 1-bit PNG (120 megapixels, ~15 KB on disk): over MAX_PIXELS.
    w, h = 12_000, 10_000
    comp = zlib.compressobj(9)
    row = b"\0" * (1 + w // 8)
    idat = b"".join(comp.compress(row) for _ in range(h)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", w, h, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b""))


def make_bad_crc(path: Path):
    data = bytearray(png_bytes(Image.new("RGB", (32, 32), RED)))
    data[29] ^= 0xFF  # last byte of IHDR's CRC
    path.write_bytes(bytes(data))


def make_text_bomb(path: Path):
    # A valid picture carrying a zTXt comment that inflates to 50 MB.
    data = png_bytes(Image.new("RGB", (16, 16), RED))
    ztxt = png_chunk(b"zTXt", b"Comment\0\0" + zlib.compress(b"a" * 50_000_000, 9))
    path.write_bytes(data[:33] + ztxt + data[33:])


def make_exif_rotated(path: Path):
    # Stored 80 × 40, left half red; orientation 6 says "rotate 90° clockwise to display", so the
    # displayed picture is 40 × 80 with the red half on top.
    img = split((80, 40), RED, BLUE)
    exif = Image.Exif()
    exif[0x0112] = 6
    img.save(path, "JPEG", quality=95, exif=exif.tobytes())


def make_bad_exif(path: Path):
    junk = b"Exif\0\0II*\0\x08\0\0\0\xff\xff" + bytes(range(256)) * 4
    Image.new("RGB", (48, 48), GREEN).save(path, "JPEG", quality=95, exif=junk)


def make_animation(fmt, **kw):
    def make(path: Path):
        frames = [Image.new("RGB", (40, 40), c) for c in (RED, BLUE, GREEN)]
        frames[0].save(path, fmt, save_all=True, append_images=frames[1:], duration=100, loop=0, **kw)
    return make


def make_multipage_tiff(path: Path):
    pages = [Image.new("RGB", (40, 40), c) for c in (GREEN, RED)]
    pages[0].save(path, "TIFF", save_all=True, append_images=pages[1:])


def make_palette_transparent(path: Path):
    img = Image.new("P", (64, 64), 0)
    img.putpalette([0, 0, 0, *BLUE] + [0] * 762)
    img.paste(1, (32, 0, 64, 64))
    img.save(path, "PNG", transparency=0)  # left half: transparent → white


def make_16bit(path: Path):
    ramp = np.tile(np.linspace(0, 65535, 256).astype(np.uint16), (64, 1))
    Image.fromarray(ramp).save(path, "PNG")
    assert Image.open(path).mode.startswith("I")


def ramp(low, high, dtype) -> np.ndarray:
    """A 64×256 left-to-right ramp from ``low`` to ``high``."""
    return np.tile(np.linspace(low, high, 256), (64, 1)).astype(dtype)


def with_nan(a: np.ndarray) -> np.ndarray:
    a = a.copy()
    a[::7, ::5] = np.nan
    a[3, 3], a[4, 4] = np.inf, -np.inf
    return a


def dark_to_bright(a: np.ndarray) -> bool:
    return a[:, :20].mean() < 30 and a[:, -20:].mean() > 225


def make_symlink_loop(path: Path):
    other = path.with_name("loop_b.jpg")
    path.symlink_to(other.name)
    other.symlink_to(path.name)


def make_dir_named_jpg(path: Path):
    path.mkdir()
    Image.new("RGB", (30, 30), GREEN).save(path / "inside.png")


def corpus() -> list[Kind]:
    jpeg = jpeg_bytes(split((64, 48), RED, BLUE))
    png = png_bytes(split((64, 48), RED, BLUE))
    return [
        # ---------------------------------------------------------------- rejected, with a reason
        Kind("zero_bytes.jpg", write(b""), reason="empty file"),
        Kind("truncated.jpg", write(jpeg[: len(jpeg) // 2]), reason="cannot decode.*(truncated|broken|premature)"),
        Kind("truncated.png", write(png[: len(png) - 30]), reason="cannot decode.*(truncated|broken|EOF)"),
        Kind("text.jpg", write(b"just some words, not a picture\n"), reason="not an image format"),
        Kind("error_page.jpg", write(b"<!DOCTYPE html><html><body>404 Not Found</body></html>"), reason="HTML page"),
        Kind("bomb_100000x100000.png", make_bomb, reason="decompression bomb"),
        Kind("too_many_pixels_12000x10000.png", make_too_many_pixels, reason="12000×10000 pixels is more than the limit"),
        Kind("text_chunk_bomb.png", make_text_bomb, reason="too large"),
        Kind("bad_crc.png", make_bad_crc, reason="starts like a PNG file but its header is damaged"),
        Kind("drawing.svg", write(b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect/></svg>'),
             reason="SVG is a vector drawing"),
        Kind("postscript.jpg", write(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n"),
             reason="EPS format, which stylesift does not decode"),  # never handed to Ghostscript
        Kind("legacy_pcx.jpg", write(Image.new("RGB", (20, 20), RED), "PCX"), reason="PCX format, which stylesift does not decode"),
        Kind("fake_heic.heic", write(b"\0\0\0\x18ftypheic\0\0\0\0mif1heic" + b"\0" * 64), reason="not an image format"),
        Kind("broken_symlink.jpg", lambda p: p.symlink_to("does_not_exist.jpg"), reason="broken symlink"),
        Kind("loop_a.jpg", make_symlink_loop, reason="symlink loop"),
        Kind("device.jpg", lambda p: p.symlink_to("/dev/zero"), reason="not a regular file"),
        Kind("pipe.jpg", lambda p: os.mkfifo(p), reason="not a regular file"),  # reading it would block forever
        # ---------------------------------------------------------------- accepted, and decoded correctly
        Kind("plain.jpg", write(jpeg), halves(RED, BLUE, axis=1)),
        Kind("big_8000x6000.jpg", write(Image.new("RGB", (8000, 6000), GREEN), "JPEG", quality=80), near(GREEN)),
        Kind("cmyk.jpg", write(Image.new("CMYK", (48, 48), (0, 230, 230, 20)), "JPEG", quality=95), near((235, 20, 20), 40)),
        Kind("progressive.jpg", write(split((64, 48), RED, BLUE), "JPEG", progressive=True), halves(RED, BLUE, axis=1)),
        Kind("trailing_garbage.jpg", write(jpeg + b"\0garbage after the end marker" * 10), halves(RED, BLUE, axis=1)),
        Kind("exif_rotated.jpg", make_exif_rotated, halves(RED, BLUE, axis=0)),
        Kind("bad_exif.jpg", make_bad_exif, near(GREEN)),
        Kind("sixteen_bit.png", make_16bit, lambda a: a[:, :20].mean() < 30 and a[:, -20:].mean() > 225),
        Kind("grayscale.png", write(Image.new("L", (40, 40), 100)), near((100, 100, 100), 2)),
        Kind("one_bit.png", write(Image.new("1", (40, 40), 1)), near(WHITE, 2)),
        Kind("palette_transparent.png", make_palette_transparent, halves(WHITE, BLUE, axis=1)),
        Kind("la.png", write(split((64, 64), (50, 0), (50, 255), "LA")), halves(WHITE, (50, 50, 50), axis=1)),
        Kind("rgba.png", write(split((64, 64), (*RED, 0), (*GREEN, 255), "RGBA")), halves(WHITE, GREEN, axis=1)),
        Kind("animated.gif", make_animation("GIF"), near(RED)),
        Kind("animated.webp", make_animation("WEBP", lossless=True), near(RED)),
        Kind("still.webp", write(Image.new("RGB", (40, 40), BLUE), "WEBP", lossless=True), near(BLUE)),
        *([Kind("still.avif", write(Image.new("RGB", (40, 40), BLUE), "AVIF", quality=90), near(BLUE, 12))]
          if features.check("avif") else []),
        Kind("one_pixel.png", write(Image.new("RGB", (1, 1), (10, 200, 30))), near((10, 200, 30), 1)),
        Kind("aspect_10000x20.png", write(split((10000, 20), RED, BLUE)), halves(RED, BLUE, axis=1)),
        Kind("multipage.tiff", make_multipage_tiff, near(GREEN)),
        Kind("float.tiff", write(Image.fromarray(np.full((30, 30), 180.0, np.float32))), near((180, 180, 180), 2)),
        # float and wide-integer pixels are scaled by the range they really use, not clipped
        Kind("float_unit_range.tiff", write(Image.fromarray(ramp(0.0, 1.0, np.float32))), dark_to_bright),
        Kind("float_unit_with_nan.tiff", write(Image.fromarray(with_nan(ramp(0.0, 1.0, np.float32)))), dark_to_bright),
        Kind("float_wide_range.tiff", write(Image.fromarray(ramp(-500.0, 3000.0, np.float32))), dark_to_bright),
        Kind("float_constant_one.tiff", write(Image.fromarray(np.ones((30, 30), np.float32))), near(WHITE, 2)),
        Kind("sixteen_bit.tiff", write(Image.fromarray(ramp(0, 65535, np.uint16))), dark_to_bright),
        Kind("int32_wide_range.tiff", write(Image.fromarray(ramp(-70000, 2_000_000, np.int32))), dark_to_bright),
        Kind("image.bmp", write(Image.new("RGB", (33, 17), BLUE), "BMP"), near(BLUE, 2)),
        Kind("icon.ico", write(Image.new("RGBA", (32, 32), (*RED, 255)), "ICO"), near(RED, 2)),
        Kind("with space and ünïcødé 画像.png", write(Image.new("RGB", (20, 20), RED)), near(RED, 2)),
        Kind("n" * 246 + ".png", write(Image.new("RGB", (20, 20), (90, 90, 200))), near((90, 90, 200), 2)),
        Kind("x.jpg", make_dir_named_jpg),  # a folder: walked like any other, its picture is taken
    ]


@pytest.fixture(scope="module")
def bad_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("corpus")
    for kind in corpus():
        kind.make(folder / kind.name)
    # The same bytes under two names: one row, both paths.
    shutil.copyfile(folder / "plain.jpg", folder / "plain copy.jpg")
    return folder


def test_the_corpus_has_at_least_25_kinds():
    kinds = corpus()
    assert len(kinds) >= 25 and len({k.name for k in kinds}) == len(kinds)
    assert sum(k.reason is not None for k in kinds) >= 12 and sum(k.check is not None for k in kinds) >= 20


@pytest.mark.parametrize("kind", corpus(), ids=lambda k: k.name[:40])
def test_each_kind_is_decoded_or_refused_with_a_reason_naming_the_file(bad_folder, kind):
    path = bad_folder / kind.name
    item = prepare_file(path)
    if kind.reason is not None:
        assert item.image is None and item.error is not None
        assert item.error.startswith(f"{path}: ")
        assert re.search(kind.reason, item.error, re.IGNORECASE), item.error
    elif kind.check is not None:
        assert item.error is None, item.error
        assert item.image.shape == (224, 224, 3) and item.image.dtype == np.uint8
        assert kind.check(item.image), item.image.reshape(-1, 3).mean(0)
    else:  # the folder named x.jpg
        assert "is a directory" in item.error
        assert bad_folder / "x.jpg" / "inside.png" in list_images([bad_folder])


def test_the_pixel_limit_and_the_time_limit_apply_to_any_image(tmp_path):
    path = tmp_path / "noise.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (400, 400, 3), np.uint8)).save(path)
    assert load_image(path).shape == (224, 224, 3)
    with pytest.raises(ImageError, match="400×400 pixels is more than the limit of 100,000"):
        load_image(path, max_pixels=100_000)
    with pytest.raises(ImageError, match=f"{path}: decoding took longer than 0 s and was abandoned"):
        load_image(path, max_seconds=0)


def test_a_file_over_the_size_limit_is_refused_unread(tmp_path, monkeypatch):
    path = tmp_path / "large.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)).save(path)
    monkeypatch.setattr(I, "MAX_FILE_BYTES", path.stat().st_size - 1)
    item = prepare_file(path)
    assert item.image is None and "larger than the" in item.error and item.error.startswith(str(path))


def test_a_file_replaced_or_grown_between_stat_and_read_is_refused(tmp_path):
    path = tmp_path / "growing.png"
    path.write_bytes(png_bytes(Image.new("RGB", (40, 40), RED)))
    before = os.stat(path)
    with open(path, "ab") as fh:
        fh.write(b"more bytes arriving")  # still being copied in
    with pytest.raises(ImageError, match=f"{path}: file changed while being read .*tried again on the next run"):
        I.read_image_bytes(path, before)
    before = os.stat(path)
    replacement = tmp_path / "new.png"
    replacement.write_bytes(png_bytes(Image.new("RGB", (40, 40), BLUE)))
    os.replace(replacement, path)  # same name, another file
    with pytest.raises(ImageError, match="file changed while being read"):
        I.read_image_bytes(path, before)


def test_a_file_that_changes_while_it_is_read_is_refused_or_read_whole(tmp_path):
    """A writer keeps rewriting the file in place; every read is either one whole version or refused.

    A change during the read is caught by the stat check; a mix left at rest between two writes is
    caught by PNG's own checksums (a format without them would decode such a mix as what it is).
    """
    path = tmp_path / "changing.png"
    versions = [png_bytes(Image.new("RGB", (300, 300), c), compress_level=0) for c in (RED, BLUE)]
    decoded = {__import__("hashlib").sha256(v).hexdigest(): c for v, c in zip(versions, (RED, BLUE))}
    path.write_bytes(versions[0])
    stop = threading.Event()

    def rewrite():
        i = 0
        while not stop.is_set():
            i += 1
            with open(path, "r+b") as fh:  # in place, in pieces: readers can see a mix
                data = versions[i % 2]
                for start in range(0, len(data), 4096):
                    fh.write(data[start:start + 4096])

    writer = threading.Thread(target=rewrite)
    writer.start()
    outcomes = {"whole": 0, "refused": 0}
    try:
        for _ in range(150):
            item = prepare_file(path)
            if item.error is None:
                assert item.sha256 in decoded  # never a blend of two versions
                assert near(decoded[item.sha256], 3)(item.image)
                outcomes["whole"] += 1
            else:
                assert item.error.startswith(f"{path}: ")
                assert "changed while being read" in item.error or "cannot decode" in item.error
                outcomes["refused"] += 1
    finally:
        stop.set()
        writer.join()
    assert outcomes["refused"] > 0  # the race really happened


def test_an_unreadable_file_is_refused_as_permission_denied():
    """chmod 000 stops only non-root users, so as root the check runs in a subprocess as `nobody`."""
    folder = Path(tempfile.mkdtemp(prefix="stylesift-perm-"))
    try:
        folder.chmod(0o755)
        path = folder / "secret.jpg"
        Image.new("RGB", (20, 20), RED).save(path)
        path.chmod(0o000)
        code = "import sys; from pathlib import Path; from stylesift.featurizer.extract import prepare_file; print(prepare_file(Path(sys.argv[1])).error)"
        cmd = [sys.executable, "-c", code, str(path)]
        if os.geteuid() == 0:
            if shutil.which("setpriv") is None:
                pytest.skip("running as root and setpriv is missing: cannot drop privileges to test permissions")
            cmd = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *cmd]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=Path(__file__).parents[1])
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == f"{path}: permission denied"
    finally:
        shutil.rmtree(folder)


@pytest.mark.weights
def test_a_run_over_the_whole_corpus_completes_and_stores_what_it_should(bad_folder, featurizer, tmp_path):
    store = tmp_path / "corpus.h5"
    report = featurizer.extract([bad_folder], store)
    kinds = corpus()
    refused = {str(bad_folder / k.name) for k in kinds if k.reason is not None} | {str(bad_folder / "loop_b.jpg")}
    assert {f["path"] for f in report.failed} == refused
    for f in report.failed:
        assert f["error"].startswith(f["path"] + ": ")
    st = FeatureStore(store)
    assert {f.path: f.reason for f in st.failures} == {f["path"]: f["error"] for f in report.failed}

    valid = [bad_folder / k.name for k in kinds if k.check is not None] + [bad_folder / "x.jpg" / "inside.png"]
    assert report.new == len(valid) and report.cached == 1 and len(st) == len(valid)
    # Every row equals a fresh featurization of its own file.
    fresh = featurizer.featurize(np.stack([prepare_file(p).image for p in valid]))
    rows = [st.row_of(report.sha256_by_path[str(p)]) for p in valid]
    np.testing.assert_allclose(st.features(rows), fresh, rtol=1e-4, atol=1e-4)
    row = st.row_of(report.sha256_by_path[str(bad_folder / "plain.jpg")])
    assert sorted(st.paths(row)) == [str(bad_folder / "plain copy.jpg"), str(bad_folder / "plain.jpg")]
    # The exact file names come back, whatever their characters or length.
    names = {Path(p).name for r in range(len(st)) for p in st.paths(r)}
    assert "with space and ünïcødé 画像.png" in names and "n" * 246 + ".png" in names

    # A second run retries nothing that did not change, featurizes nothing again, and still completes.
    again = featurizer.extract([bad_folder], store)
    assert again.new == 0 and again.unchanged_failures == len(refused)


# ------------------------------------------------------------------------------------- decode memory


def test_a_file_over_the_decode_memory_budget_fails_with_its_reason_and_the_run_goes_on(tmp_path, monkeypatch):
    from stylesift.featurizer.extract import ordered_map

    monkeypatch.setattr(I, "_BUDGET", I.DecodeBudget(64 * 2**20))
    big = tmp_path / "big_rgba.png"
    Image.new("RGBA", (5000, 4000), (*RED, 128)).save(big)  # 80 MB decoded, more with its RGB copy
    small = tmp_path / "small.png"
    Image.new("RGB", (300, 200), BLUE).save(small)
    items = list(ordered_map(prepare_file, [big, small, big, small], threads=2, window=4))
    for item in items[::2]:
        assert item.image is None and item.error.startswith(f"{big}: ")
        assert re.search(r"needs about [\d,]+ MiB of memory, more than the decode memory budget of 64 MiB "
                         r"\(raise it with --decode-memory", item.error), item.error
    for item in items[1::2]:
        assert item.error is None and near(BLUE, 2)(item.image)
    assert I.decode_memory().used == 0 and 0 < I.decode_memory().peak <= 64 * 2**20


def test_the_budget_is_shared_by_all_decode_threads():
    budget = I.DecodeBudget(100)
    holding, release, order = threading.Event(), threading.Event(), []

    def first():
        with budget.reserve(80):
            order.append("first in")
            holding.set()
            release.wait(5)
        order.append("first out")

    def second():
        holding.wait(5)
        with budget.reserve(50):  # 80 + 50 > 100: waits for the first to finish
            order.append("second in")

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    holding.wait(5)
    release.set()
    for t in threads:
        t.join(5)
    assert order == ["first in", "first out", "second in"] and budget.peak == 80 and budget.used == 0
    with pytest.raises(ImageError, match="more than the decode memory budget"):
        with budget.reserve(101, "x.png"):
            pass


def test_a_webp_is_measured_from_its_header_before_libwebp_allocates_its_canvases(tmp_path):
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), RED).save(buf, "WEBP", lossless=True)
    data = bytearray(buf.getvalue())
    assert data[12:16] == b"VP8L" and data[20] == 0x2F
    assert I._webp_canvas(io.BytesIO(bytes(data)))[:2] == (64, 64)

    def with_size(w, h):
        patched = bytearray(data)
        bits = int.from_bytes(patched[21:25], "little") & ~((1 << 28) - 1)
        patched[21:25] = (bits | (w - 1) | (h - 1) << 14).to_bytes(4, "little")
        return bytes(patched)

    path = tmp_path / "claims_16383x6100.webp"  # ~1.6 GB to decode: over the 1 GiB default
    path.write_bytes(with_size(16383, 6100))
    with pytest.raises(ImageError, match=r"needs about 1,[56]\d\d MiB of memory, more than the decode memory budget"):
        load_image(path)
    path.write_bytes(with_size(16383, 16383))
    with pytest.raises(ImageError, match="16383×16383 pixels is more than the limit"):
        load_image(path)


def test_decode_estimates_cover_mode_and_conversion_copies():
    size = (1000, 800)
    need = {mode: I.decode_bytes(Image.new(mode, size)) for mode in ("L", "RGB", "RGBA", "LA", "I;16", "F")}
    pixels = size[0] * size[1]
    assert need["RGB"] >= 4 * pixels and need["RGBA"] >= need["RGB"] + 4 * pixels  # image + its RGB copy
    assert need["LA"] >= need["RGBA"]  # LA is converted to RGBA first
    assert need["F"] > need["I;16"] > need["L"]


def test_progressive_and_multi_scan_jpegs_reserve_their_coefficient_buffers(tmp_path):
    picture = Image.new("RGB", (1000, 800), GREEN)
    for name, kw in {"baseline": {}, "progressive": {"progressive": True}}.items():
        picture.save(tmp_path / f"{name}.jpg", quality=90, subsampling=0, **kw)
    with Image.open(io.BytesIO((tmp_path / "baseline.jpg").read_bytes())) as img:
        assert I._jpeg_coefficient_bytes(img, io.BytesIO((tmp_path / "baseline.jpg").read_bytes())) == 0
    data = (tmp_path / "progressive.jpg").read_bytes()
    with Image.open(io.BytesIO(data)) as img:
        # 4:4:4: three components of 125 × 100 blocks of 64 two-byte coefficients
        assert I._jpeg_coefficient_bytes(img, io.BytesIO(data)) == 125 * 100 * 3 * 64 * 2
    # a baseline file with a second scan (as a non-interleaved encoder writes) is buffered too
    base = (tmp_path / "baseline.jpg").read_bytes()
    two_scans = base[:-2] + base[base.index(b"\xff\xda"):]
    with Image.open(io.BytesIO(two_scans)) as img:
        assert I._jpeg_coefficient_bytes(img, io.BytesIO(two_scans)) == 125 * 100 * 3 * 64 * 2
    budget = I.DecodeBudget(64 * 2**20)
    assert load_image(tmp_path / "progressive.jpg", budget=budget).mean() > 0 and budget.peak >= 125 * 100 * 3 * 128
