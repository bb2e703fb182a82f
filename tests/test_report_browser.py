"""The contact sheet in a real browser: headless Chromium loads it, every image decodes, no page errors.

Chromium is driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``: fd 3 in,
fd 4 out, NUL-separated JSON), so no websocket or browser-automation package is needed. Set
``STYLESIFT_SCREENSHOTS=DIR`` to keep the full-page screenshot for a look by eye.
"""

from __future__ import annotations

import base64
import io
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from helpers.fake_store import ArrayStore
from PIL import Image

from stylesift.review.demo_data import augment, available_photos, render_snapshot
from stylesift.review.report import write_report

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--remote-debugging-pipe", "--window-size=1280,900", "--hide-scrollbars", "about:blank"]
ERROR_EVENTS = ("Runtime.exceptionThrown", "Network.loadingFailed")


def chromium_binary() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    pytest.fail("headless Chromium is needed for this test: `apt-get install chromium` (the README's test command does it)")


class Chromium:
    """A headless Chromium process and one page, driven over the DevTools protocol on a pipe."""

    def __init__(self, binary: str, timeout: float = 60):
        self.timeout = timeout
        self.profile = tempfile.mkdtemp(prefix="stylesift-chromium-")  # a new empty profile each time
        to_child_r, self._w = os.pipe()
        self._r, from_child_w = os.pipe()

        def wire_pipes():
            # dup first: a pipe end may already sit on fd 3 or 4, and dup2 onto itself keeps CLOEXEC.
            r, w = os.dup(to_child_r), os.dup(from_child_w)
            os.dup2(r, 3)
            os.dup2(w, 4)

        self.proc = subprocess.Popen([binary, *FLAGS, f"--user-data-dir={self.profile}"], preexec_fn=wire_pipes,
                                     close_fds=False, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        os.close(to_child_r)
        os.close(from_child_w)
        self._buf, self._id, self.events = b"", 0, []
        page = next(t for t in self.send("Target.getTargets")["targetInfos"] if t["type"] == "page")
        self.session = self.send("Target.attachToTarget", {"targetId": page["targetId"], "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.send(f"{domain}.enable", session=True)

    def send(self, method: str, params: dict | None = None, session: bool = False) -> dict:
        self._id += 1
        message = {"id": self._id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = self.session
        os.write(self._w, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._read()
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]
            self.events.append(reply)

    def wait_for(self, event: str) -> dict:
        for i, seen in enumerate(self.events):
            if seen.get("method") == event:
                return self.events.pop(i)
        while True:
            message = self._read()
            if message.get("method") == event:
                return message
            self.events.append(message)

    def evaluate(self, expression: str):
        result = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True}, session=True)
        assert "exceptionDetails" not in result, result
        return result["result"]["value"]

    def errors(self) -> list[dict]:
        """Exceptions, failed loads, console errors and browser log errors seen so far."""
        out = []
        for e in self.events:
            method, params = e.get("method"), e.get("params", {})
            if method in ERROR_EVENTS or (method == "Log.entryAdded" and params["entry"]["level"] == "error") or (
                    method == "Runtime.consoleAPICalled" and params["type"] == "error"):
                out.append(e)
        return out

    def _read(self) -> dict:
        deadline = time.monotonic() + self.timeout
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._r], [], [], left)[0]:
                raise TimeoutError(f"Chromium did not answer within {self.timeout} s")
            chunk = os.read(self._r, 1 << 20)
            if not chunk:
                raise RuntimeError(f"Chromium exited (code {self.proc.poll()})")
            self._buf += chunk
        raw, self._buf = self._buf.split(b"\0", 1)
        return json.loads(raw)

    def close(self) -> None:
        try:
            self.send("Browser.close")
        except (OSError, RuntimeError, TimeoutError):
            pass
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._w)
        os.close(self._r)
        shutil.rmtree(self.profile, ignore_errors=True)


@pytest.fixture(scope="module")
def browser():
    chrome = Chromium(chromium_binary())
    yield chrome
    chrome.close()


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """A report over real photo crops and rendered snapshots, with evidence, a borderline band and failures."""
    folder = tmp_path_factory.mktemp("browser")
    rng = np.random.default_rng(7)
    photos = [Image.open(p).convert("RGB") for p in list(available_photos().values())[:4]]
    paths, is_photo = [], []
    for i in range(14):
        photo = i % 2 == 0
        img = augment(photos[i % len(photos)], rng, 240) if photo else render_snapshot(rng)[0]
        path = folder / f"img_{i:02d}.{'jpg' if photo else 'png'}"
        img.save(path)
        paths.append(path)
        is_photo.append(photo)
    train = [folder / f"train_{i}.jpg" for i in range(4)]
    for i, path in enumerate(train):
        augment(photos[i], rng, 240).save(path)
    features = rng.normal(size=(len(paths) + len(train), 64))
    store = ArrayStore(features, paths + train)
    scores = [0.9 - 0.02 * i if photo else 0.45 - 0.02 * i for i, photo in enumerate(is_photo)]
    rows = [{"path": str(p), "sha256": store.sha256[i], "score": s, "selected": s >= 0.5}
            for i, (p, s) in enumerate(zip(paths, scores))]
    rows[3]["path"] = str(folder / "moved_away.png")  # scored earlier, file gone since: a placeholder
    failures = [{"path": str(folder / "half.jpg"), "error": f"{folder / 'half.jpg'}: cannot decode: image file is truncated"}]
    summary = write_report(folder / "report.html", rows, failures=failures, method="two-class", threshold=0.5,
                           model="model.joblib", store=store, positive_sha256=store.sha256[len(paths):], borderline=5)
    return summary


def test_report_loads_in_chromium_with_every_image_decoded(browser, report):
    browser.send("Page.navigate", {"url": report.path.as_uri()}, session=True)
    browser.wait_for("Page.loadEventFired")
    images = browser.evaluate(
        "Array.from(document.images).map(i => ({alt: i.alt, ok: i.complete && i.naturalWidth > 0,"
        " w: i.naturalWidth, h: i.naturalHeight, shown: i.getBoundingClientRect().width}))")
    html = report.path.read_text()
    assert len(images) == html.count("<img ") == report.shown_selected + report.evidence + report.borderline - 1
    undecoded = [i["alt"] for i in images if not i["ok"]]
    assert not undecoded, f"images that did not decode: {undecoded}"
    assert all(i["shown"] > 0 for i in images)
    assert browser.errors() == []
    counts = browser.evaluate("({sel: document.querySelectorAll('#selected .card').length,"
                              " near: document.querySelectorAll('#borderline .card').length,"
                              " failed: document.querySelectorAll('#failed tbody tr').length,"
                              " placeholders: document.querySelectorAll('.noimg').length,"
                              " overflow: document.documentElement.scrollWidth - window.innerWidth})")
    assert counts == {"sel": report.selected, "near": report.borderline, "failed": 1, "placeholders": 1, "overflow": 0}

    metrics = browser.send("Page.getLayoutMetrics", session=True)["cssContentSize"]
    shot = browser.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True}, session=True)
    png = base64.b64decode(shot["data"])
    with Image.open(io.BytesIO(png)) as img:
        assert img.size[1] >= metrics["height"] - 1
        pixels = np.asarray(img.convert("RGB"), dtype=np.float32)
    assert pixels.std() > 20  # not a blank page
    if keep := os.environ.get("STYLESIFT_SCREENSHOTS"):
        Path(keep).mkdir(parents=True, exist_ok=True)
        (Path(keep) / "report.png").write_bytes(png)


def test_chromium_reports_a_broken_image(browser, report, tmp_path):
    """The check above can fail: a page with a corrupt embedded image is caught."""
    html = report.path.read_text()
    start = html.index('src="data:image/jpeg;base64,') + len('src="data:image/jpeg;base64,')
    broken = tmp_path / "broken.html"
    broken.write_text(html[:start] + "AAAA" + html[start + 4:start + 200] + html[html.index('"', start):])
    browser.send("Page.navigate", {"url": broken.as_uri()}, session=True)
    browser.wait_for("Page.loadEventFired")
    bad = browser.evaluate("Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0)).length")
    assert bad == 1


def test_a_sheet_card_opens_its_1to1_crop_beside_the_thumbnail(browser, tmp_path):
    from helpers.pictures import write_pictures

    from stylesift.review.report import CROP_PX

    paths = write_pictures(tmp_path / "pics", 4, size=(640, 480), seed=2)
    rows = [{"path": str(p), "sha256": None, "score": 0.9 - i / 10, "selected": i < 2} for i, p in enumerate(paths)]
    sheet = write_report(tmp_path / "crops.html", rows, threshold=0.75, crop_px=CROP_PX)
    known = len(browser.errors())
    browser.send("Page.navigate", {"url": sheet.path.as_uri()}, session=True)
    browser.wait_for("Page.loadEventFired")
    assert browser.evaluate("document.querySelectorAll('.card > details.crop').length") == 4
    browser.evaluate("document.querySelector('.card > details.crop > summary').click(), true")  # a person's click
    deadline = time.monotonic() + 20
    while not browser.evaluate("(() => { const i = document.querySelector('details.crop[open] img.crop');"
                               " return i.complete && i.naturalWidth > 0; })()"):
        assert time.monotonic() < deadline, "the opened crop did not decode"
        time.sleep(0.1)
    shown = browser.evaluate(
        "(() => { const c = document.querySelector('details.crop[open]').closest('.card');"
        " const t = c.querySelector(':scope > img').getBoundingClientRect(), i = c.querySelector('img.crop');"
        " const r = i.getBoundingClientRect();"
        " return {w: i.naturalWidth, h: i.naturalHeight, shown: r.width, beside: r.left >= t.right && r.top < t.bottom,"
        " overflow: document.documentElement.scrollWidth - window.innerWidth}; })()")
    assert shown == {"w": CROP_PX, "h": CROP_PX, "shown": CROP_PX, "beside": True, "overflow": 0}
    assert browser.errors()[known:] == []
