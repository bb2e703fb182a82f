"""The review server over HTTP (no browser): token, images by id only, verdicts saved at once, tally, retraining."""

from __future__ import annotations

import time

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from helpers.review_world import build_round, call, running  # noqa: E402

from stylesift.featurizer.store import FeatureStore  # noqa: E402
from stylesift.review.retrain import numbered_model_path  # noqa: E402
from stylesift.review.round import ReviewError  # noqa: E402
from stylesift.review.server import bind  # noqa: E402


@pytest.fixture
def world(tmp_path):
    return build_round(tmp_path)


def test_every_request_needs_the_token(world):
    rnd, *_ = world
    with running(rnd) as base:
        assert call(f"{base}/")[0] == 403
        assert call(f"{base}/img/0")[0] == 403
        assert call(f"{base}/api/verdict", data={"id": 0, "verdict": "positive"}, token="wrong")[0] == 403
        status, page = call(f"{base}/?token={rnd.token}")
        assert status == 200 and b"stylesift review" in page


def test_images_are_served_by_id_only(world):
    rnd, *_ = world
    with running(rnd) as base:
        status, body = call(f"{base}/img/0?token={rnd.token}")
        assert status == 200 and body[:2] == b"\xff\xd8"  # a JPEG thumbnail
        assert call(f"{base}/img/{len(rnd.items)}?token={rnd.token}")[0] == 404
        for probe in ("/img/..%2f..%2fetc%2fpasswd", "/img/%2fetc%2fpasswd", "/etc/passwd", "/img/-1"):
            status, _ = call(f"{base}{probe}?token={rnd.token}")
            assert status in (404, 422), probe


def test_verdicts_are_saved_at_once_and_the_later_one_wins(world):
    rnd, store, _, pictures = world
    with running(rnd) as base:
        state = call(f"{base}/api/state", token=rnd.token)[1]
        pick = state["sections"]["picks"][0]
        status, saved = call(f"{base}/api/verdict", data={"id": pick, "verdict": "positive", "note": "lovely"}, token=rnd.token)
        assert status == 200 and saved["saved"] and saved["label"] == "good"
        log = FeatureStore(store).verdicts()  # in the store as soon as the answer came
        assert [(v.label, v.reviewer, v.note) for v in log] == [("good", "tester", "lovely")]
        call(f"{base}/api/verdict", data={"id": pick, "verdict": "negative"}, token=rnd.token)
        assert call(f"{base}/api/verdict", data={"id": pick, "verdict": "skip"}, token=rnd.token)[1]["saved"] is False
        st = FeatureStore(store)
        assert [v.label for v in st.verdicts()] == ["good", "plain"]
        assert st.labels[st.row_of(rnd.items[pick]["sha256"])] == "plain"
        state = call(f"{base}/api/state", token=rnd.token)[1]
        assert state["items"][pick]["verdict"]["label"] == "plain"
        assert state["tally"] == {"verdicts": 1, "accepted": 0, "rejected": 1, "picks": len(state["sections"]["picks"]),
                                  "precision": 0.0}


def test_bad_verdicts_are_refused_and_write_nothing(world):
    rnd, store, *_ = world
    with running(rnd) as base:
        for body in ({"id": 999, "verdict": "positive"}, {"id": "0", "verdict": "positive"}, {"id": 0, "verdict": "maybe"}, [1, 2]):
            status, answer = call(f"{base}/api/verdict", data=body, token=rnd.token)
            assert status == 400 and answer["error"], body
        assert FeatureStore(store).verdicts() == []


def test_near_duplicates_are_one_card(world):
    rnd, *_ = world
    state = rnd.state()
    n = len(rnd.items)
    cards = state["sections"]["picks"] + state["sections"]["borderline"] + state["sections"]["suggestions"]
    assert (n - 1) in cards and (n - 2) not in cards  # the copy is behind its group's card
    assert state["members"][str(state["items"][n - 1]["group"])] == [n - 2]
    assert state["items"][n - 1]["nearest"]["name"].startswith("good_")  # evidence from the training positives


def test_a_port_in_use_is_a_clear_error():
    sock = bind("127.0.0.1", 0)
    try:
        with pytest.raises(ReviewError, match="in use.*--port"):
            bind("127.0.0.1", sock.getsockname()[1])
    finally:
        sock.close()


def test_numbered_model_files_never_replace_the_old_one(tmp_path):
    m = tmp_path / "model.ssmodel"
    assert numbered_model_path(m).name == "model-002.ssmodel"
    (tmp_path / "model-002.ssmodel").write_bytes(b"x")
    assert numbered_model_path(m).name == "model-003.ssmodel"
    assert numbered_model_path(tmp_path / "model-002.ssmodel").name == "model-003.ssmodel"


def test_retrain_writes_a_numbered_model_and_puts_it_in_use(world):
    rnd, store, model, _ = world
    with running(rnd) as base:
        state = call(f"{base}/api/state", token=rnd.token)[1]
        for i in state["sections"]["picks"][:2]:
            call(f"{base}/api/verdict", data={"id": i, "verdict": "positive"}, token=rnd.token)
        assert call(f"{base}/api/retrain", data={}, token=rnd.token)[1]["started"]
        deadline = time.time() + 120
        while time.time() < deadline:
            state = call(f"{base}/api/state", token=rnd.token)[1]
            if state["retraining"] and ("done" in state["retraining"] or "error" in state["retraining"]):
                break
            time.sleep(0.3)
        assert "error" not in state["retraining"], state["retraining"]
        assert state["model"]["file"] == "model-002.ssmodel" and state["model"]["version"] == 2
        assert model.exists() and (model.parent / "model-002.ssmodel").exists()


def test_review_command_stops_at_a_port_in_use_before_loading_anything(tmp_path):
    from typer.testing import CliRunner

    from stylesift.cli.main import app

    sock = bind("127.0.0.1", 0)
    try:
        r = CliRunner().invoke(app, ["review", str(tmp_path / "no-model.ssmodel"), str(tmp_path), "--store",
                                     str(tmp_path / "s.h5"), "--port", str(sock.getsockname()[1])])
    finally:
        sock.close()
    assert r.exit_code == 1 and "in use" in r.output and "--port" in r.output


def test_review_command_refuses_a_model_that_fails_its_checks(tmp_path):
    from typer.testing import CliRunner

    from stylesift.cli.main import app

    bad = tmp_path / "model.ssmodel"
    bad.write_bytes(b"not a bundle at all")
    r = CliRunner().invoke(app, ["review", str(bad), str(tmp_path), "--store", str(tmp_path / "s.h5"), "--port", "0"])
    assert r.exit_code == 1 and "error:" in r.output and str(bad) in r.output


def test_a_browser_that_goes_away_mid_verdict_leaves_a_whole_verdict_or_none(world):
    import socket

    rnd, store, *_ = world
    with running(rnd) as base:
        port = int(base.rsplit(":", 1)[1])
        body = b'{"id": 0, "verdict": "positive", "note": "half"}'
        for cut in (len(body) // 2, len(body)):  # the connection drops mid-body, then right after sending it
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(b"POST /api/verdict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                      + f"X-Token: {rnd.token}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body[:cut])
            s.close()
        time.sleep(1.0)
        assert call(f"{base}/api/state", token=rnd.token)[0] == 200  # the server carries on
    log = FeatureStore(store).verdicts()
    assert len(log) <= 1 and all(v.note == "half" and v.label == "good" for v in log)


def test_while_only_positive_verdicts_exist_retraining_uses_pu(tmp_path):
    from stylesift.review.retrain import retrain_method

    assert retrain_method("one-class", {"good": 5, "": 40}, "plain") == "pu"
    assert retrain_method("two-class", {"good": 5, "plain": 1, "": 40}, "plain") == "two-class"
    assert retrain_method("one-class", {"good": 5}, "plain") == "one-class"  # no feed to learn against
    rnd, store, _, _ = build_round(tmp_path)
    with FeatureStore(store, "a") as st:  # forget the hand-made negatives: only positives and the feed remain
        for sha, label in zip(st.sha256, st.labels):
            if label == "plain":
                st.update(str(sha), label="")
    assert "plain" not in FeatureStore(store).label_counts()
    rnd.give_verdict(rnd.sections["picks"][0], "positive")
    assert rnd.retrain()
    deadline = time.time() + 120
    while rnd.retraining and not ({"done", "error"} & set(rnd.retraining)) and time.time() < deadline:
        time.sleep(0.2)
    assert "error" not in rnd.retraining, rnd.retraining
    state = rnd.state()
    assert state["model"]["method"] == "pu" and state["model"]["asked"] == "two-class"
    assert len(state["sections"]["suggestions"]) > 0  # suggested by the pu model now in use
