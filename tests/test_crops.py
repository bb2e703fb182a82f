"""1:1 crops (#19 item 4): the original's own pixels for reviewers, through the bounded decoder, on the page and the sheet."""

from __future__ import annotations

import base64
import hashlib
import io
import re
from types import SimpleNamespace

import numpy as np
import pytest
from helpers.pictures import write_pictures
from PIL import Image

from stylesift.featurizer import images
from stylesift.featurizer.images import DecodeBudget, ImageError, load_crop
from stylesift.review.report import CROP_PX, crop_jpeg, write_report, write_score_report


def _pattern(width: int, height: int) -> np.ndarray:
    """Every pixel says where it is (red: x, green: y, modulo 256) over a checkerboard of 1-px squares (blue)."""
    yy, xx = np.mgrid[0:height, 0:width]
    return np.stack([xx % 256, yy % 256, (xx + yy) % 2 * 255], axis=-1).astype(np.uint8)


def _png(path, array):
    Image.fromarray(array).save(path)
    return path


@pytest.fixture()
def small_budget(monkeypatch):
    budget = DecodeBudget(64 * 2**20)
    monkeypatch.setattr(images, "_BUDGET", budget)
    return budget


# ----------------------------------------------------------------------------- load_crop
def test_a_crop_is_the_centre_of_the_image_pixel_for_pixel(tmp_path):
    array = _pattern(1001, 703)
    crop = np.asarray(load_crop(_png(tmp_path / "p.png", array), 512))
    left, top = (1001 - 512) // 2, (703 - 512) // 2
    assert crop.shape == (512, 512, 3)
    np.testing.assert_array_equal(crop, array[top:top + 512, left:left + 512])  # not resized, not shifted


def test_a_jpeg_is_cropped_from_its_full_size_decode_not_the_draft_one(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "big.jpg"
    Image.fromarray(rng.integers(0, 256, (1800, 2400, 3), dtype=np.uint8)).save(path, quality=90)
    with Image.open(path) as img:
        full = np.asarray(img.convert("RGB"))
    crop = np.asarray(load_crop(path, 300))
    np.testing.assert_array_equal(crop, full[750:1050, 1050:1350])  # a draft (1/2, 1/4...) decode would differ


def test_a_crop_is_taken_after_exif_orientation(tmp_path):
    img = np.zeros((100, 400, 3), np.uint8)
    img[:, :200] = (220, 20, 20)  # left half red
    img[:, 200:] = (20, 20, 220)  # right half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # shown turned 90° clockwise: 100 wide, 400 high, the red half on top
    path = tmp_path / "rot.jpg"
    Image.fromarray(img).save(path, exif=exif, quality=95)
    crop = np.asarray(load_crop(path, 200), dtype=np.float64)
    assert crop.shape == (200, 100, 3)  # the whole width (100 < 200), 200 rows of the 400
    top, bottom = crop[:90].mean(axis=(0, 1)), crop[110:].mean(axis=(0, 1))
    assert top[0] > 180 and top[2] < 60
    assert bottom[2] > 180 and bottom[0] < 60


def test_an_image_smaller_than_the_crop_is_given_whole_and_a_thin_one_by_its_centre(tmp_path):
    small = _pattern(100, 80)
    np.testing.assert_array_equal(np.asarray(load_crop(_png(tmp_path / "s.png", small), 512)), small)
    thin = _pattern(900, 60)
    crop = np.asarray(load_crop(_png(tmp_path / "t.png", thin), 512))
    np.testing.assert_array_equal(crop, thin[:, 194:706])


def test_a_crop_reserves_the_full_decode_from_the_budget_and_gives_it_back(tmp_path, small_budget):
    path = tmp_path / "p.png"
    _png(path, _pattern(1200, 900))
    load_crop(path, 256)
    assert small_budget.peak >= 1200 * 900 * 4 and small_budget.used == 0  # the whole picture, not the crop


def test_a_crop_bigger_than_the_whole_budget_is_refused_unread(tmp_path, small_budget):
    path = tmp_path / "huge.png"
    Image.new("RGBA", (4000, 4000), (10, 200, 30, 255)).save(path)  # 64 MB decoded
    with pytest.raises(ImageError, match="budget"):
        load_crop(path, 256)
    assert small_budget.peak == 0


def test_a_crop_keeps_the_pixel_file_size_and_format_limits(tmp_path, monkeypatch):
    path = _png(tmp_path / "p.png", _pattern(200, 200))
    monkeypatch.setattr(images, "MAX_PIXELS", 10_000)
    with pytest.raises(ImageError, match="more than the limit"):
        load_crop(path, 64)
    monkeypatch.undo()
    monkeypatch.setattr(images, "MAX_FILE_BYTES", 100)
    with pytest.raises(ImageError, match="larger than"):
        load_crop(path, 64)
    monkeypatch.undo()
    pcx = tmp_path / "a.jpg"
    Image.new("RGB", (64, 64), (1, 2, 3)).save(pcx, format="PCX")  # a format extract does not decode
    with pytest.raises(ImageError):
        load_crop(pcx, 32)
    assert load_crop(path, 64).size == (64, 64)  # the same file within the limits


def test_with_its_sha256_a_crop_shows_the_scored_content_or_nothing(tmp_path):
    path = _png(tmp_path / "p.png", _pattern(80, 80))
    scored = hashlib.sha256(path.read_bytes()).hexdigest()
    assert load_crop(path, 32, sha256=scored).size == (32, 32)
    _png(path, _pattern(81, 80))  # replaced after scoring
    with pytest.raises(ImageError, match="changed since it was scored"):
        load_crop(path, 32, sha256=scored)
    path.unlink()
    with pytest.raises(ImageError, match="cannot be read"):
        load_crop(path, 32, sha256=scored)


def test_a_crop_of_no_pixels_is_refused():
    with pytest.raises(ValueError, match="at least 1 pixel"):
        load_crop("never-read.png", 0)


# ----------------------------------------------------------------------------- the contact sheet
def _rows(paths, scores, threshold):
    return [{"path": str(p), "sha256": hashlib.sha256(p.read_bytes()).hexdigest(), "score": s, "selected": s >= threshold}
            for p, s in zip(paths, scores)]


def _crops(page: str) -> list[str]:
    return re.findall(r'<details class="crop"><summary[^>]*>1:1</summary><img src="(data:image/jpeg;base64,[^"]+)"', page)


def _decoded(uri: str) -> np.ndarray:
    with Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))) as img:
        return np.asarray(img.convert("RGB"), dtype=np.float64)


def test_each_card_of_the_sheet_opens_a_crop_of_its_own_original(tmp_path):
    paths = write_pictures(tmp_path / "pics", 6, size=(200, 150), seed=4)
    summary = write_report(tmp_path / "r.html", _rows(paths, np.linspace(1, 0, 6), 0.5), threshold=0.5, crop_px=64)
    page = summary.path.read_text()
    crops = _crops(page)
    assert page.count('<figure class="card') == 6 == len(crops) == summary.crops
    names = re.findall(r'class="name" title="[^"]*">([^<]+)<', page)
    for name, uri in zip(names, crops):
        with Image.open(next(p for p in paths if p.name == name)) as img:
            centre = np.asarray(img.convert("RGB"), dtype=np.float64)[43:107, 68:132]
        crop = _decoded(uri)
        assert crop.shape == (64, 64, 3) and np.abs(crop - centre).mean() < 6  # that card's centre, 1:1
    assert not re.search(r"url\(|@import|<script|<link", page)  # still one self-contained file


def test_the_sheet_has_no_crops_unless_asked_and_the_score_sheet_asks(tmp_path):
    paths = write_pictures(tmp_path / "pics", 3, size=(300, 200), seed=5)
    rows = _rows(paths, [0.9, 0.7, 0.2], 0.5)
    plain = write_report(tmp_path / "plain.html", rows, threshold=0.5)
    assert plain.crops == 0 and 'class="crop"' not in plain.path.read_text()
    result = SimpleNamespace(rows=rows, failed=[], selection={"rule": "threshold", "threshold": 0.5})
    bundle = SimpleNamespace(method="two-class", threshold=0.5, positive_label="good", negative_label="plain",
                             train_sha256=np.array([], dtype=str), train_labels=np.array([], dtype=str))
    sheet = write_score_report(tmp_path / "score.html", result, bundle, tmp_path / "no-store.h5")
    crops = _crops(sheet.path.read_text())
    assert sheet.crops == len(crops) == 3
    assert all(_decoded(uri).shape == (200, CROP_PX, 3) for uri in crops)  # 256 of the 300 columns, every row


def test_a_card_whose_file_changed_or_went_gets_a_crop_placeholder(tmp_path):
    paths = write_pictures(tmp_path / "pics", 3, size=(120, 90), seed=6)
    rows = _rows(paths, [0.9, 0.8, 0.7], 0.5)
    rows[1]["path"] = str(tmp_path / "moved-away.jpg")
    write_pictures(tmp_path / "other", 1, size=(120, 90), seed=9)[0].replace(paths[2])  # not the scored content
    summary = write_report(tmp_path / "r.html", rows, threshold=0.5, crop_px=64)
    page = summary.path.read_text()
    assert summary.crops == len(_crops(page)) == 1
    assert page.count('class="nocrop"') == 2


def test_sheet_crops_are_computed_in_order_with_a_bounded_number_waiting():
    from stylesift.review.report import _in_order

    started = []

    def work(i):
        started.append(i)
        return i * i

    seen = []
    for value in _in_order(work, list(range(40)), 3):
        assert len(started) - len(seen) <= 4  # at most workers + 1 results held at any time
        seen.append(value)
    assert seen == [i * i for i in range(40)]


def test_crop_jpeg_keeps_colour_at_full_resolution(tmp_path):
    array = _pattern(300, 300)
    data = crop_jpeg(_png(tmp_path / "p.png", array), 100)
    with Image.open(io.BytesIO(data)) as img:
        assert img.format == "JPEG" and img.size == (100, 100)
        assert img.layer[0][1:3] == (1, 1)  # luma sampled like chroma: 4:4:4, colour noise not smoothed away


# ----------------------------------------------------------------------------- the review page
@pytest.fixture
def world(tmp_path):
    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")
    from helpers.review_world import build_round

    return build_round(tmp_path, size=(800, 600))


def test_the_review_server_serves_a_1to1_crop_by_id_only(world):
    from helpers.review_world import call, running

    from stylesift.review.round import CROP_PX as PAGE_CROP_PX
    from stylesift.review.round import CROP_QUALITY

    rnd, _, _, pictures = world
    with running(rnd) as base:
        assert call(f"{base}/api/crop/0")[0] == 403  # the token guards it like every other request
        status, body = call(f"{base}/api/crop/0?token={rnd.token}")
        assert status == 200 and body[:2] == b"\xff\xd8"
        with Image.open(io.BytesIO(body)) as img:
            assert img.size == (PAGE_CROP_PX, PAGE_CROP_PX)
        assert body == crop_jpeg(rnd.items[0]["path"], PAGE_CROP_PX, quality=CROP_QUALITY)
        thumb = call(f"{base}/img/0?token={rnd.token}")[1]
        with Image.open(io.BytesIO(thumb)) as img:
            assert max(img.size) < PAGE_CROP_PX  # the thumbnail is the small one
        assert call(f"{base}/api/crop/0?token={rnd.token}&path=/etc/passwd")[1] == body  # a path is never read
        assert call(f"{base}/api/crop/{len(rnd.items)}?token={rnd.token}")[0] == 404
        for probe in ("/api/crop/..%2f..%2fetc%2fpasswd", "/api/crop/%2fetc%2fpasswd", "/api/crop/-1",
                      f"/api/crop/{pictures[0]}"):
            assert call(f"{base}{probe}?token={rnd.token}")[0] in (404, 422), probe


def test_a_crop_is_decoded_once_in_a_decode_slot_and_never_of_a_replaced_file(world):
    from helpers.review_world import call, running

    rnd, _, _, pictures = world
    entered = []

    class Slots:
        def __enter__(self):
            entered.append(1)

        def __exit__(self, *exc):
            return False

    rnd._decoding = Slots()  # the thumbnails' decode slots
    with running(rnd) as base:
        first = call(f"{base}/api/crop/1?token={rnd.token}")
        pictures[1].unlink()  # gone since: the cached crop is still the scored content
        assert call(f"{base}/api/crop/1?token={rnd.token}") == first and first[0] == 200
        assert len(entered) == 1
        write_pictures(pictures[2].parent / "other", 1, size=(800, 600), seed=11)[0].replace(pictures[2])
        status, answer = call(f"{base}/api/crop/2?token={rnd.token}")
        assert status == 404 and "no 1:1 crop" in answer["error"]


def test_each_card_of_the_page_has_a_1to1_control(world):
    from helpers.review_world import call, running

    rnd, *_ = world
    with running(rnd) as base:
        page = call(f"{base}/?token={rnd.token}")[1].decode()
    assert 'el("button", "zoom", "1:1")' in page and '"/api/crop/" + id' in page
    assert 'k === "c") toggleCrop(id)' in page and "<kbd>C</kbd> 1:1 crop" in page
