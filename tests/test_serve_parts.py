"""Parts of the scoring service on their own: the micro-batcher, tokens, request bodies, the numbered model series."""

from __future__ import annotations

import asyncio
import socket
import threading

import numpy as np
import pytest

from stylesift.review.retrain import numbered_model_path, numbered_models, series_number
from stylesift.review.serve.auth import generate_token, read_token, token_matches
from stylesift.review.serve.batcher import MicroBatcher
from stylesift.review.serve.errors import ServeError
from stylesift.review.serve.server import bind


def _echo(sizes):
    def run(images):
        sizes.append(len(images))
        return {"pooled": images.reshape(len(images), -1)[:, :2].astype(np.float32)}
    return run


def _image(i: int) -> np.ndarray:
    return np.full((4, 4, 3), i, np.uint8)


def test_the_batcher_pools_announced_images_and_gives_each_its_own_row():
    sizes = []
    b = MicroBatcher(_echo(sizes), max_batch=4, wait=60.0)
    b.expect(10)  # ten images on their way: batches wait for them (never the full minute: they all arrive)
    futures = [None] * 10
    threads = [threading.Thread(target=lambda i=i: futures.__setitem__(i, b.submit(_image(i)))) for i in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    b.start()
    try:
        for i, f in enumerate(futures):
            assert f.result(timeout=30)["pooled"].tolist() == [i, i]
    finally:
        b.stop()
    assert sizes == [4, 4, 2] and b.images == 10 and b.batches == 3


def test_a_lone_image_does_not_wait_for_company():
    b = MicroBatcher(_echo([]), max_batch=8, wait=600.0)  # would wait ten minutes for images that never come
    b.start()
    try:
        assert b.submit(_image(3)).result(timeout=60)["pooled"].tolist() == [3, 3]
    finally:
        b.stop()


def test_a_failing_batch_fails_its_images_and_the_batcher_goes_on():
    calls = []

    def run(images):
        calls.append(len(images))
        if len(calls) == 1:
            raise RuntimeError("network down")
        return {"pooled": np.zeros((len(images), 2), np.float32)}

    b = MicroBatcher(run, max_batch=2, wait=0.0)
    b.start()
    try:
        with pytest.raises(RuntimeError, match="network down"):
            b.submit(_image(1)).result(timeout=30)
        assert b.submit(_image(2)).result(timeout=30)["pooled"].shape == (2,)
    finally:
        b.stop()


def test_stop_runs_what_is_queued_and_refuses_afterwards():
    b = MicroBatcher(_echo([]), max_batch=2, wait=0.0)
    queued = [b.submit(_image(i)) for i in range(3)]  # before the thread starts
    b.start()
    b.stop()
    assert [f.result(timeout=1)["pooled"][0] for f in queued] == [0, 1, 2]
    with pytest.raises(RuntimeError, match="stopped"):
        b.submit(_image(9)).result(timeout=1)


def test_decoded_images_waiting_are_bounded():
    b = MicroBatcher(_echo([]), max_batch=1, wait=0.0, max_pending=2)
    b.submit(_image(0))
    b.submit(_image(1))
    third = threading.Thread(target=b.submit, args=(_image(2),), daemon=True)
    third.start()
    third.join(0.5)
    assert third.is_alive() and b.queued == 2  # the third decode thread waits for room
    b.start()
    third.join(30)
    b.stop()
    assert not third.is_alive() and b.images == 3


def test_tokens_from_a_file_or_made_up(tmp_path):
    token = generate_token()
    assert len(token) >= 40 and all(c.isalnum() or c in "-_" for c in token)
    assert generate_token() != token
    (tmp_path / "t").write_text(f"  {token}  \nanything\n")
    assert read_token(tmp_path / "t") == token
    for content in ("short\n", "", "has a space in it, long enough\n"):
        (tmp_path / "t").write_text(content)
        with pytest.raises(ServeError, match="first line"):
            read_token(tmp_path / "t")
    with pytest.raises(ServeError, match="no such token file"):
        read_token(tmp_path / "missing")
    assert token_matches(token, f"Bearer {token}") and token_matches(token, f"bearer {token}")
    assert not token_matches(token, f"Bearer {token}x") and not token_matches(token, token) and not token_matches(token, None)


def test_the_socket_says_tcp_so_responses_are_not_delayed():
    sock = bind("127.0.0.1", 0)
    try:
        assert sock.proto == socket.IPPROTO_TCP  # asyncio sets TCP_NODELAY only then
        sock.listen(1)
        with pytest.raises(ServeError, match="in use.*--port"):
            bind("127.0.0.1", sock.getsockname()[1]).close()
    finally:
        sock.close()


def test_multipart_bodies_are_read_within_their_bounds():
    from stylesift.review.serve.uploads import read_multipart

    def body(*parts):
        return b"".join(b'--b\r\nContent-Disposition: form-data; name="%s"; filename="%s"\r\n\r\n%s\r\n' % p for p in parts) \
            + b"--b--\r\n"

    async def stream(data, step=7):
        for i in range(0, len(data), step):  # in small pieces, as a network delivers it
            yield data[i:i + step]

    def read(data, **limits):
        return asyncio.run(read_multipart(stream(data), "multipart/form-data; boundary=b",
                                          **{"max_bytes": 10_000, "max_images": 3, **limits}))

    got = read(body((b"files", b"a.jpg", b"AAA"), (b"note", b"", b"ignored"), (b"files", b"dir/b.jpg", b"BB")))
    assert [(u.filename, u.data, u.store_path) for u in got] == [("a.jpg", b"AAA", "upload:a.jpg"),
                                                                   ("dir/b.jpg", b"BB", "upload:b.jpg")]
    with pytest.raises(ServeError) as e:
        read(body(*[(b"files", b"x.jpg", b"X")] * 4))
    assert e.value.status == 413
    with pytest.raises(ServeError) as e:
        read(body((b"files", b"x.jpg", b"X" * 200)), max_bytes=100)
    assert e.value.status == 413
    with pytest.raises(ServeError) as e:
        read(body(*[(b"other", b"", b"x")] * 17))
    assert e.value.status == 413
    with pytest.raises(ServeError) as e:
        read(body((b"files", b"x.jpg", b"XYZ"))[:-20])  # cut inside the part
    assert e.value.status == 400


def test_the_numbered_series_of_a_model(tmp_path):
    model = tmp_path / "model.ssmodel"
    assert numbered_models(model) == []
    model.write_bytes(b"1")
    for _ in range(2):
        numbered_model_path(model).write_bytes(b"n")
    (tmp_path / "model-x.ssmodel").write_bytes(b"not of the series")
    (tmp_path / ".model-004.ssmodel.123.tmp").write_bytes(b"a retrain writing")
    assert [(n, p.name) for n, p in numbered_models(model)] == [(1, "model.ssmodel"), (2, "model-002.ssmodel"),
                                                                (3, "model-003.ssmodel")]
    assert numbered_models(tmp_path / "model-002.ssmodel") == numbered_models(model)
    assert series_number(tmp_path / "model-003.ssmodel") == 3 and series_number(model) == 1
