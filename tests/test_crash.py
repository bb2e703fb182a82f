"""`stylesift extract` killed (SIGKILL) or interrupted (SIGINT) at many moments never loses or corrupts the store.

Each run is the real command in a child process. After every kill the store must open with plain h5py,
every row must hold exactly its own image's features (compared with an uninterrupted extraction, and
closer to them than to any other image's), nothing committed before may be gone, and rerunning the
same command must complete the store so that it equals the uninterrupted one.

CI runs a few kills; the full count (>= 20 moments: while segments, manifests and small records are
written, inside merges, when the top file is replaced, at random times) runs with ``STYLESIFT_CRASH_KILLS=24 pytest tests/test_crash.py -s``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from stylesift.featurizer.store import FeatureStore

pytestmark = [pytest.mark.weights, pytest.mark.slow]

KILLS = int(os.environ.get("STYLESIFT_CRASH_KILLS", "3"))
N_IMAGES = 32 if KILLS <= 5 else 200
BATCH = 8
STYLESIFT = str(Path(sys.executable).with_name("stylesift"))
REPO = Path(__file__).resolve().parents[1]


def write_images(folder: Path, n: int, seed: int = 7) -> None:
    """``n`` distinct small pictures (two colours and a disc each), plus two files that cannot be decoded."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    yy, xx = np.mgrid[0:60, 0:80]
    for i in range(n):
        img = np.empty((60, 80, 3))
        img[:] = rng.uniform(0, 255, 3)
        cx, cy, r = rng.uniform(0, 80), rng.uniform(0, 60), rng.uniform(8, 30)
        img[(xx - cx) ** 2 + (yy - cy) ** 2 < r * r] = rng.uniform(0, 255, 3)
        Image.fromarray(img.astype(np.uint8)).save(folder / f"img_{i:03d}.{'png' if i % 3 else 'jpg'}")
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "notes.jpg").write_text("not a picture")


@pytest.fixture(scope="module")
def world(tmp_path_factory, featurizer):
    """The image folder and an uninterrupted reference store made from it."""
    root = tmp_path_factory.mktemp("crash")
    folder = root / "images"
    write_images(folder, N_IMAGES)
    reference = root / "reference.h5"
    featurizer.extract([folder], reference, label="good")
    ref = FeatureStore(reference)
    features = ref.features()
    return {"folder": folder, "root": root, "reference": ref, "features": features,
            "row_of": {s: i for i, s in enumerate(ref.sha256)}}


def command(world, store: Path) -> list[str]:
    return [STYLESIFT, "extract", str(world["folder"]), "--store", str(store), "--label", "good",
            "--batch-size", str(BATCH), "--workers", "2"]


def run(world, store, env=None, **kw):
    return subprocess.run(command(world, store), capture_output=True, text=True, timeout=600, cwd=REPO,
                          env={**os.environ, **(env or {})}, **kw)


def exists(store: Path) -> bool:
    return (store.with_name(store.name + ".parts") / "manifest.json").exists()


def check_rows(world, store: Path) -> set[str]:
    """Assert every row the store shows is its own image's true feature vector; return the row identities."""
    ref, features, row_of = world["reference"], world["features"], world["row_of"]
    shown = set()
    views = []
    if store.exists():
        with h5py.File(store, "r") as f:  # plain h5py, no stylesift code (the top file may lag the manifest)
            n = int(f.attrs["rows"])
            assert all(f[name].shape[0] == n for name in ("features", "sha256", "added"))
            views = [([s.decode() for s in f["sha256"][:]], f["features"][:], None)]
    if not exists(store):
        return shown  # killed before its first batch was saved: no store yet, which is fine
    st = FeatureStore(store)  # main file plus journal, as every stylesift reader sees it
    views.append((list(st.sha256), st.features(), [json.dumps(st.paths(i)) for i in range(len(st))]))
    for digests, X, paths in views:
        assert len(set(digests)) == len(digests)
        for k, (digest, x) in enumerate(zip(digests, X)):
            assert digest in row_of, "a row for content that is not in the folder"
            i = row_of[digest]
            np.testing.assert_allclose(x, features[i], rtol=1e-4, atol=1e-4)
            # and not a neighbour's vector: its own image's features are the nearest
            assert int(np.argmin(np.linalg.norm(features - x, axis=1))) == i
            if paths is not None:
                assert json.loads(paths[k]) == ref.paths(i)
        shown |= set(digests)
    return shown


def check_complete(world, store: Path) -> None:
    ref = world["reference"]
    st = FeatureStore(store)
    assert list(st.sha256) == list(ref.sha256)  # same rows, in the same order
    np.testing.assert_allclose(st.features(), world["features"], rtol=1e-4, atol=1e-4)
    assert list(st.labels) == list(ref.labels)
    assert [st.paths(i) for i in range(len(st))] == [ref.paths(i) for i in range(len(ref))]
    assert {(f.path, f.reason) for f in st.failures} == {(f.path, f.reason) for f in ref.failures}
    with h5py.File(store, "r") as f:
        assert int(f.attrs["rows"]) == len(ref)
    assert not list(store.parent.glob(f".{store.name}.*.tmp"))
    parts = store.with_name(store.name + ".parts")
    assert not [p for p in parts.iterdir() if p.name.endswith(".tmp")]
    assert len(json.loads((parts / "manifest.json").read_text())["segments"]) <= 3  # small segments were merged


def kill_schedule(n: int, rng: np.random.Generator) -> list[str]:
    """``n`` kill moments: fault-injection points (exact moments in a batch write or a commit) and random ones."""
    exact = ["segment-tmp-written:2", "merge-written:1", "manifest-renamed:3", "top-renamed:1",
             "manifest-tmp-written:1", "segment-tmp-written:1", "merge-manifest-renamed:1", "merge-sources-deleted:1",
             "segment-renamed:1", "log-tmp-written:1", "log-renamed:1", "segment-tmp-written:4"]
    if n <= 3:  # CI: one kill inside a segment write, one at random, one inside the closing merge
        return ["segment-tmp-written:2", "random", "merge-written:1"][:n]
    moments = exact + ["random"] * max(0, n - len(exact))
    return [moments[i] for i in rng.permutation(len(moments))][:n]


def kill_at_random(world, store: Path, rng: np.random.Generator) -> tuple[int, str]:
    """SIGKILL the command at a random moment: during start-up, or after a random number of batches."""
    def records() -> int:  # batches written so far (one manifest generation each)
        try:
            return json.loads((store.with_name(store.name + ".parts") / "manifest.json").read_text())["generation"]
        except (OSError, ValueError):
            return 0

    batches, already = int(rng.integers(0, 3)), records()
    proc = subprocess.Popen(command(world, store), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO)
    started = time.monotonic()
    while proc.poll() is None:
        if records() - already >= batches and (batches or time.monotonic() - started > rng.uniform(0.5, 6)):
            time.sleep(rng.uniform(0, 0.5))  # land anywhere: decoding, in the network, writing a record
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.005)
    return proc.wait(timeout=600), f"random (after {batches} batches)"


def test_sigkill_at_many_moments_loses_nothing(world):
    rng = np.random.default_rng(int(os.environ.get("STYLESIFT_CRASH_SEED", "0")))
    rounds, kills, log = 0, 0, []
    store = world["root"] / "round0" / "features.h5"
    before: set[str] = set()
    for moment in kill_schedule(KILLS, rng):
        if exists(store) and len(FeatureStore(store)) == len(world["reference"]):
            done = run(world, store)  # complete: the same command finishes the store ...
            assert done.returncode == 3, done.stderr  # (the two undecodable files)
            check_complete(world, store)  # ... and it equals the uninterrupted one
            rounds += 1
            store = world["root"] / f"round{rounds}" / "features.h5"
            before = set()
        if moment == "random":
            code, moment = kill_at_random(world, store, rng)
        else:
            code = run(world, store, env={"STYLESIFT_CRASH_AT": moment}).returncode
        kills += code == -signal.SIGKILL
        now = check_rows(world, store)
        assert before <= now, f"rows lost after a kill at {moment}"
        log.append(f"{moment}: exit {code}, rows {len(before)} -> {len(now)}")
        before = now
    done = run(world, store)
    assert done.returncode == 3, done.stderr
    check_complete(world, store)
    print(f"\n{kills} SIGKILLs of {KILLS} tries over {rounds + 1} stores of {N_IMAGES} images; "
          "every row true after each, nothing lost, every store completed equal to the reference:\n  "
          + "\n  ".join(log))
    assert kills >= KILLS - 1  # (a random kill may come after the run finished by itself)


def test_sigint_stops_cleanly_says_what_was_saved_and_resumes(world):
    store = world["root"] / "sigint" / "features.h5"
    manifest = store.with_name(store.name + ".parts") / "manifest.json"

    def generation() -> int:
        try:
            return json.loads(manifest.read_text())["generation"]
        except (OSError, ValueError):
            return 0

    proc = subprocess.Popen(command(world, store), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    while proc.poll() is None and generation() < 2:
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 130, err
    saved = int(err.split("interrupted: ")[1].split(" new images were saved")[0])
    assert f"saved to {store}; run the same command again to resume" in " ".join(err.split())
    rows = check_rows(world, store)
    assert saved == len(rows) >= 2 * BATCH
    with h5py.File(store, "r") as f:  # committed on the way out: the top file shows every saved row
        assert int(f.attrs["rows"]) == saved
    done = run(world, store)
    assert done.returncode == 3
    check_complete(world, store)
