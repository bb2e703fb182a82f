"""`store check` and `info` show each similarity index; `--repair` rebuilds one; a killed update loses no row (#21)."""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
from typer.testing import CliRunner

from stylesift.cli.main import app
from stylesift.featurizer.search import SimilarityIndex, check_indexes, update
from stylesift.featurizer.store import FeatureStore

D = 32
FP = {"backbone": "test", "feature_dim": D, "dtype": "float32"}
runner = CliRunner()


def sha(i: int) -> str:
    return hashlib.sha256(f"image {i}".encode()).hexdigest()


def make_store(path, n: int):
    rng = np.random.default_rng(0)
    with FeatureStore(path, "a", fingerprint=FP) as st:
        for lo in range(0, n, 500):
            ids = range(lo, min(n, lo + 500))
            st.add([sha(i) for i in ids], rng.standard_normal((len(ids), D)).astype(np.float32),
                   [[f"/img/{i}.jpg"] for i in ids])


def test_store_check_reports_each_index_and_repair_rebuilds_a_damaged_one(tmp_path):
    path = tmp_path / "s.h5"
    make_store(path, 200)
    r = runner.invoke(app, ["store", "check", str(path), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["indexes"]["pooled"]["built"] is False
    update(FeatureStore(path))
    index = SimilarityIndex(path)
    doc = json.loads((index.folder / "index.json").read_text())
    part = index.folder / doc["parts"][0]["file"]
    raw = bytearray(part.read_bytes())
    raw[-100] ^= 0xFF
    part.write_bytes(bytes(raw))
    r = runner.invoke(app, ["store", "check", str(path)])
    assert r.exit_code == 0, r.output  # the store itself is healthy: an index is derived data
    assert "index pooled: DAMAGED" in r.output and "sha256" in r.output
    r = runner.invoke(app, ["store", "check", str(path), "--repair", "--json"])
    st = json.loads(r.output)["indexes"]["pooled"]
    assert r.exit_code == 0 and st["ok"] and st["rebuilt"] and st["indexed"] == 200
    r = runner.invoke(app, ["info", str(path)])
    assert "index pooled: ok; 200 of 200 rows indexed, 0 pending" in r.output


UPDATER = textwrap.dedent("""
    import sys
    from stylesift.featurizer.search import index as ix, update
    from stylesift.featurizer.store import FeatureStore
    ix.FLAT_MAX, ix.FIT_SAMPLE, ix.MERGE_ROWS = 300, 2000, 512
    print("start", flush=True)
    while True:  # rebuild over and over, so that the kill lands inside some write
        SimilarityIndex = ix.SimilarityIndex
        SimilarityIndex(sys.argv[1]).rebuild(FeatureStore(sys.argv[1]))
""")


def _kill_and_check(path, script, delay, before):
    """Kill -9 ``script`` (running on the store at ``path``) after ``delay`` s: the store stays healthy with every
    row of ``before``, and a repair leaves the index ok or unbuilt."""
    proc = subprocess.Popen([sys.executable, "-c", script, str(path)], stdout=subprocess.PIPE)
    assert proc.stdout.readline().strip() == b"start"
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    r = runner.invoke(app, ["store", "check", str(path), "--json"])
    assert r.exit_code == 0 and json.loads(r.output)["healthy"], r.output
    assert [str(s) for s in FeatureStore(path).sha256] == before
    st = check_indexes(FeatureStore(path), repair=True)["pooled"]
    assert st["ok"] or not st["built"], st


def test_a_kill_during_an_index_update_leaves_the_store_whole_and_the_index_repairable(tmp_path):
    path = tmp_path / "s.h5"
    make_store(path, 6000)
    before = [str(s) for s in FeatureStore(path).sha256]
    for delay in (0.3, 0.9, 1.7):
        _kill_and_check(path, UPDATER, delay, before)
    update(FeatureStore(path))
    assert check_indexes(FeatureStore(path))["pooled"]["ok"]


def test_bench_index_measures_a_synthetic_and_a_real_store(tmp_path):
    r = runner.invoke(app, ["bench", "index", "--rows", "3000", "--queries", "5", "--json"])
    assert r.exit_code == 0, r.output
    (res,) = json.loads(r.stdout)
    assert res["mode"] == "store" and res["rows"] == 5000 and res["update"]["added"] == 2000
    assert 0.0 <= res["recall_at_10"] <= 1.0 and res["query_p50_ms"] <= res["query_p99_ms"]
    path = tmp_path / "real.h5"
    make_store(path, 2300)
    r = runner.invoke(app, ["bench", "index", "--store", str(path), "--queries", "5", "--json"])
    assert r.exit_code == 0, r.output
    (res,) = json.loads(r.stdout)
    assert res["mode"] == "real" and res["rows"] == 2300 and res["update"]["added"] == 2000
    assert res["build"]["added"] == 300 and res["recall_at_10"] == 1.0  # a flat index is exact
    assert not (tmp_path / "real.h5.index").exists()  # measured beside the benchmark, not the store
    make_store(tmp_path / "tiny.h5", 50)
    r = runner.invoke(app, ["bench", "index", "--store", str(tmp_path / "tiny.h5")])
    assert r.exit_code == 1 and "needs at least 2100" in r.output


GROWER = textwrap.dedent("""
    import sys
    from stylesift.featurizer.search import index as ix
    from stylesift.featurizer.search.bench import PrefixStore
    from stylesift.featurizer.store import FeatureStore
    ix.FLAT_MAX, ix.FIT_SAMPLE, ix.MERGE_ROWS, ix.BUILD_ROWS = 300, 2000, 1024, 1024
    st = FeatureStore(sys.argv[1])
    index = ix.SimilarityIndex(sys.argv[1])
    print("start", flush=True)
    while True:  # the store seen growing 150 rows a run: each update writes a part and merges the tail
        for visible in range(3000, len(st) + 1, 150):
            index.update(PrefixStore(st, st.path, visible))
        index.rebuild(PrefixStore(st, st.path, 3000))
""")


def test_a_kill_during_incremental_updates_and_merges_loses_no_row_and_is_repaired(tmp_path):
    path = tmp_path / "s.h5"
    make_store(path, 6000)
    before = [str(s) for s in FeatureStore(path).sha256]
    for delay in (0.4, 1.1, 2.3):
        _kill_and_check(path, GROWER, delay, before)
        got = SimilarityIndex(path).search(FeatureStore(path), FeatureStore(path).features([42]), 3,
                                           exclude=np.array([42]))
        assert len(got[0][0]) == 3 and 42 not in got[0][0]  # whatever the kill left, a search answers
    update(FeatureStore(path))
    st = check_indexes(FeatureStore(path))["pooled"]
    assert st["ok"] and st["indexed"] == 6000 and st["pending"] == 0
