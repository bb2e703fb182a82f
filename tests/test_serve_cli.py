"""`stylesift serve` as a real process: the token printed once, a graceful SIGTERM, kill -9 with a store, the port."""

from __future__ import annotations

import http.client
import json
import signal
import socket
import subprocess
import time

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("python_multipart")
pytest.importorskip("openvino")
pytest.importorskip("onnx")

from helpers.serve_world import STYLESIFT, build_world, copy_store, multipart, start_server  # noqa: E402

from stylesift.featurizer.store import FeatureStore  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return build_world(tmp_path_factory.mktemp("serve-cli"))


def _port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def test_the_token_is_printed_once_and_sigterm_lets_a_request_in_flight_finish(world):
    server = start_server(world.model)
    try:
        assert server.token and sum(line.startswith("token: ") for line in server.stdout) == 1
        assert server.call("/score", files=world.new[:1], token="wrong-token-wrong-token")[0] == 401
        status, body = server.call("/score", files=world.new[:2])
        assert status == 200 and [r["filename"] for r in body["results"]] == [p.name for p in world.new[:2]]
        # A request whose body is half sent when SIGTERM arrives.
        payload, kind = multipart(world.new[:3])
        conn = socket.create_connection(("127.0.0.1", _port_of(server.url)))
        conn.sendall((f"POST /score HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {server.token}\r\n"
                      f"Content-Type: {kind}\r\nContent-Length: {len(payload)}\r\n\r\n").encode() + payload[:100])
        deadline = time.time() + 30
        while server.call("/health")[1]["queued_requests"] < 1 and time.time() < deadline:
            time.sleep(0.05)  # until the server holds the request
        server.process.send_signal(signal.SIGTERM)
        while time.time() < deadline:  # until the server has stopped taking connections
            try:
                socket.create_connection(("127.0.0.1", _port_of(server.url)), timeout=1).close()
                time.sleep(0.05)
            except OSError:
                break
        conn.sendall(payload[100:])
        response = http.client.HTTPResponse(conn)
        response.begin()
        answer = json.loads(response.read())
        conn.close()
        assert response.status == 200 and len(answer["results"]) == 3
        code, err = server.stop()
        assert code == 0 and "server stopped" in err
        assert server.token not in err
    finally:
        server.process.kill()


def test_a_token_file_is_used_and_the_token_is_never_printed_or_logged(world, tmp_path):
    token = "file-token-" + "y" * 30
    (tmp_path / "token").write_text(token + "\nsecond line ignored\n")
    server = start_server(world.model, "--token-file", tmp_path / "token", "--access-log")
    try:
        assert server.token is None
        assert server.call("/model", token=token)[0] == 200
        assert server.call("/score", files=world.new[:1], token=token)[0] == 200
        assert server.call("/score", files=world.new[:1], token="second line ignored")[0] == 401
        code, err = server.stop()
        out = "".join(server.stdout)
    finally:
        server.process.kill()
    assert code == 0 and "POST /score" in err  # the access log is on ...
    assert token not in err and token not in out  # ... and shows no token


def test_kill_9_with_a_store_leaves_a_store_that_check_calls_healthy(world, tmp_path):
    store = copy_store(world.store, tmp_path / "s.h5")
    before = len(FeatureStore(store))
    server = start_server(world.model, "--store", store)
    try:
        for p in world.new:
            assert server.call("/score", files=[p])[0] == 200
        deadline = time.time() + 30  # the recorder commits within about a second
        while len(FeatureStore(store)) < before + len(world.new) and time.time() < deadline:
            time.sleep(0.1)
        assert len(FeatureStore(store)) == before + len(world.new)
    finally:
        server.process.kill()  # SIGKILL
        server.process.wait(30)
    checked = subprocess.run([str(STYLESIFT), "store", "check", str(store)], capture_output=True, text=True, timeout=120)
    assert checked.returncode == 0, checked.stdout + checked.stderr


@pytest.mark.parametrize("moment", ["segment-renamed", "manifest-tmp-written"])
def test_killed_inside_a_commit_the_store_stays_healthy_and_the_next_server_records(world, tmp_path, moment):
    store = copy_store(world.store, tmp_path / "s.h5")
    before = len(FeatureStore(store))
    server = start_server(world.model, "--store", store, env={"STYLESIFT_CRASH_AT": moment})
    try:
        assert server.call("/score", files=world.new[:2])[0] == 200  # answered; its commit kills the server
        assert server.process.wait(60) == -signal.SIGKILL
    finally:
        server.process.kill()
    checked = subprocess.run([str(STYLESIFT), "store", "check", str(store)], capture_output=True, text=True, timeout=120)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    again = start_server(world.model, "--store", store)
    try:
        assert again.call("/score", files=world.new[:2])[0] == 200
        assert again.stop()[0] == 0
    finally:
        again.process.kill()
    assert len(FeatureStore(store)) == before + 2


def test_a_port_in_use_fails_before_loading_with_the_fix(world):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    try:
        done = subprocess.run([str(STYLESIFT), "serve", str(world.model), "--port", str(sock.getsockname()[1])],
                              capture_output=True, text=True, timeout=120)
    finally:
        sock.close()
    assert done.returncode == 1 and "--port" in done.stderr and "token:" not in done.stdout


def test_the_benchmark_client_counts_answers_and_errors(world, tmp_path):
    from stylesift.review.serve import bench

    copies = bench.make_jpegs(world.new[:3], tmp_path / "copies", size=64)
    from PIL import Image

    assert all(max(Image.open(p).size) == 64 for p in copies)
    server = start_server(world.model)
    try:
        bodies = [bench.multipart([p]) for p in copies] + [bench.multipart(copies)]
        done = bench.load(_port_of(server.url), server.token, bodies, clients=3, requests=12, max_seconds=120)
        assert done["requests"] == 12 and done["errors"] == 0 and done["latency_ms"]["p50"] > 0
        refused = bench.load(_port_of(server.url), "wrong-token-wrong-token", bodies, clients=2, requests=4, max_seconds=120)
        assert refused["requests"] == 4 and refused["errors"] == 4 and "token" in refused["first_error"]
        assert bench.server_rss_mib(server.process.pid) > 10
    finally:
        server.stop()
        server.process.kill()
