"""`stylesift store check | compact | prune` on real stores, damaged ones included."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from helpers.stores import damage_features

from stylesift.featurizer.store import FeatureStore, Verdict

STYLESIFT = str(Path(sys.executable).with_name("stylesift"))
FP = {"backbone": "test", "feature_dim": 2048, "dtype": "float32"}


def sha(i: int) -> str:
    return hashlib.sha256(f"image {i}".encode()).hexdigest()


def build(path, n=60, batch=20, label_first=0):
    with FeatureStore(path, "a", fingerprint=FP, merge_rows=batch) as st:
        for b in range(0, n, batch):
            ids = [sha(i) for i in range(b, b + batch)]
            st.add(ids, np.random.default_rng(b).random((batch, 2048), np.float32), [[f"/i/{i}.jpg"] for i in range(b, b + batch)])
        if label_first:
            st.add_verdicts([Verdict(sha(i), "good", "ann", time.time()) for i in range(label_first)])


def cli(*args):
    return subprocess.run([STYLESIFT, *map(str, args)], capture_output=True, text=True, timeout=120)


def test_check_finds_a_flipped_bit_names_file_and_rows_and_repair_moves_it_aside(tmp_path):
    path = tmp_path / "s.h5"
    build(path)
    assert cli("store", "check", path).returncode == 0
    seg = damage_features(path, 5)  # in the first segment (rows 0-19)
    done = cli("store", "check", path)
    assert done.returncode == 1
    assert f"{seg}: damaged segment (sets/pooled rows 0-19 fail their Fletcher32 checksum)" in done.stdout
    assert "--repair" in done.stdout
    info = json.loads(cli("store", "check", path, "--json").stdout)
    assert not info["healthy"] and info["problems"][0]["rows"] == [0, 19]
    train = cli("compare", "--store", path, "--positive", "x")  # any command reading the features: one line
    assert "Traceback" not in train.stderr
    shown = cli("info", path)  # info reads every chunk: the damage is named with its file and rows
    assert shown.returncode == 1 and str(seg) in shown.stderr and "rows 0-19" in shown.stderr, shown.stderr
    assert "Traceback" not in shown.stderr
    assert cli("info", path, "--no-verify").returncode == 0  # counts only
    fixed = cli("store", "check", path, "--repair")
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert "moved to" in fixed.stdout
    st = FeatureStore(path)
    assert len(st) == 40 and st.row_of(sha(5)) is None and st.row_of(sha(25)) == 5  # featurized again by the next extract
    assert cli("store", "check", path).returncode == 0


def test_a_top_file_left_behind_by_a_kill_is_reported_but_is_not_damage(tmp_path):
    # A writer killed after its manifest commit and before the top file's rewrite leaves an older top
    # file: every row is still in the parts, so `check` exits 0 and says what `--repair` would do.
    from stylesift.featurizer.store.check import check

    path = tmp_path / "s.h5"
    build(path, n=40)
    old_top = path.read_bytes()
    with FeatureStore(path, "a", fingerprint=FP) as st:
        st.add([sha(99)], np.ones((1, 2048), np.float32), [["/i/99.jpg"]])
    path.write_bytes(old_top)  # as if killed before the rewrite
    report = check(path)
    assert report["healthy"] and [p["kind"] for p in report["problems"]] == ["top"]
    done = cli("store", "check", path)
    assert done.returncode == 0 and "healthy" in done.stdout and "top file missing or older" in done.stdout
    assert len(FeatureStore(path)) == 41
    assert check(path, repair=True)["repaired"]
    assert check(path)["problems"] == []


def test_a_damaged_record_and_a_stale_top_file_are_repaired(tmp_path):
    path = tmp_path / "s.h5"
    build(path, label_first=3)
    record = next((tmp_path / "s.h5.parts" / "log").glob("*.json"))
    record.write_text(record.read_text().replace('"good"', '"bad!"'))
    path.unlink()
    done = cli("store", "check", path)
    assert done.returncode == 1 and f"{record}: damaged record" in done.stdout and "top file missing" in done.stdout
    assert cli("store", "check", path, "--repair").returncode == 0
    assert cli("store", "check", path).returncode == 0
    assert FeatureStore(path).verdicts() == []  # the record's verdicts are lost, the rows are not
    assert len(FeatureStore(path)) == 60


def test_compact_and_prune_keep_labelled_rows(tmp_path):
    path = tmp_path / "s.h5"
    build(path, label_first=4)
    done = cli("store", "compact", path, "--json")
    assert done.returncode == 0 and json.loads(done.stdout)["segments"] == 1
    dry = json.loads(cli("store", "prune", path, "--older-than", "0", "--dry-run", "--json").stdout)
    assert dry["removed"] == 56 and len(FeatureStore(path)) == 60
    assert cli("store", "prune", path, "--older-than", "nan").returncode == 2
    before = FeatureStore(path).features([0, 1, 2, 3])
    out = json.loads(cli("store", "prune", path, "--older-than", "0", "--json").stdout)
    assert out["removed"] == 56 and out["kept_labelled"] == 4
    st = FeatureStore(path)
    assert list(st.sha256) == [sha(i) for i in range(4)] and set(st.labels) == {"good"}
    np.testing.assert_array_equal(st.features(), before)
    assert cli("store", "check", path).returncode == 0


@pytest.mark.slow
def test_bench_store_prints_the_table(tmp_path):
    from stylesift.featurizer.store import bench as store_bench

    results = store_bench.run([3000], tmp_path)
    (r,) = results
    assert r["rows"] == 3000 and r["stream_gb_per_s"] > 0 and r["add_2000_once_close_s"] > 0
    table = store_bench.table(results)
    assert "| 3,000 |" in table and "add 2,000 + close" in table
    assert not list(tmp_path.iterdir())  # the synthetic store is removed


def test_train_on_a_flipped_bit_names_the_file_and_rows(tmp_path):
    path = tmp_path / "s.h5"
    build(path, label_first=10)  # rows 0-9 labelled "good"
    seg = damage_features(path, 5)
    done = cli("train", "--store", path, "--positive", "good", "--method", "nearest-positives", "--out", tmp_path / "m.ssmodel")
    # train reads only the labelled rows: those are the ones named
    assert done.returncode == 1 and str(seg) in done.stderr and "rows 0-9" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "m.ssmodel").exists()
