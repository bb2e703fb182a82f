"""Extraction on a local Ray cluster: same store as local mode (every feature set, new rows and backfill), workers
refused on another feature space, a worker killed mid-run costs nothing. One 2-CPU cluster and one pair of workers for the whole module."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

# Read when ray is imported: the test cluster listens on loopback only (Ray's mode on macOS/Windows).
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

import h5py  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import ray  # noqa: E402
from helpers.pictures import write_pictures  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from stylesift.featurizer.ray import RayEngine, RayEngineError, WorkerMismatch
from stylesift.featurizer.store import FeatureStore
from stylesift.featurizer.weights import NOTOP_FILE, RECORD_FILE

pytestmark = [pytest.mark.weights, pytest.mark.slow]


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=300 * 2**20)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """30 pictures, one of them twice, two files that fail on the worker, one path that fails on the driver."""
    root = tmp_path_factory.mktemp("ray-inputs")
    pics = write_pictures(root / "pics", 30, seed=11)
    shutil.copy(pics[0], root / "pics" / "same_bytes_as_pic_000.jpg")
    (root / "pics" / "truncated.jpg").write_bytes(pics[1].read_bytes()[:300])
    (root / "pics" / "page.jpg").write_text("<!doctype html><html>not found</html>")
    (root / "pics" / "notes.txt").write_text("not an image: skipped by the walk, and said so")
    return [root / "pics", root / "gone.jpg"]


@pytest.fixture(scope="module")
def local_store(tmp_path_factory, inputs, featurizer):
    store = tmp_path_factory.mktemp("local") / "local.h5"
    report = featurizer.extract(inputs, store, label="good")
    assert (report.new, report.cached, len(report.failed)) == (30, 1, 3)
    return store


@pytest.fixture(scope="module")
def engine(cluster, weights):
    with RayEngine(weights, batch_size=4, workers=2) as eng:
        yield eng


def contents(store) -> dict:
    """sha256 → (label, paths, features) of every row, and the failures (features and ids with plain h5py)."""
    from stylesift.featurizer.store import FeatureStore

    st = FeatureStore(store)
    with h5py.File(store) as f:
        rows = {s.decode(): (label, st.paths(i), feats) for i, (s, label, feats) in
                enumerate(zip(f["sha256"][:], st.labels, f["features"][:]))}
        failures = {x.path: x.reason for x in st.failures}
        return {"rows": rows, "failures": failures, "fingerprint": json.loads(f.attrs["fingerprint"]),
                "n": len(f["sha256"])}


def assert_same_store(ours, theirs):
    a, b = contents(ours), contents(theirs)
    assert a["fingerprint"] == b["fingerprint"]
    assert a["n"] == len(a["rows"]), "a content is stored twice"
    assert a["rows"].keys() == b["rows"].keys()
    for sha, (label, paths, feats) in a["rows"].items():
        assert (label, paths) == b["rows"][sha][:2]
        np.testing.assert_allclose(feats, b["rows"][sha][2], rtol=1e-4, atol=1e-4)
    assert a["failures"] == b["failures"]


# First in the module: it needs a free CPU, which the shared `engine` fixture's two workers hold afterwards.
def test_a_worker_with_other_weights_is_refused_before_anything_is_sent(cluster, weights, inputs, tmp_path):
    # A node whose cache claims the right fingerprint but holds slightly different values.
    cache = tmp_path / "node-cache"
    cache.mkdir()
    shutil.copy(weights.notop, cache / NOTOP_FILE)
    with h5py.File(cache / NOTOP_FILE, "a") as f:
        f["layers/batch_normalization/vars/0"][...] *= 1.01
    (cache / RECORD_FILE).write_text(json.dumps(
        {"notop": NOTOP_FILE, "top": None, "source": "another node", "fingerprint": weights.fingerprint}))
    store = tmp_path / "s.h5"
    with RayEngine(weights, workers=1, ship_weights=False, runtime_env={"env_vars": {"STYLESIFT_CACHE": str(cache)}},
                   start_timeout=300) as eng:
        with pytest.raises(WorkerMismatch, match="weights_sha256") as info:
            eng.extract(inputs, store)
    assert weights.fingerprint in str(info.value)
    with FeatureStore(store) as st:
        assert len(st) == 0  # nothing featurized; only the driver-side failure of gone.jpg is recorded
        assert [f.path for f in st.failures] == [str(inputs[1])]


def set_rows(store, name) -> dict:
    """sha256 → features of set ``name``, for every row that holds it."""
    st = FeatureStore(store)
    has = st.has_features(name)
    return {st.sha256[i]: x for i, x, h in zip(range(len(st)), st.features(feature_set=name), has) if h}


def assert_same_sets(ours, theirs, names):
    for name in names:
        a, b = set_rows(ours, name), set_rows(theirs, name)
        assert a.keys() == b.keys() and a, name
        for sha, x in a.items():
            cos = float(x @ b[sha] / (np.linalg.norm(x) * np.linalg.norm(b[sha])))
            assert cos >= 0.9999, (name, sha, cos)
            np.testing.assert_allclose(x, b[sha], rtol=1e-4, atol=1e-4)


# Second: it holds one CPU with its own worker and frees it before the shared `engine` fixture starts.
def test_detail_and_style_on_workers_equal_local_ones_new_rows_and_backfill(cluster, weights, inputs, local_store,
                                                                             tmp_path):
    from stylesift.featurizer.extract import Featurizer

    sets = ("pooled", "style", "detail")
    big = write_pictures(tmp_path / "big", 3, seed=5, size=(420, 330))  # the grid spread over the frame
    paths = [*inputs, tmp_path / "big"]
    local = Featurizer(weights, batch_size=8, workers=2, runtime="keras", feature_sets=sets)
    local.extract(paths, tmp_path / "local.h5", label="good")
    pooled_only = [tmp_path / "pooled-ray.h5", tmp_path / "pooled-local.h5"]
    for copy in pooled_only:  # stores of pooled rows only, to backfill
        shutil.copy(local_store, copy)
        shutil.copytree(f"{local_store}.parts", f"{copy}.parts")
    local.extract(inputs, pooled_only[1])
    with RayEngine(weights, batch_size=4, workers=1, feature_sets=sets) as eng:
        report = eng.extract(paths, tmp_path / "ray.h5", label="good")
        assert (report.new, report.cached, len(report.failed)) == (33, 1, 3)
        assert report.segments_attached > 0  # the worker wrote every set into its own segments
        assert all(w["fingerprint_ids"].keys() == set(sets) for w in eng.workers_)
        refill = eng.extract(inputs, pooled_only[0])
        assert (refill.new, refill.cached, refill.refilled) == (0, 31, 30)
    assert_same_store(tmp_path / "ray.h5", tmp_path / "local.h5")  # rows, paths, labels, failures, pooled
    assert_same_sets(tmp_path / "ray.h5", tmp_path / "local.h5", sets)
    assert FeatureStore(pooled_only[0]).has_features("detail").all()
    assert_same_sets(pooled_only[0], pooled_only[1], sets)
    np.testing.assert_array_equal(FeatureStore(pooled_only[0]).features(), FeatureStore(local_store).features())
    assert len(big) == 3
    from stylesift.cli.main import app

    # The command line takes --features with --engine ray (all known here: no worker is started).
    again = CliRunner().invoke(app, ["extract", *map(str, paths), "--store", str(tmp_path / "ray.h5"), "--engine", "ray",
                                     "--features", "pooled,style,detail", "--json"])
    assert again.exit_code == 3, again.output  # done, with the three known failures
    assert (json.loads(again.stdout)["new"], json.loads(again.stdout)["rows"]) == (0, 33)


def test_ray_store_equals_local_store(engine, inputs, local_store, tmp_path):
    store = tmp_path / "ray.h5"
    report = engine.extract(inputs, store, label="good")
    assert (report.new, report.cached, report.rows) == (30, 1, 30)
    assert [Path(s["path"]).name for s in report.skipped] == ["notes.txt"]  # as the local walk reports it
    # This cluster shares the file system: workers wrote their batches as segments, the driver attached them.
    assert report.segments_attached > 0 and not list((store.parent / "ray.h5.parts" / "incoming").glob("*"))
    local = contents(local_store)
    assert {f["path"]: f["error"] for f in report.failed} == local["failures"]
    assert_same_store(store, local_store)
    assert len(engine.workers_) == 2 and all(w["refused"] is None for w in engine.workers_)

    # Known content is skipped on the driver: a fresh engine on a full store never starts a worker.
    fresh = RayEngine(engine.weights_, batch_size=4)
    again = fresh.extract(inputs, store, label="ordinary")
    assert (again.new, again.cached, again.unchanged_failures) == (0, 31, 3)
    assert not hasattr(fresh, "workers_")
    with FeatureStore(store) as st:
        assert st.label_counts() == {"ordinary": 30}


def test_features_sent_to_the_driver_give_the_same_store(engine, inputs, local_store, tmp_path):
    engine.write_segments = False  # the same workers (the cluster has no CPU for more), features through Ray
    try:
        report = engine.extract(inputs, tmp_path / "sent.h5", label="good")
    finally:
        engine.write_segments = None
    assert report.segments_attached == 0 and (report.new, report.cached) == (30, 1)
    assert_same_store(tmp_path / "sent.h5", local_store)


def test_killing_a_worker_mid_run_loses_and_duplicates_nothing(engine, inputs, local_store, tmp_path):
    store = tmp_path / "ray.h5"
    engine.extract([inputs[0] / "pic_000.jpg"], store, label="good")  # workers up before the clock starts
    victim = ray.get_actor(engine.actor_names_[0])
    pid_before = ray.get(victim.info.remote())["pid"]
    killed = []

    def progress(done, total):
        if not killed and done >= 8:  # worker results are coming in (3 ticks are the driver's own)
            ray.kill(victim, no_restart=False)  # as if the process died: Ray restarts it and retries its batches
            killed.append(total - done)

    report = engine.extract(inputs, store, label="good", progress=progress)
    assert killed and killed[0] >= 20, "the kill must come while most of the work is still ahead"
    assert ray.get(victim.info.remote())["pid"] != pid_before  # the worker really died and was restarted
    assert (report.new, report.cached, report.rows) == (29, 2, 30)
    assert_same_store(store, local_store)


# Last of the tests that use the shared workers: it leaves one of them dead for good.
def test_a_batch_that_cannot_be_retried_stops_the_run_and_keeps_the_rest(engine, inputs, local_store, featurizer,
                                                                          tmp_path):
    store = tmp_path / "ray.h5"
    engine.extract([inputs[0] / "pic_000.jpg"], store, label="good")  # workers up
    victim = ray.get_actor(engine.actor_names_[1])
    killed = []

    def progress(done, total):
        if not killed and done >= 8:
            ray.kill(victim, no_restart=True)  # gone for good: Ray cannot retry its batches
            killed.append(done)

    with pytest.raises(RayEngineError, match="could not be featurized.*saved in"):
        engine.extract(inputs, store, label="good", progress=progress)
    with FeatureStore(store) as st:
        assert 1 + 4 <= len(st) < 30  # the batches that finished are kept
    featurizer.extract(inputs, store, label="good")  # the same command again (in local mode: the workers are gone)
    assert_same_store(store, local_store)


def test_cli_engine_ray(engine, inputs, local_store, tmp_path):
    from stylesift.cli.main import app

    store = tmp_path / "copy.h5"
    shutil.copy(local_store, store)  # all content known: the command must not need any worker
    shutil.copytree(f"{local_store}.parts", f"{store}.parts")  # (a store is its file and its parts folder)
    runner = CliRunner()
    result = runner.invoke(app, ["extract", *map(str, inputs), "--store", str(store), "--engine", "ray",
                                 "--workers", "1", "--json"])
    assert result.exit_code == 3, result.output  # done, with the three known failures
    out = json.loads(result.stdout)
    assert (out["new"], out["cached"], out["rows"]) == (0, 31, 30)
    usage = runner.invoke(app, ["extract", str(inputs[0]), "--store", str(store), "--address", "auto"])
    assert usage.exit_code == 2 and "--engine ray" in usage.output
