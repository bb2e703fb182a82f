"""The HTML contact sheet: sections, order, evidence, failures, and that it is one self-contained file."""

from __future__ import annotations

import base64
import hashlib
import io
import re

import numpy as np
import pytest
from helpers.fake_store import ArrayStore
from helpers.pictures import write_pictures
from PIL import Image

from stylesift.review.report import nearest_positives, thumbnail_data_uri, write_report


def _rows(paths, scores, threshold):
    return [{"path": str(p), "sha256": hashlib.sha256(p.read_bytes()).hexdigest(), "score": s, "selected": s >= threshold}
            for p, s in zip(paths, scores)]


def _sections(page: str) -> dict[str, str]:
    return {m.group(1): m.group(2) for m in re.finditer(r'<section id="(\w+)">(.*?)</section>', page, re.S)}


@pytest.fixture(scope="module")
def pictures(tmp_path_factory):
    return write_pictures(tmp_path_factory.mktemp("report") / "pics", 10, seed=3)


def test_sections_order_and_summary(pictures, tmp_path):
    scores = [0.91, 0.15, 0.72, 0.55, 0.05, 0.99, 0.61, 0.33, 0.58, 0.20]
    rows = _rows(pictures, scores, threshold=0.6)
    rows.append({"path": str(tmp_path / "gone.jpg"), "sha256": None, "score": None, "selected": False,
                 "error": f"{tmp_path / 'gone.jpg'}: no such file"})
    failures = [{"path": "/x/half.jpg", "error": "/x/half.jpg: cannot decode: image file is truncated"}]
    summary = write_report(tmp_path / "out" / "r.html", rows, failures=failures, method="two-class",
                           threshold=0.6, borderline=3)
    page = summary.path.read_text()
    assert (summary.scored, summary.selected, summary.failed, summary.borderline) == (10, 4, 2, 3)

    sections = _sections(page)
    assert list(sections) == ["selected", "borderline", "failed"]
    selected_names = re.findall(r'class="name" title="[^"]*">([^<]+)<', sections["selected"])
    by_score = sorted(zip(scores, [p.name for p in pictures]), reverse=True)
    assert selected_names == [n for s, n in by_score if s >= 0.6]
    band = re.findall(r'class="name" title="[^"]*">([^<]+)<', sections["borderline"])
    assert band == [n for s, n in by_score if s < 0.6][:3]  # the best of the rest, just below the cut
    shown = [float(x) for x in re.findall(r'class="score">([0-9.]+)<', page)]
    assert shown == sorted(shown, reverse=True)
    # The reason without the path repeated, and the path of each failure.
    assert "cannot decode: image file is truncated</td>" in sections["failed"]
    assert "no such file</td>" in sections["failed"] and "gone.jpg" in sections["failed"]
    header = page.split("<main>")[0]
    assert "two-class" in header and ">0.6<" in header
    for value, label in ((10, "scored"), (4, "selected"), (2, "failed")):
        assert f"<b>{value}</b><span>{label}</span>" in header


def test_self_contained_and_every_thumbnail_decodes(pictures, tmp_path):
    rows = _rows(pictures, np.linspace(1, 0, len(pictures)), threshold=0.5)
    page = write_report(tmp_path / "r.html", rows, threshold=0.5).path.read_text()
    sources = re.findall(r'(?:src|href)="([^"]*)"', page)
    assert len(sources) == 5 + 5  # selected + borderline (default band holds all 5 others)
    assert not re.search(r"url\(|@import|<script|<link", page)
    for src in sources:
        assert src.startswith("data:image/jpeg;base64,")
        with Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))) as img:
            img.load()
            assert max(img.size) <= 180


def test_names_are_escaped(tmp_path):
    path = write_pictures(tmp_path, 1)[0].rename(tmp_path / 'a<b>"x".jpg')
    rows = _rows([path], [0.9], threshold=0.5)
    failures = [{"path": "<script>alert(1)</script>.png", "error": "not an image <img src=x onerror=alert(1)>"}]
    page = write_report(tmp_path / "r.html", rows, failures=failures, threshold=0.5).path.read_text()
    assert "<script" not in page and "<img src=x" not in page
    assert "a&lt;b&gt;&quot;x&quot;.jpg" in page


def test_missing_file_gets_a_placeholder_not_an_error(pictures, tmp_path):
    rows = _rows(pictures[:2], [0.9, 0.8], threshold=0.5)
    rows[1]["path"] = str(tmp_path / "moved-away.jpg")
    summary = write_report(tmp_path / "r.html", rows, threshold=0.5)
    assert summary.missing_previews == [rows[1]["path"]]
    assert summary.path.read_text().count('class="noimg ') == 1


def test_selection_beyond_the_cap_is_counted(pictures, tmp_path):
    rows = _rows(pictures, np.linspace(1, 0.6, len(pictures)), threshold=0.5)
    summary = write_report(tmp_path / "r.html", rows, threshold=0.5, max_selected=4)
    page = summary.path.read_text()
    assert summary.shown_selected == 4 and summary.selected == 10
    assert "and 6 more selected images" in page
    assert "Nothing scored above" not in page


def test_thumbnail_keeps_aspect_and_applies_exif_orientation(tmp_path):
    img = Image.new("RGB", (400, 100), (200, 30, 30))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90°: the picture is displayed portrait
    path = tmp_path / "rot.jpg"
    img.save(path, exif=exif)
    data = base64.b64decode(thumbnail_data_uri(path, 120).split(",", 1)[1])
    with Image.open(io.BytesIO(data)) as thumb:
        assert thumb.size == (30, 120)


def test_nearest_positive_is_the_most_similar_other_positive(tmp_path):
    rng = np.random.default_rng(0)
    pos = rng.normal(size=(5, 16))
    queries = pos[[3, 1]] * 2.5 + rng.normal(scale=0.05, size=(2, 16))  # scaled: cosine ignores length
    store = ArrayStore(np.vstack([pos, queries]), [str(tmp_path / f"p{i}.jpg") for i in range(7)])
    positives = store.sha256[:5]
    found = nearest_positives(store, [store.sha256[5], store.sha256[6], store.sha256[2], "f" * 64], positives)
    assert found[store.sha256[5]].sha256 == store.sha256[3]
    assert found[store.sha256[6]].sha256 == store.sha256[1]
    assert found[store.sha256[5]].similarity > 0.99
    assert found[store.sha256[2]].sha256 != store.sha256[2]  # a training image is not its own evidence
    assert "f" * 64 not in found


def test_report_shows_evidence_for_selected_only(pictures, tmp_path):
    rng = np.random.default_rng(1)
    feats = rng.normal(size=(len(pictures), 32))
    feats[0] = feats[5] + rng.normal(scale=0.01, size=32)
    store = ArrayStore(feats, [str(p) for p in pictures])
    rows = [{"path": str(p), "sha256": store.sha256[i], "score": 1.0 - i / 10, "selected": i < 2}
            for i, p in enumerate(pictures)]
    positives = store.sha256[5:]
    summary = write_report(tmp_path / "r.html", rows, threshold=0.85, store=store, positive_sha256=positives)
    sections = _sections(summary.path.read_text())
    assert summary.evidence == 2
    assert sections["selected"].count('class="evidence"') == 2
    assert f"<b>{pictures[5].name}</b>" in sections["selected"]  # picture 0's near-duplicate
    assert "evidence" not in sections["borderline"]
