"""A review round without the network: real picture files, a store filled with made-up features, a trained bundle,
and the server running on a free loopback port in a thread (shared by the review server and browser tests)."""

from __future__ import annotations

import hashlib
import json
import threading
import time
import urllib.error
import urllib.request
from contextlib import contextmanager

import numpy as np

FP = {"backbone": "test", "feature_dim": 24, "dtype": "float32"}


def build_round(tmp_path, *, n=14, retrain_every=0, seen=None, keep_seen=False, size=(96, 72)):
    """Store, model and a ReviewRound over ``n`` picture files of ``size`` pixels; the two best-scoring are near-duplicates.

    ``seen`` maps item ids to the ``seen_before`` that score would have given them."""
    from helpers.pictures import write_pictures
    from stylesift.classifiers.bundle import Bundle
    from stylesift.classifiers.two_class import TwoClassSVM
    from stylesift.featurizer.store import FeatureStore
    from stylesift.review.round import ReviewRound

    rng = np.random.default_rng(0)
    pos_c = np.r_[np.full(12, 2.0), np.zeros(12)]
    neg_c = pos_c[::-1]
    train_pos = np.abs(rng.normal(0, 1, (20, 24))) + pos_c
    train_neg = np.abs(rng.normal(0, 1, (20, 24))) + neg_c
    mix = np.linspace(0, 1, n)[:, None]
    batch = np.abs(rng.normal(0, 0.6, (n, 24))) + mix * pos_c + (1 - mix) * neg_c
    batch[n - 2] = batch[n - 1] * 1.01  # the two best-scoring images are near-duplicates
    pictures = write_pictures(tmp_path / "batch", n, size=size)
    shas = [hashlib.sha256(p.read_bytes()).hexdigest() for p in pictures]
    train_shas = [hashlib.sha256(f"train {i}".encode()).hexdigest() for i in range(40)]
    store = tmp_path / "store.h5"
    with FeatureStore(store, "a", fingerprint=FP) as st:
        st.add(train_shas[:20], train_pos.astype(np.float32), [[f"/train/good_{i}.jpg"] for i in range(20)], label="good")
        st.add(train_shas[20:], train_neg.astype(np.float32), [[f"/train/plain_{i}.jpg"] for i in range(20)], label="plain")
        st.add(shas, batch.astype(np.float32), [[str(p)] for p in pictures])
    X = np.vstack([train_pos, train_neg]).astype(np.float32)
    y = np.r_[np.ones(20, bool), np.zeros(20, bool)]
    est = TwoClassSVM(n_jobs=1).fit(X, y)
    model = Bundle(pipeline=est.pipeline_, threshold=est.threshold_, method="two-class", positive_label="good",
                   negative_label="plain", fingerprint=FP, train_sha256=np.array(train_shas),
                   train_labels=np.array(["good"] * 20 + ["plain"] * 20)).save(tmp_path / "model.ssmodel")
    bundle = Bundle.load(model, fingerprint=FP)
    items = [{"path": str(p), "sha256": s, "seen_before": (seen or {}).get(i)} for i, (p, s) in enumerate(zip(pictures, shas))]
    rnd = ReviewRound(model, bundle, store, items, reviewer="tester", dedupe=0.98, retrain_every=retrain_every,
                      keep_seen=keep_seen)
    return rnd, store, model, pictures


@contextmanager
def running(rnd):
    """Serve ``rnd`` on a free loopback port in a thread; yield its base URL (without the token)."""
    import uvicorn

    from stylesift.review.server import bind, create_app

    sock = bind("127.0.0.1", 0)
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(rnd), log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def call(url, *, data=None, token=None):
    """``(status, decoded JSON or bytes)`` of a GET (or POST of ``data`` as JSON)."""
    headers = {"Content-Type": "application/json"}
    if token:
        headers["X-Token"] = token
    req = urllib.request.Request(url, data=None if data is None else json.dumps(data).encode(), headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            body, status, kind = r.read(), r.status, r.headers.get("content-type", "")
    except urllib.error.HTTPError as exc:
        body, status, kind = exc.read(), exc.code, exc.headers.get("content-type", "")
    return status, (json.loads(body) if "json" in kind else body)
