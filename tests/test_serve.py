"""The scoring service over HTTP (FastAPI's TestClient): token, rows as `score --json` prints them, limits, swaps, recording."""

from __future__ import annotations

import asyncio
import io
import json
import threading

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("python_multipart")
pytest.importorskip("openvino")
pytest.importorskip("onnx")

from helpers.cli import run  # noqa: E402
from helpers.serve_world import (  # noqa: E402
    TOKEN,
    build_world,
    client,
    copy_store,
    files_of,
    open_service,
    other_space_model,
    train_model,
)
from PIL import Image  # noqa: E402

from stylesift.featurizer.images import DecodeBudget  # noqa: E402
from stylesift.featurizer.store import FeatureStore, Verdict  # noqa: E402
from stylesift.review.serve import ServeError  # noqa: E402

ROW_KEYS = ["filename", "sha256", "score", "selected", "group", "group_size"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return build_world(tmp_path_factory.mktemp("serve"))


@pytest.fixture(scope="module")
def service(world):
    return open_service(world)


@pytest.fixture(scope="module")
def api(service):
    with client(service) as c:
        yield c


def test_every_route_but_health_needs_the_token(api):
    assert api.get("/health", headers={"Authorization": ""}).json()["status"] == "ok"
    for method, path in (("get", "/model"), ("post", "/score"), ("post", "/reload"), ("get", "/docs"),
                         ("get", "/openapi.json")):
        for header in ("", "Bearer wrong-token-wrong-token", f"Basic {TOKEN}", TOKEN):
            answer = getattr(api, method)(path, headers={"Authorization": header})
            assert answer.status_code == 401, (path, header)
            assert "Bearer" in answer.json()["error"] and answer.headers["www-authenticate"].startswith("Bearer")
    assert api.get("/model").status_code == 200
    assert api.get("/docs").status_code == 200 and "/score" in api.get("/openapi.json").json()["paths"]


def test_many_images_one_result_each_in_request_order_and_a_bad_one_fails_alone(api, world):
    files = files_of(world.new[:3]) + [("files", ("broken.jpg", b"not an image", "image/jpeg"))] + files_of(world.new[3:5])
    answer = api.post("/score", files=files)
    assert answer.status_code == 200
    results = answer.json()["results"]
    assert [r["filename"] for r in results] == [p.name for p in world.new[:3]] + ["broken.jpg"] + [p.name for p in world.new[3:5]]
    assert list(results[3]) == ["filename", "error"] and "broken.jpg" in results[3]["error"]
    for r in results[:3] + results[4:]:
        assert list(r) == ROW_KEYS and isinstance(r["score"], float) and isinstance(r["selected"], bool)
    assert answer.json()["model"] == {"file": "model.ssmodel", "version": 1}


def test_nothing_scored_is_422_with_each_reason(api):
    answer = api.post("/score", files=[("files", ("a.jpg", b"junk", "image/jpeg")), ("files", ("b.png", b"", "image/png"))])
    assert answer.status_code == 422
    assert [r["filename"] for r in answer.json()["results"]] == ["a.jpg", "b.png"]
    assert "empty file" in answer.json()["results"][1]["error"]


def test_scores_are_those_of_score_json_history_included(world, tmp_path):
    """The same files through `stylesift score --json` and through the service, each with a copy of one store
    holding a verdict: same sha256, score (≤ 1e-5), selection, groups and seen_before."""
    s1, s2 = copy_store(world.store, tmp_path / "s1.h5"), copy_store(world.store, tmp_path / "s2.h5")
    judged = world.good[0]
    for s in (s1, s2):
        with FeatureStore(s, "a") as st:
            st.add_verdicts([Verdict(st.sha256[st.row_of(_sha(judged))], "good", "ann", 1_700_000_000.0)])
    repost = tmp_path / "repost.jpg"  # the judged picture recompressed: other bytes, nearly its features
    Image.open(judged).save(repost, quality=60)
    twin = tmp_path / "twin.jpg"  # a near-duplicate of one of the new pictures, in the same request
    Image.open(world.new[1]).save(twin, quality=70)
    paths = sorted([*world.new, repost, twin])
    printed = run("score", world.model, *paths, "--store", s1, "--json")
    assert printed.exit_code == 0, printed.output
    want = {r["sha256"]: r for r in json.loads(printed.stdout)}
    with client(open_service(world, store=s2)) as c:
        got = c.post("/score", files=files_of(paths)).json()["results"]
    assert len(got) == len(want) == len(paths)
    for r in got:
        w = want[r["sha256"]]
        assert abs(r["score"] - w["score"]) <= 1e-5
        assert (r["selected"], r["group"], r["group_size"], r["seen_before"]) == \
            (w["selected"], w["group"], w["group_size"], w["seen_before"])
    seen = [r for r in got if r["seen_before"]]
    assert [r["filename"] for r in seen] == ["repost.jpg"] and seen[0]["seen_before"]["label"] == "good"
    assert not seen[0]["selected"]  # seen before: not picked (score's rule)
    assert max(r["group_size"] for r in got) >= 2  # near-duplicates grouped within the request, as score groups them


def _sha(path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_request_size_and_image_count_are_bounded_with_413(world):
    small = open_service(world, max_images=2, max_request_bytes=64 * 1024)
    with client(small) as c:
        answer = c.post("/score", files=files_of(world.new[:3]))
        assert answer.status_code == 413 and "--max-images" in answer.json()["error"]
        big = [("files", ("big.jpg", b"\xff" * 70_000, "image/jpeg"))]
        answer = c.post("/score", files=big)
        assert answer.status_code == 413 and "--max-request-size" in answer.json()["error"]
        # Without a Content-Length (a chunked upload) the stream itself is counted.
        body = b"".join([b"--b\r\nContent-Disposition: form-data; name=\"files\"; filename=\"x.jpg\"\r\n\r\n", b"\0" * 70_000,
                         b"\r\n--b--\r\n"])
        answer = c.post("/score", content=iter([body[:30_000], body[30_000:]]),
                        headers={"Content-Type": "multipart/form-data; boundary=b"})
        assert answer.status_code == 413
        assert c.post("/score", files=files_of(world.new[:2])).status_code == 200  # within both bounds


def test_an_image_over_the_decode_memory_is_413_alone_and_fails_only_itself_among_others(world, tmp_path):
    huge = tmp_path / "huge.png"
    Image.new("L", (4300, 4300), 128).save(huge)  # ~74 MiB to decode, more than the 64 MiB budget below
    with client(open_service(world, budget=DecodeBudget(64 * 2**20))) as c:
        alone = c.post("/score", files=files_of([huge]))
        assert alone.status_code == 413 and "decode memory budget" in alone.json()["results"][0]["error"]
        mixed = c.post("/score", files=files_of([huge, world.new[0]]))
        assert mixed.status_code == 200
        assert "error" in mixed.json()["results"][0] and "score" in mixed.json()["results"][1]


def test_bad_requests_say_what_to_send(api, world):
    assert api.post("/score", content=b"x", headers={"Content-Type": "text/plain"}).status_code == 415
    answer = api.post("/score", json={"paths": [str(world.new[0])]})
    assert answer.status_code == 403 and "--allow-paths" in answer.json()["error"]
    assert api.post("/score", content=b"--b\r\nbroken", headers={"Content-Type": "multipart/form-data; boundary=b"}
                    ).status_code == 400
    answer = api.post("/score", files=[("other", ("a.jpg", b"x", "image/jpeg"))])
    assert answer.status_code == 400 and "`files`" in answer.json()["error"]
    assert api.post("/score", content=b"x", headers={"Content-Type": "multipart/form-data"}).status_code == 400


def test_paths_only_inside_the_allowed_folder(world, tmp_path):
    inside = tmp_path / "inside"
    inside.mkdir()
    (inside / "a.jpg").write_bytes(world.new[0].read_bytes())
    (inside / "escape.jpg").symlink_to(world.new[1])  # resolves outside
    (inside / "sub").mkdir()
    with client(open_service(world, allow_paths=inside)) as c:
        answer = c.post("/score", json={"paths": ["a.jpg", str(inside / "a.jpg"), "escape.jpg", "../x.jpg",
                                                  str(world.new[2]), "missing.jpg", "sub"]})
        assert answer.status_code == 200
        r = answer.json()["results"]
        assert "score" in r[0] and r[0]["sha256"] == r[1]["sha256"]
        for i in (2, 3, 4):
            assert "outside the folder" in r[i]["error"], r[i]
        assert "no such file" in r[5]["error"] and "directory" in r[6]["error"]
        assert c.post("/score", json={"paths": "a.jpg"}).status_code == 400
        assert c.post("/score", json={"paths": ["a.jpg"] * 65}).status_code == 413


def test_beyond_the_queue_is_503_and_the_queued_request_still_answers(world):
    svc = open_service(world, max_queue=1)
    release, entered = threading.Event(), threading.Event()
    with client(svc) as c:
        real = svc.batcher.run

        def held(images):  # the network is busy with the first request
            entered.set()
            release.wait(30)
            return real(images)

        svc.batcher.run = held
        first = {}
        thread = threading.Thread(target=lambda: first.update(answer=c.post("/score", files=files_of(world.new[:1]))))
        thread.start()
        assert entered.wait(30)
        busy = c.post("/score", files=files_of(world.new[1:2]))
        assert busy.status_code == 503 and busy.headers["retry-after"] == "1" and "--max-queue" in busy.json()["error"]
        release.set()
        thread.join(30)
        assert first["answer"].status_code == 200


def test_concurrent_requests_share_network_batches(world):
    svc = open_service(world, max_batch=8, batch_wait_ms=200)
    sizes = []
    with client(svc) as c:
        real = svc.batcher.run
        svc.batcher.run = lambda images: (sizes.append(len(images)), real(images))[1]
        svc.batcher.expect(len(world.new))  # announced: the first batch waits for the rest (up to 200 ms)
        answers = []
        threads = [threading.Thread(target=lambda p=p: answers.append(c.post("/score", files=files_of([p]))))
                   for p in world.new]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        svc.batcher.expect(-len(world.new))
    assert len(answers) == len(world.new) and all(a.status_code == 200 for a in answers)
    assert sum(sizes) == len(world.new) and max(sizes) > 1 and max(sizes) <= 8


def test_a_failure_inside_is_one_line_500_without_traceback(world):
    svc = open_service(world)
    with client(svc, raise_server_exceptions=False) as c:
        svc._finish = lambda *a: (_ for _ in ()).throw(RuntimeError("boom at /secret/place"))
        answer = c.post("/score", files=files_of(world.new[:1]))
    assert answer.status_code == 500
    assert answer.json() == {"error": "internal error (RuntimeError); the server's log has the details"}


def test_reload_swaps_between_requests_and_refuses_another_feature_space(world):
    svc = open_service(world)
    folder = world.model.parent
    with client(svc) as c:
        before = c.post("/score", files=files_of(world.new[:2])).json()
        second = train_model(world.store, folder / "model-002.ssmodel", method="two-class")
        answer = c.post("/reload", json={"path": second.name})
        assert answer.status_code == 200 and answer.json()["version"] == 2
        after = c.post("/score", files=files_of(world.new[:2])).json()
        assert after["model"] == {"file": "model-002.ssmodel", "version": 2}
        assert [r["score"] for r in after["results"]] != [r["score"] for r in before["results"]]
        other = other_space_model(world, folder / "other.ssmodel")
        refused = c.post("/reload", json={"path": "other.ssmodel"})
        assert refused.status_code == 409 and "another feature space" in refused.json()["error"]
        assert "model-002.ssmodel" in refused.json()["error"]  # says which model stays
        assert c.get("/model").json()["file"] == str(second)
        (folder / "damaged.ssmodel").write_bytes(b"stylesift-bundle 2\n{not json\n")
        assert c.post("/reload", json={"path": "damaged.ssmodel"}).status_code == 422
        assert c.post("/reload", json={"path": "../train.h5"}).status_code == 403
        assert c.post("/reload", content=b"[1]").status_code == 400
        assert c.post("/reload").json()["file"] == str(world.model)  # no path: the server's MODEL again
        assert c.get("/model").json()["version"] == 3
    other.unlink()
    second.unlink()
    (folder / "damaged.ssmodel").unlink()


def test_the_watch_follows_the_numbered_models_and_refuses_another_space(world, caplog):
    svc = open_service(world)
    folder = world.model.parent
    slot = svc.slot
    try:
        assert slot.poll() is None  # nothing newer
        train_model(world.store, folder / "model-002.ssmodel", method="two-class")
        assert slot.poll()["version"] == 2 and slot.current.path.name == "model-002.ssmodel"
        other_space_model(world, folder / "model-003.ssmodel")
        with caplog.at_level("WARNING", logger="stylesift.serve"):
            assert slot.poll() is None and slot.poll() is None
        assert slot.current.path.name == "model-002.ssmodel"
        assert sum("model-003.ssmodel refused" in r.getMessage() for r in caplog.records) == 1  # logged once
        train_model(world.store, folder / "model-004.ssmodel")
        assert slot.poll()["version"] == 3 and slot.current.path.name == "model-004.ssmodel"
    finally:
        for n in (2, 3, 4):
            (folder / f"model-{n:03d}.ssmodel").unlink(missing_ok=True)


def test_with_a_store_uploads_become_rows_and_known_content_skips_the_network(world, tmp_path):
    store = copy_store(world.store, tmp_path / "s.h5")
    rows_before = len(FeatureStore(store))
    svc = open_service(world, store=store, commit_every=0.05)
    with client(svc) as c:
        first = c.post("/score", files=files_of(world.new[:3], ["a.jpg", "b.jpg", "c.jpg"])).json()["results"]
        featurized = svc.batcher.images
        again = c.post("/score", files=files_of(world.new[:3])).json()["results"]
        assert svc.batcher.images == featurized  # pending or stored: no network call
        assert [r["score"] for r in again] == [r["score"] for r in first]
        known = c.post("/score", files=files_of(world.good[:1])).json()["results"]  # a training image, stored
        assert svc.batcher.images == featurized and known[0]["seen_before"] is None
    st = FeatureStore(store)  # the stop committed every recorded row
    assert len(st) == rows_before + 3
    for r, name in zip(first, ["a.jpg", "b.jpg", "c.jpg"]):
        row = st.row_of(r["sha256"])
        assert st.paths(row) == [f"upload:{name}"] and st.labels[row] == ""
    assert run("store", "check", store).exit_code == 0


def test_without_a_store_nothing_is_written(world, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    before = {p: p.stat().st_mtime_ns for p in world.folder.rglob("*")}
    with client(open_service(world)) as c:
        assert c.post("/score", files=files_of(world.new)).status_code == 200
    assert list(tmp_path.iterdir()) == []
    assert {p: p.stat().st_mtime_ns for p in world.folder.rglob("*")} == before


def test_the_admission_holds_a_place_and_refuses_beyond(world):
    svc = open_service(world, max_queue=2)

    async def scenario():
        async with svc.admitted(10), svc.admitted(10):
            with pytest.raises(ServeError) as refused:
                async with svc.admitted(10):
                    pass
            assert refused.value.status == 503
        async with svc.admitted(10):  # places are given back
            return svc.health()["queued_requests"]

    assert asyncio.run(scenario()) == 1


def test_body_memory_queues_requests_instead_of_failing(world):
    svc = open_service(world, body_memory=100)
    order = []

    async def request(name, size, hold):
        async with svc.admitted(size):
            order.append(name)
            await asyncio.sleep(hold)

    async def scenario():
        await asyncio.gather(request("a", 80, 0.05), request("b", 80, 0), request("c", 10, 0))

    asyncio.run(scenario())
    assert order == ["a", "b", "c"]  # b waited for a's bytes; c, behind b, waited its turn
    assert svc._bodies.used == 0


def test_model_route_gives_the_header_and_counters(api, world):
    info = api.get("/model").json()
    assert info["file"] == str(world.model) and info["header"]["method"] == "head"
    assert info["header"]["labels"] == {"positive": "good", "negative": "plain"}
    assert info["service"]["requests"] >= 0 and "store" not in info["service"]


def test_names_are_printable_and_bounded(api, world):
    name = b"bad\x01\x1bname" + b"x" * 400 + b".jpg"  # control characters, sent raw
    body = (b'--b\r\nContent-Disposition: form-data; name="files"; filename="' + name + b'"\r\n\r\n'
            + world.new[0].read_bytes() + b"\r\n--b--\r\n")
    answer = api.post("/score", content=body, headers={"Content-Type": "multipart/form-data; boundary=b"})
    name = answer.json()["results"][0]["filename"]
    assert name.startswith("badname") and len(name) == 255 and name.isprintable()


def test_upload_bytes_decode_like_files(world):
    from stylesift.featurizer.images import load_image

    a = load_image(world.new[0], 32)
    b = load_image(io.BytesIO(world.new[0].read_bytes()), 32)
    assert np.array_equal(a, b)


def test_a_stopped_service_refuses_new_requests(world):
    svc = open_service(world)
    with client(svc):
        pass
    assert svc.health()["status"] == "stopping"
    with pytest.raises(ServeError) as refused:
        asyncio.run(svc.admitted(1).__aenter__())
    assert refused.value.status == 503


def test_the_stop_commits_rows_still_waiting(world, tmp_path):
    store = copy_store(world.store, tmp_path / "s.h5")
    svc = open_service(world, store=store, commit_every=3600.0)  # never by time: only the stop commits
    with client(svc) as c:
        shas = [r["sha256"] for r in c.post("/score", files=files_of(world.new[:2])).json()["results"]]
        assert svc.recorder.waiting == 2 and FeatureStore(store).row_of(shas[0]) is None
    assert svc.recorder.waiting == 0
    assert all(FeatureStore(store).row_of(s) is not None for s in shas)


def test_a_model_of_a_set_the_server_does_not_compute_is_refused(service, world):
    header = {**service.slot.current.header, "summary": {"feature_set": "style"}}
    with pytest.raises(ServeError) as refused:
        service.slot.check_sets(header, world.model)
    assert refused.value.status == 409 and "'style'" in refused.value.args[0] and "computes pooled" in refused.value.args[0]
