"""The review server against a hostile client and a busy store (hostile review, #23 items 5, 6, 10, 11)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
import urllib.error
import urllib.request

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from helpers.review_world import build_round, call, running  # noqa: E402
from PIL import Image  # noqa: E402

from stylesift.featurizer.store import FeatureStore  # noqa: E402


@pytest.fixture
def world(tmp_path):
    return build_round(tmp_path)


def post_raw(url, raw: bytes, token: str):
    req = urllib.request.Request(url, data=raw, headers={"Content-Type": "application/json", "X-Token": token})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_a_deep_an_oversized_or_a_boolean_body_is_a_clear_400_and_writes_nothing(world):
    rnd, store, *_ = world
    with running(rnd) as base:
        status, body = post_raw(f"{base}/api/verdict", b"[" * 30_000 + b"]" * 30_000, rnd.token)
        assert status == 400 and b"must be JSON" in body
        status, body = post_raw(f"{base}/api/verdict", b'{"note": "' + b"x" * 200_000 + b'"}', rnd.token)
        assert status == 413
        status, answer = call(f"{base}/api/verdict", data={"id": True, "verdict": "positive"}, token=rnd.token)
        assert status == 400 and "no image True" in answer["error"]
    assert FeatureStore(store).verdicts() == []


HOLD = textwrap.dedent("""
    import sys, time
    from stylesift.featurizer.store import FeatureStore
    with FeatureStore(sys.argv[1], "a"):
        print("held", flush=True)
        time.sleep(float(sys.argv[2]))
""")


def test_a_verdict_waiting_for_a_busy_store_does_not_hold_up_the_page(world):
    rnd, store, *_ = world
    rnd.lock_timeout = 3.0
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(store), "6"], stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline().strip() == b"held"
        with running(rnd) as base:
            done = {}

            def give():
                done["verdict"] = call(f"{base}/api/verdict", data={"id": 0, "verdict": "positive"}, token=rnd.token)
                done["verdict_at"] = time.monotonic()

            t = threading.Thread(target=give)
            t.start()
            time.sleep(0.3)  # the verdict is now waiting for the lock
            status, state = call(f"{base}/api/state", token=rnd.token)
            state_at = time.monotonic()
            t.join(60)
            assert status == 200 and len(state["items"]) == len(rnd.items)
            assert state_at < done["verdict_at"]  # answered while the verdict still waited
            status, answer = done["verdict"]
            assert status == 503 and "busy" in answer["error"]
    finally:
        holder.wait(30)
    assert FeatureStore(store).verdicts() == []


def test_a_verdict_on_an_image_gone_from_the_store_is_a_permanent_error(world):
    from stylesift.featurizer.store.check import prune

    rnd, store, *_ = world
    prune(store, 0, include_labelled=True)
    with running(rnd) as base:
        status, answer = call(f"{base}/api/verdict", data={"id": 0, "verdict": "positive"}, token=rnd.token)
    assert status == 409 and "cannot be saved" in answer["error"]


def test_a_file_replaced_since_scoring_is_not_shown_in_its_place(world):
    rnd, *_ = world
    Image.new("RGB", (50, 50), (255, 0, 255)).save(rnd.items[2]["path"], format="JPEG")
    with running(rnd) as base:
        assert call(f"{base}/img/2?token={rnd.token}")[0] == 404
        status, body = call(f"{base}/img/3?token={rnd.token}")
        assert status == 200 and body[:2] == b"\xff\xd8"


def test_an_image_seen_before_is_marked_and_not_picked_unless_kept(tmp_path):
    rnd, *_ = build_round(tmp_path)
    best = rnd.sections["picks"][0]
    mark = {"sha256": "ab" * 32, "path": "/feed/old.jpg", "label": "good", "date": "2026-11-02", "similarity": 0.97}
    marked, *_ = build_round(tmp_path / "again", seen={best: mark})
    state = marked.state()
    assert state["items"][best]["seen_before"] == mark and best not in state["sections"]["picks"]
    assert state["items"][rnd.sections["picks"][1]]["seen_before"] is None
    kept, *_ = build_round(tmp_path / "kept", seen={best: mark}, keep_seen=True)
    assert best in kept.state()["sections"]["picks"]


def test_more_like_this_opens_unlabelled_stored_images_to_judge(tmp_path):
    import numpy as np

    rnd, store, *_ = build_round(tmp_path)
    pick = rnd.sections["picks"][0]
    st = FeatureStore(store)
    near = st.features([st.row_of(rnd.items[pick]["sha256"])])[0]
    rng = np.random.default_rng(5)
    with FeatureStore(store, "a") as w:  # yesterday's feed, unlabelled, some of it like the pick
        feed = np.abs(near + rng.normal(0, 0.3, (30, near.size)) * np.linspace(0.1, 3, 30)[:, None])
        w.add([f"{i:064x}" for i in range(30)], feed.astype(np.float32), [[f"/feed/{i}.jpg"] for i in range(30)])
    with running(rnd) as base:
        status, answer = call(f"{base}/api/more/{pick}", data={}, token=rnd.token)
        assert status == 200 and answer["added"], answer
        added = answer["added"]
        assert call(f"{base}/api/more/{pick}", data={}, token=rnd.token)[1]["added"] == added  # asked twice: same cards
        state = call(f"{base}/api/state", token=rnd.token)[1]
        assert state["more"] == {str(pick): added}
        st = FeatureStore(store)
        batch = {it["sha256"] for it in rnd.items[:rnd.batch_size]}
        for i in added:
            item = rnd.items[i]
            assert item["sha256"] not in batch and st.labels[st.row_of(item["sha256"])] == ""
            assert state["items"][i]["like"] == pick and not state["items"][i]["selected"]
        assert all(i not in sum(state["sections"].values(), []) for i in added)  # not among the batch's sections
        sims = [state["items"][i]["similarity"] for i in added]
        assert sims == sorted(sims, reverse=True)
        status, saved = call(f"{base}/api/verdict", data={"id": added[0], "verdict": "negative"}, token=rnd.token)
        assert status == 200 and saved["saved"]
        assert call(f"{base}/api/more/999", data={}, token=rnd.token)[0] == 404
    assert FeatureStore(store).verdicts()[-1].sha256 == rnd.items[added[0]]["sha256"]
    assert np.isfinite([it["score"] for it in rnd.items]).all()
