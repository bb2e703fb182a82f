"""The review page in a real browser: the system Chromium driven by Playwright (its own browsers are never
downloaded), verdicts given with the keyboard, seen again after a reload, and found in the store.

``STYLESIFT_SCREENSHOTS=DIR`` keeps the screenshots (before and after the reload)."""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
sync_api = pytest.importorskip("playwright.sync_api")

from helpers.review_world import build_round, running  # noqa: E402

from stylesift.featurizer.store import FeatureStore  # noqa: E402

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--no-first-run"]

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs the system chromium (apt-get install chromium)")


@pytest.fixture
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


SHOWN = "i => !i.closest('details:not([open])')"  # a closed group's thumbnails load when it is opened


def _all_images_loaded(page) -> None:
    # Thumbnails load lazily: scroll through the page so that every one is asked for.
    page.evaluate("window.scrollTo(0, document.body.scrollHeight)")
    _until(page, f"[...document.images].filter({SHOWN}).every(i => i.complete)")
    page.evaluate("window.scrollTo(0, 0)")


def _until(page, expression: str, seconds: float = 20) -> None:
    # page.wait_for_function evaluates a string, which the page's Content-Security-Policy forbids.
    deadline = time.time() + seconds
    while not page.evaluate(expression):
        assert time.time() < deadline, f"still false after {seconds} s: {expression}"
        time.sleep(0.1)


def _shots(tmp_path) -> Path:
    out = Path(os.environ.get("STYLESIFT_SCREENSHOTS") or tmp_path / "shots")
    out.mkdir(parents=True, exist_ok=True)
    return out


def test_keyboard_verdicts_survive_a_reload_and_reach_the_store(tmp_path, browser):
    rnd, store, _, _ = build_round(tmp_path)
    shots = _shots(tmp_path)
    problems = []
    with running(rnd) as base:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type in ("error", "warning") else None)
        page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
        page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url}"))
        page.goto(f"{base}/?token={rnd.token}")
        page.wait_for_selector("#picks .card")
        picks = rnd.state()["sections"]["picks"]
        assert len(picks) >= 2
        first, second = (page.locator(f'.card[data-id="{i}"]') for i in picks[:2])
        assert "current" in first.get_attribute("class")  # the first pick has the keyboard focus
        page.keyboard.press("a")  # positive, then focus moves on
        page.keyboard.press("n")  # note on the second card
        page.keyboard.type("too dark")
        page.keyboard.press("Enter")
        page.keyboard.press("r")  # negative
        sync_api.expect(first.locator(".saved")).to_have_text("saved: good (tester)")
        sync_api.expect(second.locator(".saved")).to_contain_text("saved: plain")
        sync_api.expect(page.locator("#t-accepted")).to_have_text("1")
        sync_api.expect(page.locator("#t-rejected")).to_have_text("1")
        sync_api.expect(page.locator("#t-precision")).to_have_text("0.50")
        _all_images_loaded(page)
        assert page.evaluate(f"[...document.querySelectorAll('#main img')].filter({SHOWN}).every(i => i.naturalWidth > 0)")
        page.screenshot(path=str(shots / "review-before-reload.png"), full_page=True)

        page.reload()
        page.wait_for_selector("#picks .card")
        sync_api.expect(first).to_have_class(re.compile(r"\bv-pos\b"))
        sync_api.expect(second).to_have_class(re.compile(r"\bv-neg\b"))
        sync_api.expect(second.locator(".saved")).to_contain_text("too dark")
        sync_api.expect(page.locator("#t-verdicts")).to_have_text("2")
        group = page.locator("details.members")
        assert group.count() == 1 and "1 near-duplicate" in group.inner_text()
        _all_images_loaded(page)
        page.screenshot(path=str(shots / "review-after-reload.png"), full_page=True)
        overflow = page.evaluate("document.documentElement.scrollWidth > document.documentElement.clientWidth")
        page.close()
    assert not overflow, "the page scrolls sideways"
    assert problems == []
    log = FeatureStore(store).verdicts()
    assert [(v.sha256, v.label, v.note) for v in log] == [
        (rnd.items[picks[0]]["sha256"], "good", ""), (rnd.items[picks[1]]["sha256"], "plain", "too dark")]


def test_the_page_says_when_a_verdict_was_not_saved(tmp_path, browser):
    rnd, store, _, _ = build_round(tmp_path)
    with running(rnd) as base:
        page = browser.new_page()
        page.goto(f"{base}/?token={rnd.token}")
        page.wait_for_selector("#picks .card")
        rnd.store = tmp_path / "gone" / "store.h5"  # the store vanished under the server
        page.keyboard.press("a")
        pick = rnd.sections["picks"][0]
        sync_api.expect(page.locator(f'.card[data-id="{pick}"] .saved')).to_contain_text("NOT saved")
        page.close()
    assert FeatureStore(store).verdicts() == []


def test_a_verdict_given_while_an_extract_holds_the_store_is_saved_once_it_is_free(tmp_path, browser):
    rnd, store, _, _ = build_round(tmp_path)
    rnd.lock_timeout = 0.3
    with running(rnd) as base:
        page = browser.new_page()
        page.goto(f"{base}/?token={rnd.token}")
        page.wait_for_selector("#picks .card")
        pick = rnd.sections["picks"][0]
        saved = page.locator(f'.card[data-id="{pick}"] .saved')
        writer = FeatureStore(store, "a")  # what a daily extract does for its whole run
        try:
            page.keyboard.press("a")
            sync_api.expect(saved).to_contain_text("NOT saved yet: the store is busy")
            assert FeatureStore(store).verdicts() == []
        finally:
            writer.close()
        sync_api.expect(saved).to_have_text("saved: good (tester)", timeout=20000)
        page.close()
    assert [v.label for v in FeatureStore(store).verdicts()] == ["good"]


def test_a_card_says_seen_before_with_its_label_as_text(tmp_path, browser):
    best, *_ = build_round(tmp_path / "probe")
    pick = best.sections["picks"][0]
    label = "<img src=x onerror=document.title='owned'>"
    mark = {"sha256": "ab" * 32, "path": "/feed/old.jpg", "label": label, "date": "2026-11-02", "similarity": 0.97}
    rnd, *_ = build_round(tmp_path, seen={pick: mark})
    with running(rnd) as base:
        page = browser.new_page()
        page.goto(f"{base}/?token={rnd.token}")
        page.wait_for_selector(f'.card[data-id="{pick}"]')
        card = page.locator(f'.card[data-id="{pick}"]')
        sync_api.expect(card.locator(".seen")).to_have_text(f"seen before: {label} on 2026-11-02")
        assert page.locator(f'#picks .card[data-id="{pick}"]').count() == 0  # shown, but not among the picks
        assert page.title() != "owned"
        page.close()


def test_more_like_this_adds_a_section_of_stored_images(tmp_path, browser):
    import numpy as np

    rnd, store, _, _ = build_round(tmp_path)
    pick = rnd.sections["picks"][0]
    st = FeatureStore(store)
    near = st.features([st.row_of(rnd.items[pick]["sha256"])])[0]
    with FeatureStore(store, "a") as w:
        feed = np.abs(near + np.random.default_rng(5).normal(0, 0.2, (5, near.size)))
        w.add([f"{i:064x}" for i in range(5)], feed.astype(np.float32), [[f"/feed/{i}.jpg"] for i in range(5)])
    with running(rnd) as base:
        page = browser.new_page()
        page.goto(f"{base}/?token={rnd.token}")
        page.wait_for_selector(f'#picks .card[data-id="{pick}"]')
        page.locator(f'#picks .card[data-id="{pick}"] button.more').click()
        section = page.locator(f"#more-{pick}")
        sync_api.expect(section.locator("h2")).to_contain_text("More like")
        assert len(rnd.more[pick]) >= 5
        sync_api.expect(section.locator(".card")).to_have_count(len(rnd.more[pick]))
        page.close()


def test_the_1to1_control_shows_the_original_pixels_beside_the_thumbnail(tmp_path, browser):
    from stylesift.review.round import CROP_PX

    rnd, *_ = build_round(tmp_path, size=(800, 600))
    problems = []
    with running(rnd) as base:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type in ("error", "warning") else None)
        page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
        page.goto(f"{base}/?token={rnd.token}")
        pick = rnd.sections["picks"][0]
        card = page.locator(f'.card[data-id="{pick}"]')
        card.wait_for()
        assert card.locator("img.crop").count() == 0  # nothing is fetched before it is asked for
        card.locator("button.zoom").click()
        crop = card.locator("img.crop")
        crop.wait_for()
        _until(page, "(() => { const i = document.querySelector('img.crop'); return i.complete && i.naturalWidth > 0; })()")
        size = crop.evaluate("i => [i.naturalWidth, i.naturalHeight, i.getBoundingClientRect().width]")
        thumb = card.locator("img.thumb").bounding_box()
        shown = crop.bounding_box()
        assert size == [CROP_PX, CROP_PX, CROP_PX]  # the crop's own pixels, one per CSS pixel
        assert shown["x"] >= thumb["x"] + thumb["width"] and abs(shown["y"] - thumb["y"]) < 2  # beside the thumbnail
        overflow = page.evaluate("document.documentElement.scrollWidth > document.documentElement.clientWidth")
        page.keyboard.press("c")  # the keyboard hides it again
        sync_api.expect(card.locator(".cropbox")).to_be_hidden()
        page.close()
    assert not overflow, "the page scrolls sideways"
    assert problems == []
