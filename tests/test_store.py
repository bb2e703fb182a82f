"""The feature store on its own (no network): layout, journal overlay, commit, leftovers of killed writers."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from stylesift.featurizer import store as S
from stylesift.featurizer.store import Failure, FeatureSpaceMismatch, FeatureStore, StoreError

FP = {"backbone": "test", "feature_dim": 2048, "dtype": "float32"}


def sha(i: int) -> str:
    return hashlib.sha256(f"image {i}".encode()).hexdigest()


def feature_of(digest: str) -> np.ndarray:
    """A distinct, reproducible vector per content: what a network would give, without the network."""
    return np.random.default_rng(int(digest[:15], 16)).standard_normal(2048).astype(np.float32)


def add(st: FeatureStore, ids, label=None):
    digests = [sha(i) for i in ids]
    st.add(digests, np.stack([feature_of(d) for d in digests]), [[f"/img/{i}.jpg"] for i in ids], label)


def assert_rows_true(path: Path) -> int:
    """Every row of the store (overlay and plain h5py) holds its own content's vector; returns the row count."""
    st = FeatureStore(path)
    X = st.features()
    for digest, x in zip(st.sha256, X):
        np.testing.assert_array_equal(x, feature_of(digest))
    assert len(set(st.sha256)) == len(st)
    if path.exists():
        with h5py.File(path, "r") as f:
            n = int(f.attrs["rows"])
            assert f["features"].shape == (n, 2048)
            for digest, x in zip(f["sha256"][:], f["features"][:]):
                np.testing.assert_array_equal(x, feature_of(digest.decode()))
    return len(st)


def test_rows_are_readable_with_plain_h5py_after_commit(tmp_path):
    path = tmp_path / "s.h5"
    with FeatureStore(path, "a", fingerprint=FP) as st:
        add(st, range(5), label="good")
        st.set_failures([Failure("/img/bad.jpg", 3, 1.5, "/img/bad.jpg: empty file (0 bytes)")])
    with h5py.File(path, "r") as f:
        assert f.attrs["format"] == "stylesift-store" and int(f.attrs["rows"]) == 5
        assert [s.decode() for s in f["sha256"][:]] == [sha(i) for i in range(5)]
        assert list(f["label"].asstr()[:]) == ["good"] * 5
        assert json.loads(f["paths"].asstr()[2]) == ["/img/2.jpg"]
        assert list(f["failures/reason"].asstr()[:]) == ["/img/bad.jpg: empty file (0 bytes)"]
        assert json.loads(f.attrs["fingerprint"]) == FP
    assert not list((tmp_path / "s.h5.journal").glob("*.npz"))
    assert assert_rows_true(path) == 5


def test_uncommitted_batches_are_visible_to_readers_and_survive_an_abandoned_writer(tmp_path):
    path = tmp_path / "s.h5"
    st = FeatureStore(path, "a", fingerprint=FP)
    add(st, range(3))
    add(st, range(3, 7))
    st.close(commit=False)  # as if the process died after writing its journal
    assert not path.exists()
    assert FeatureStore(path).label_counts() == {"": 7}
    assert assert_rows_true(path) == 7
    with FeatureStore(path, "a", fingerprint=FP):
        pass  # the next writer merges the journal
    with h5py.File(path, "r") as f:
        assert int(f.attrs["rows"]) == 7
    assert assert_rows_true(path) == 7


def test_the_same_content_twice_in_one_call_is_one_row(tmp_path):
    path = tmp_path / "s.h5"
    with FeatureStore(path, "a", fingerprint=FP) as st:
        d = [sha(1), sha(2), sha(1)]
        st.add(d, np.stack([feature_of(x) for x in d]), [["/a"], ["/b"], ["/c"]])
        add(st, [3])
    st = FeatureStore(path)
    assert list(st.sha256) == [sha(1), sha(2), sha(3)]
    assert assert_rows_true(path) == 3


def test_commit_merges_a_record_whose_bookkeeping_was_interrupted(tmp_path, monkeypatch):
    """Ctrl-C can land after a record's rename but before the writer noted its rows in memory."""
    path = tmp_path / "s.h5"
    st = FeatureStore(path, "a", fingerprint=FP)
    add(st, range(2))
    real_apply = FeatureStore._apply

    def interrupted(self, meta, record):
        raise KeyboardInterrupt

    monkeypatch.setattr(FeatureStore, "_apply", interrupted)
    with pytest.raises(KeyboardInterrupt):
        add(st, range(2, 4))
    monkeypatch.setattr(FeatureStore, "_apply", real_apply)
    assert len(st) == 2  # the writer never learnt of rows 2 and 3 ...
    st.close()
    assert assert_rows_true(path) == 4  # ... yet its commit kept them


def test_a_writer_removes_what_a_killed_writer_left_behind(tmp_path):
    path = tmp_path / "s.h5"
    with FeatureStore(path, "a", fingerprint=FP) as st:
        add(st, range(3))
    journal = tmp_path / "s.h5.journal"
    # Leftovers of a kill inside commit (temp copy), inside a batch (temp record) and after a commit's
    # rename but before its records were deleted (a record already merged: seq <= journal_seq).
    (tmp_path / ".s.h5.99999.tmp").write_bytes(b"torn copy")
    (journal / ".000000000002.99999.tmp").write_bytes(b"half a record")
    with h5py.File(path, "r") as f:
        merged_seq = int(f.attrs["journal_seq"])
    stale = journal / f"{merged_seq:012d}.npz"
    np.savez(stale, meta=np.array(json.dumps({"rows": [{"sha256": sha(0), "paths": [], "label": "x", "added": 0}]})),
             features=np.zeros((1, 2048), np.float32))
    assert len(FeatureStore(path)) == 3  # readers ignore all of it
    with FeatureStore(path, "a", fingerprint=FP):
        pass
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.h5", "s.h5.journal", "s.h5.lock"]
    assert list(journal.iterdir()) == []
    assert FeatureStore(path).labels.tolist() == ["", "", ""]


def test_a_damaged_journal_record_is_named_in_the_error(tmp_path):
    path = tmp_path / "s.h5"
    st = FeatureStore(path, "a", fingerprint=FP)
    add(st, range(2))
    st.close(commit=False)
    record = next((tmp_path / "s.h5.journal").glob("*.npz"))
    record.write_bytes(record.read_bytes()[:100])
    with pytest.raises(StoreError, match=f"{record}: damaged journal record.*move it away"):
        FeatureStore(path)


def test_another_feature_space_is_refused(tmp_path):
    path = tmp_path / "s.h5"
    with FeatureStore(path, "a", fingerprint=FP) as st:
        add(st, [0])
    with pytest.raises(FeatureSpaceMismatch, match="another feature space"):
        FeatureStore(path, "a", fingerprint={**FP, "backbone": "other"})
    assert assert_rows_true(path) == 1


def test_a_reader_keeps_a_true_view_while_a_writer_commits_under_it(tmp_path):
    path = tmp_path / "s.h5"
    writer = FeatureStore(path, "a", fingerprint=FP)
    add(writer, range(4))
    writer.commit()
    add(writer, range(4, 9))  # journal only
    reader = FeatureStore(path)
    assert len(reader) == 9
    writer.commit()  # merges and deletes the records the reader's overlay points at
    add(writer, range(9, 12))
    writer.close()
    X = reader.features()
    np.testing.assert_array_equal(X, np.stack([feature_of(d) for d in reader.sha256]))
    assert list(reader.sha256) == [sha(i) for i in range(9)]  # a snapshot: later rows are not in it
    assert len(FeatureStore(path)) == 12


def test_a_second_writer_waits_or_fails_clearly(tmp_path, caplog):
    path = tmp_path / "s.h5"
    first = FeatureStore(path, "a", fingerprint=FP)
    # filelock locks are re-entrant within a process, so the contender must be another process.
    contender = [sys.executable, "-c", (
        "import sys; from stylesift.featurizer.store import FeatureStore, StoreError\n"
        "try:\n    FeatureStore(sys.argv[1], 'a', lock_timeout=float(sys.argv[2])).close()\n"
        "except StoreError as e:\n    print(e); sys.exit(7)\n"
        "print('got the lock')"), str(path)]
    busy = subprocess.run(contender + ["0.5"], capture_output=True, text=True, timeout=60)
    assert busy.returncode == 7
    assert "another process is writing this store" in busy.stdout and "s.h5.lock" in busy.stdout
    waiting = subprocess.Popen(contender + ["-1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    notice = waiting.stderr.readline()  # the user learns why nothing happens ...
    assert "another process is writing this store; waiting for it to finish" in notice
    time.sleep(0.5)
    assert waiting.poll() is None  # ... and it really waits for the first writer
    add(first, range(3))
    first.close()
    out, err = waiting.communicate(timeout=60)
    assert waiting.returncode == 0 and "got the lock" in out
    assert assert_rows_true(path) == 3


# ------------------------------------------------------------------ kills at every point of the protocol
WRITER = r"""
import hashlib, sys, numpy as np
from stylesift.featurizer.store import FeatureStore
FP = {"backbone": "test", "feature_dim": 2048, "dtype": "float32"}
def feature_of(d): return np.random.default_rng(int(d[:15], 16)).standard_normal(2048).astype(np.float32)
path, n, batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
with FeatureStore(path, "a", fingerprint=FP, compact_rows=2 * batch) as st:
    todo = [i for i in range(n) if st.row_of(hashlib.sha256(f"image {i}".encode()).hexdigest()) is None]
    for start in range(0, len(todo), batch):
        ids = todo[start:start + batch]
        d = [hashlib.sha256(f"image {i}".encode()).hexdigest() for i in ids]
        st.add(d, np.stack([feature_of(x) for x in d]), [[f"/img/{i}.jpg"] for i in ids], "good")
        st.maybe_commit()
"""


@pytest.mark.slow
@pytest.mark.parametrize("point", S.CRASH_POINTS)
def test_sigkill_at_each_point_of_a_batch_and_a_commit_loses_nothing(tmp_path, point):
    path = tmp_path / "s.h5"
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    n, rows, kills = 80, 0, 0
    for nth in (1, 2, 3):  # the first, second and third time the point is passed
        env = {**os.environ, "STYLESIFT_CRASH_AT": f"{point}:{nth}"}
        done = subprocess.run([sys.executable, str(script), str(path), str(n), "4"], env=env, timeout=120)
        kills += done.returncode == -9
        now = assert_rows_true(path)  # opens, and every row is its own content's vector
        assert now >= rows  # nothing that was there before is lost
        rows = now
    assert kills == 3
    done = subprocess.run([sys.executable, str(script), str(path), str(n), "4"], timeout=120)
    assert done.returncode == 0
    assert assert_rows_true(path) == n
    st = FeatureStore(path)
    assert sorted(st.sha256) == sorted(sha(i) for i in range(n))
    assert set(st.labels) == {"good"}
    assert not list(tmp_path.glob(".s.h5.*.tmp"))


def test_readers_see_a_consistent_store_while_a_writer_appends_and_commits(tmp_path):
    path = tmp_path / "s.h5"
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    writer = subprocess.Popen([sys.executable, str(script), str(path), "240", "3"])
    seen, checks, last = [], 0, 0
    try:
        while writer.poll() is None or checks < 3:
            if path.exists() or (tmp_path / "s.h5.journal").is_dir():
                st = FeatureStore(path)
                digests = list(st.sha256)
                assert digests == [sha(i) for i in range(len(digests))]  # a prefix of the history, in order
                X = st.features()
                expected = np.array([feature_of(d) for d in digests], np.float32).reshape(X.shape)
                np.testing.assert_array_equal(X, expected)
                assert len(digests) >= last
                last = len(digests)
                seen.append(last)
                checks += 1
    finally:
        writer.wait(timeout=120)
    assert writer.returncode == 0
    assert last == 240 and len(set(seen)) > 3  # the reader really watched the store grow
