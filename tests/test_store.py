"""The feature store on its own (no network): layout, segments and manifest, commit, leftovers of killed writers."""

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
    """Every row of the store (library and plain h5py) holds its own content's vector; returns the row count."""
    if not (path.parent / (path.name + ".parts") / "manifest.json").exists():
        return 0  # killed before its first batch was listed: no store yet, which is fine
    st = FeatureStore(path)
    X = st.features()
    for digest, x in zip(st.sha256, X):
        np.testing.assert_array_equal(x, feature_of(digest))
    assert len(set(st.sha256)) == len(st)
    if path.exists():
        with h5py.File(path, "r") as f:  # the top file: virtual datasets over the segments
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
        assert int(f.attrs["format_version"]) == 2
        assert [s.decode() for s in f["sha256"][:]] == [sha(i) for i in range(5)]
        assert json.loads(f.attrs["fingerprint"]) == FP
        seg = tmp_path / f["features"].virtual_sources()[0].file_name
    with h5py.File(seg, "r") as f:  # labels and paths at extract: in the segments, readable without stylesift
        names = [n.decode() for n in f["label_names"][:]]
        assert [names[c] for c in f["label_code"][:]] == ["good"] * 5
        off, data = f["paths_offsets"][:], f["paths_data"][:].tobytes()
        assert data[off[2]:off[3]] == b"/img/2.jpg"
        assert f["sets/pooled"].fletcher32 and f["sha256"].fletcher32
    assert FeatureStore(path).failures[0].reason == "/img/bad.jpg: empty file (0 bytes)"
    assert assert_rows_true(path) == 5


def test_rows_are_durable_when_add_returns_and_survive_an_abandoned_writer(tmp_path):
    path = tmp_path / "s.h5"
    st = FeatureStore(path, "a", fingerprint=FP)
    add(st, range(3))
    add(st, range(3, 7))
    st.close(commit=False)  # as if the process died after its batches
    assert not path.exists()  # the top file comes with the first commit ...
    assert FeatureStore(path).label_counts() == {"": 7}  # ... the rows are there already
    assert assert_rows_true(path) == 7
    with FeatureStore(path, "a", fingerprint=FP):
        pass  # the next writer merges the small segments and writes the top file
    with h5py.File(path, "r") as f:
        assert int(f.attrs["rows"]) == 7
    assert assert_rows_true(path) == 7
    assert len(json.loads((tmp_path / "s.h5.parts" / "manifest.json").read_text())["segments"]) == 1


def test_the_same_content_twice_in_one_call_is_one_row(tmp_path):
    path = tmp_path / "s.h5"
    with FeatureStore(path, "a", fingerprint=FP) as st:
        d = [sha(1), sha(2), sha(1)]
        st.add(d, np.stack([feature_of(x) for x in d]), [["/a"], ["/b"], ["/c"]])
        add(st, [3])
    st = FeatureStore(path)
    assert list(st.sha256) == [sha(1), sha(2), sha(3)]
    assert assert_rows_true(path) == 3


def test_commit_keeps_a_batch_whose_bookkeeping_was_interrupted(tmp_path, monkeypatch):
    """Ctrl-C can land after a manifest's rename but before the writer noted it in memory."""
    path = tmp_path / "s.h5"
    st = FeatureStore(path, "a", fingerprint=FP)
    add(st, range(2))
    real_adopt = FeatureStore._adopt

    def interrupted(self, m):
        raise KeyboardInterrupt

    monkeypatch.setattr(FeatureStore, "_adopt", interrupted)
    with pytest.raises(KeyboardInterrupt):
        add(st, range(2, 4))
    monkeypatch.setattr(FeatureStore, "_adopt", real_adopt)
    assert len(st) == 2  # the writer never learnt of rows 2 and 3 ...
    st.close()  # ... and its merge must not write an older manifest over them
    assert assert_rows_true(path) == 4


def test_a_writer_removes_what_a_killed_writer_left_behind(tmp_path):
    path = tmp_path / "s.h5"
    with FeatureStore(path, "a", fingerprint=FP) as st:
        add(st, range(3))
        st.update(sha(0), label="x")
    parts = tmp_path / "s.h5.parts"
    listed = sorted(p.name for p in parts.iterdir())
    # Leftovers of kills: a temp top file, a temp segment, a segment written but never listed, a
    # merged-away source not yet deleted, a temp record, and a record already folded (seq <= log_seq).
    (tmp_path / ".s.h5.99999.tmp").write_bytes(b"torn copy")
    (parts / ".seg-000077.h5.99999.tmp").write_bytes(b"half a segment")
    (parts / "seg-000078.h5").write_bytes(b"unlisted")
    (parts / "seg-000078.idx.npy").write_bytes(b"unlisted")
    (parts / "log" / ".000000000009.json.99999.tmp").write_bytes(b"half a record")
    m = json.loads((parts / "manifest.json").read_text())
    assert len(FeatureStore(path)) == 3  # readers ignore all of it
    with FeatureStore(path, "a", fingerprint=FP):
        pass
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.h5", "s.h5.lock", "s.h5.parts"]
    assert sorted(p.name for p in parts.iterdir()) == listed
    assert [p.name for p in (parts / "log").iterdir()] == [f"{m['log_seq'] + 1:012d}.json"]
    assert FeatureStore(path).labels.tolist() == ["x", "", ""]


def test_a_damaged_record_or_manifest_is_named_in_the_error(tmp_path):
    path = tmp_path / "s.h5"
    st = FeatureStore(path, "a", fingerprint=FP)
    add(st, range(2))
    st.update(sha(1), label="y")
    st.close()
    record = next((tmp_path / "s.h5.parts" / "log").glob("*.json"))
    record.write_bytes(record.read_bytes().replace(b'"y"', b'"z"'))
    with pytest.raises(StoreError, match=f"{record}: damaged record.*move it away"):
        FeatureStore(path).labels
    manifest = tmp_path / "s.h5.parts" / "manifest.json"
    manifest.write_bytes(manifest.read_bytes().replace(b'"rows":2', b'"rows":3'))
    with pytest.raises(StoreError, match=f"{manifest}: damaged manifest.*checksum"):
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
    writer = FeatureStore(path, "a", fingerprint=FP, merge_rows=100)
    add(writer, range(4))
    writer.commit()
    add(writer, range(4, 9))  # a second segment
    reader = FeatureStore(path)
    assert len(reader) == 9
    writer.commit()  # merges both into one and deletes the files the reader's manifest names
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
with FeatureStore(path, "a", fingerprint=FP) as st:
    todo = [i for i in range(n) if st.row_of(hashlib.sha256(f"image {i}".encode()).hexdigest()) is None]
    for start in range(0, len(todo), batch):
        ids = todo[start:start + batch]
        d = [hashlib.sha256(f"image {i}".encode()).hexdigest() for i in ids]
        st.add(d, np.stack([feature_of(x) for x in d]), [[f"/img/{i}.jpg"] for i in ids], "good")
        st.update(d[0], path=f"/img/again/{ids[0]}.jpg")  # a small record per batch, too
        st.flush()
        st.maybe_commit()
        if start // batch % 3 == 2:
            st.commit()  # merges, and rewrites the top file
            st.fold()
"""
# Points every run passes several times; the others (top file, merges of a long tail) at least once.
FREQUENT = {"segment-tmp-written", "segment-renamed", "manifest-tmp-written", "manifest-renamed",
            "log-tmp-written", "log-renamed", "fold-meta-written", "fold-manifest-renamed", "fold-records-deleted"}


@pytest.mark.slow
@pytest.mark.parametrize("point", [p for p in S.CRASH_POINTS if not p.startswith("upgrade")])
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
    assert kills == 3 if point in FREQUENT else kills >= 1
    done = subprocess.run([sys.executable, str(script), str(path), str(n), "4"], timeout=120)
    assert done.returncode == 0
    assert assert_rows_true(path) == n
    st = FeatureStore(path)
    assert sorted(st.sha256) == sorted(sha(i) for i in range(n))
    assert set(st.labels) == {"good"}
    assert not list(tmp_path.glob(".s.h5.*.tmp"))
    assert not [p for p in (tmp_path / "s.h5.parts").iterdir() if p.name.endswith(".tmp")]


def test_readers_see_a_consistent_store_while_a_writer_appends_and_commits(tmp_path):
    path = tmp_path / "s.h5"
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    writer = subprocess.Popen([sys.executable, str(script), str(path), "240", "3"])
    seen, checks, last = [], 0, 0
    try:
        while writer.poll() is None or checks < 3:
            if (tmp_path / "s.h5.parts" / "manifest.json").exists():
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
