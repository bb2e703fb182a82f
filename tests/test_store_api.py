"""The store's contract for the other parts: feature sets, verdicts, any file name, checksums, old stores."""

from __future__ import annotations

import hashlib
import json
import os

import h5py
import numpy as np
import pytest
from helpers.stores import damage_features
from helpers.v1_writer import V1Store

from stylesift.featurizer.store import (
    Failure,
    FeatureSpaceMismatch,
    FeatureStore,
    StoreError,
    Verdict,
    display_path,
    path_fields,
)

FP = {"backbone": "test", "feature_dim": 2048, "dtype": "float32"}
STYLE = {"backbone": "test", "set": "style", "feature_dim": 16, "dtype": "float32"}


def sha(i: int) -> str:
    return hashlib.sha256(f"image {i}".encode()).hexdigest()


def feature_of(digest: str, dim: int = 2048) -> np.ndarray:
    return np.random.default_rng(int(digest[:15], 16) + dim).standard_normal(dim).astype(np.float32)


def add(st, ids, label=None, paths=None):
    d = [sha(i) for i in ids]
    st.add(d, np.stack([feature_of(x) for x in d]), paths or [[f"/img/{i}.jpg"] for i in ids], label)


def test_feature_sets_side_by_side_and_a_missing_set_names_the_command(tmp_path):
    path = tmp_path / "s.h5"
    with FeatureStore(path, "a", fingerprint=FP) as st:
        st.declare_set("style", STYLE)
        d = [sha(i) for i in range(4)]
        st.add(d, {"pooled": np.stack([feature_of(x) for x in d]), "style": np.stack([feature_of(x, 16) for x in d])},
               [["/a"]] * 4, "good")
        add(st, range(4, 8))  # pooled only
    st = FeatureStore(path)
    assert set(st.feature_sets) == {"pooled", "style"} and st.feature_sets["style"] == STYLE
    assert st.has_features("style").tolist() == [True] * 4 + [False] * 4
    np.testing.assert_array_equal(st.features([2, 0], feature_set="style"),
                                  np.stack([feature_of(sha(2), 16), feature_of(sha(0), 16)]))
    with pytest.raises(StoreError, match=r"lack the feature set 'style'.*stylesift extract PATH .*--features style"):
        st.features([5], feature_set="style")
    with pytest.raises(StoreError, match=r"no feature set 'other'.*--features other"):
        st.features(feature_set="other")
    with FeatureStore(path, "a", fingerprint=FP) as st:
        with pytest.raises(FeatureSpaceMismatch):
            st.declare_set("style", {**STYLE, "backbone": "else"})
        st.add_features("style", [sha(i) for i in range(3, 8)], np.stack([feature_of(sha(i), 16) for i in range(3, 8)]))
    st = FeatureStore(path)
    assert st.has_features("style").all()
    np.testing.assert_array_equal(st.features(feature_set="style"), np.stack([feature_of(sha(i), 16) for i in range(8)]))
    X, y, ids = st.load(["good"], feature_set="style")
    assert X.shape == (4, 16) and list(ids) == [sha(i) for i in range(4)]
    with FeatureStore(path, "a", fingerprint=FP, merge_rows=1000) as st:
        st.compact()  # merges segments; the patch keeps serving its rows
    st = FeatureStore(path)
    np.testing.assert_array_equal(st.features(feature_set="style"), np.stack([feature_of(sha(i), 16) for i in range(8)]))


def test_verdicts_set_labels_keep_history_and_refuse_unknown_ids(tmp_path):
    path = tmp_path / "s.h5"
    with FeatureStore(path, "a", fingerprint=FP) as st:
        add(st, range(3), label="seen")
    with FeatureStore(path, "a") as st:
        st.add_verdicts([Verdict(sha(0), "yes", "ann", 1.0, note="nice"), Verdict(sha(1), "no", "bob", 2.0)])
        with pytest.raises(StoreError, match="does not hold"):
            st.add_verdicts([Verdict("f" * 64, "yes", "ann", 3.0)])
    with FeatureStore(path, "a") as st:
        st.add_verdicts([Verdict(sha(0), "no", "bob", 4.0, source="review")])
    st = FeatureStore(path)
    assert st.labels.tolist() == ["no", "no", "seen"]
    assert [(v.label, v.reviewer) for v in st.verdicts(sha(0))] == [("yes", "ann"), ("no", "bob")]
    assert len(st.verdicts()) == 3 and st.verdict_counts() == {"no": 2}
    with FeatureStore(path, "a", fingerprint=FP) as st:
        st.update(sha(0), label="extract-label")  # a later extract --label does not override a verdict
        st.fold()
    assert FeatureStore(path).labels.tolist() == ["no", "no", "seen"]


def test_any_file_name_is_kept_as_bytes_and_shown_printably(tmp_path):
    path = tmp_path / "s.h5"
    gbk = b"/up/\xd6\xd0\xce\xc4.jpg"  # GBK bytes: not UTF-8
    with FeatureStore(path, "a", fingerprint=FP) as st:
        add(st, [0], paths=[[os.fsdecode(gbk)]])
        add(st, [1], paths=[[b"/up/plain.jpg"]])
        st.update(sha(1), path=b"/up/\xff.jpg")
        st.set_failures([Failure(os.fsdecode(b"/up/bad\xe9.jpg"), 1, 2.0, "cannot decode")])
    for _ in range(2):  # once from the records, once folded
        st = FeatureStore(path)
        assert os.fsencode(st.paths(0)[0]) == gbk
        assert [os.fsencode(p) for p in st.paths(1)] == [b"/up/plain.jpg", b"/up/\xff.jpg"]
        assert os.fsencode(st.failures[0].path) == b"/up/bad\xe9.jpg"
        with FeatureStore(path, "a") as w:
            w.fold()
    assert display_path(st.paths(0)[0]) == "/up/\ufffd\ufffd\ufffd\ufffd.jpg"
    fields = path_fields(st.paths(0)[0])
    import base64

    assert base64.b64decode(fields["path_b64"]) == gbk and "\ufffd" in fields["path"]
    assert path_fields("/up/plain.jpg") == {"path": "/up/plain.jpg"}
    json.dumps(fields)  # always serialisable


def test_non_finite_rows_are_refused_with_their_file(tmp_path):
    path = tmp_path / "s.h5"
    with FeatureStore(path, "a", fingerprint=FP) as st:
        add(st, [0])
        X = np.stack([feature_of(sha(1)), feature_of(sha(2))])
        X[1, 7] = np.nan
        with pytest.raises(StoreError, match=r"non-finite features .* from /img/two.jpg; nothing of this batch"):
            st.add([sha(1), sha(2)], X, [["/img/one.jpg"], ["/img/two.jpg"]])
    assert len(FeatureStore(path)) == 1


def test_a_flipped_bit_in_the_features_is_an_error_naming_the_file_and_rows(tmp_path):
    path = tmp_path / "s.h5"
    with FeatureStore(path, "a", fingerprint=FP) as st:
        add(st, range(40))
    seg = damage_features(path, 20)
    st = FeatureStore(path)
    st.features([0, 1])  # other chunks read fine
    with pytest.raises(StoreError, match=rf"{seg}: features of rows \d+-\d+ fail their checksum.*store check"):
        st.features([20])
    with pytest.raises(StoreError, match="fail their checksum"):
        st.features()


def test_a_folder_or_a_foreign_file_is_one_clear_line(tmp_path):
    with pytest.raises(StoreError, match="is a folder, not a feature store"):
        FeatureStore(tmp_path)
    (tmp_path / "x.h5").write_bytes(b"not hdf5 at all" * 10)
    with pytest.raises(StoreError, match="x.h5: not a readable HDF5 feature store"):
        FeatureStore(tmp_path / "x.h5")


def test_opening_is_lazy_and_lookups_use_the_index(tmp_path):
    path = tmp_path / "s.h5"
    with FeatureStore(path, "a", fingerprint=FP) as st:
        for start in range(0, 60, 20):
            add(st, range(start, start + 20))
    st = FeatureStore(path)
    assert st._reader._sha is None and st._reader._labels is None and st._reader._meta is None  # nothing per row read on open
    assert st.row_of(sha(45)) == 45 and st.row_of("0" * 64) is None
    assert st._reader._sha is None
    assert list(st.rows_of([sha(3), "1" * 64, sha(59)])) == [3, -1, 59]


def test_an_old_store_is_read_as_it_is_and_upgraded_on_the_first_write_keeping_a_backup(tmp_path):
    path = tmp_path / "s.h5"
    with V1Store(path, "a", fingerprint=FP) as old:
        d = [sha(i) for i in range(5)]
        old.add(d, np.stack([feature_of(x) for x in d]), [[f"/img/{i}.jpg"] for i in range(5)], "good")
        old.update(sha(1), label="other", path="/img/again.jpg")
        old.set_failures([Failure("/img/bad.jpg", 0, 1.0, "empty")])
    old = V1Store(path, "a", fingerprint=FP)
    add(old, [5])  # left in the old journal
    old.close(commit=False)
    st = FeatureStore(path)  # read as it is
    assert len(st) == 6 and st.label_counts() == {"good": 4, "other": 1, "": 1}
    with FeatureStore(path, "a", fingerprint=FP) as st:
        add(st, [6])
    assert (tmp_path / "s.h5.v1-backup").is_file() and (tmp_path / "s.h5.journal.v1-backup").is_dir()
    st = FeatureStore(path)
    assert list(st.sha256) == [sha(i) for i in range(7)]
    np.testing.assert_array_equal(st.features(), np.stack([feature_of(sha(i)) for i in range(7)]))
    assert st.labels.tolist() == ["good", "other", "good", "good", "good", "", ""]
    assert st.paths(1) == ["/img/1.jpg", "/img/again.jpg"]
    assert [f.path for f in st.failures] == ["/img/bad.jpg"]
    with h5py.File(path, "r") as f:
        assert int(f.attrs["format_version"]) == 2 and f["features"].shape == (7, 2048)


def test_extract_reports_a_non_finite_row_as_a_failed_file_and_goes_on(tmp_path, monkeypatch):
    """A network that returns NaN for one image: that file is reported failed, the others are stored."""
    from PIL import Image

    from stylesift.featurizer import extract as E

    images = tmp_path / "images"
    images.mkdir()
    for i in range(3):
        Image.new("RGB", (32, 32), (60 * i, 20, 200)).save(images / f"{i}.png")
    fz = E.Featurizer.__new__(E.Featurizer)
    fz.__dict__.update(batch_size=8, workers=1, input_size=224, fingerprint=FP, fingerprints={"pooled": FP},
                       feature_sets=("pooled",), space="float32", precision="float32", runtime="keras", _backbone=None)

    def featurize(batch):
        X = np.ones((len(batch), 2048), np.float32)
        X[1, 3] = np.nan
        return X

    monkeypatch.setattr(fz, "featurize", featurize, raising=False)
    monkeypatch.setattr(E.Featurizer, "runtime_used", property(lambda self: "keras"), raising=False)
    report = fz.extract([images], tmp_path / "s.h5")
    assert report.new == 2 and len(report.failed) == 1
    assert "non-finite features" in report.failed[0]["error"] and "1.png" in report.failed[0]["error"]
    assert len(FeatureStore(tmp_path / "s.h5")) == 2


def test_a_store_of_failures_only_opens(tmp_path):
    path = tmp_path / "s.h5"
    with FeatureStore(path, "a", fingerprint=FP) as st:
        st.set_failures([Failure("/img/gone.jpg", -1, 0.0, "no such file")])
    st = FeatureStore(path)
    assert len(st) == 0 and st.fingerprint == FP and [f.path for f in st.failures] == ["/img/gone.jpg"]
    assert st.features().shape == (0, 2048) and st.label_counts() == {}


def test_a_top_file_copied_without_its_parts_is_refused_not_overwritten(tmp_path):
    path = tmp_path / "s.h5"
    with FeatureStore(path, "a", fingerprint=FP) as st:
        add(st, range(3))
    copy = tmp_path / "copy.h5"
    copy.write_bytes(path.read_bytes())
    for mode in ("r", "a"):
        with pytest.raises(StoreError, match=r"copy.h5: the store's data folder .*copy.h5.parts is missing"):
            FeatureStore(copy, mode, fingerprint=FP)
    assert copy.read_bytes() == path.read_bytes()


def test_many_lookups_switch_to_one_sorted_array_with_the_same_answers(tmp_path):
    path = tmp_path / "s.h5"
    with FeatureStore(path, "a", fingerprint={**STYLE, "set": "pooled"}, merge_rows=9000) as st:
        for start in range(0, 70000, 10000):
            d = [sha(i) for i in range(start, start + 10000)]
            st.add(d, np.zeros((10000, 16), np.float32), [[]] * 10000)
        st.add([sha(i) for i in range(70000, 70010)], np.zeros((10, 16), np.float32), [[]] * 10)
    st = FeatureStore(path)
    queries = [sha(i) for i in range(0, 70010, 7)] + ["0" * 64, "f" * 64]
    want = list(range(0, 70010, 7)) + [-1, -1]
    for q, w in zip(queries[:200], want):  # single look-ups first ...
        row = st.row_of(q)
        assert (-1 if row is None else row) == w
    assert st._reader.snapshot.global_index is None
    assert list(st.rows_of(queries)) == want  # ... then many: the global array answers the same
    assert st._reader.snapshot.global_index is not None and st.row_of(sha(70005)) == 70005


UPGRADER = r"""
import sys
from stylesift.featurizer.store import FeatureStore
FeatureStore(sys.argv[1], "a").close()
"""


@pytest.mark.parametrize("point", ["upgrade-parts-renamed", "upgrade-old-moved"])
def test_a_kill_during_the_upgrade_loses_nothing(tmp_path, point):
    import subprocess
    import sys

    path = tmp_path / "s.h5"
    with V1Store(path, "a", fingerprint=FP) as old:
        d = [sha(i) for i in range(6)]
        old.add(d, np.stack([feature_of(x) for x in d]), [[f"/img/{i}.jpg"] for i in range(6)], "good")
    done = subprocess.run([sys.executable, "-c", UPGRADER, str(path)], env={**os.environ, "STYLESIFT_CRASH_AT": point},
                          timeout=120)
    assert done.returncode == -9
    st = FeatureStore(path)
    assert list(st.sha256) == [sha(i) for i in range(6)] and set(st.labels) == {"good"}
    with FeatureStore(path, "a", fingerprint=FP) as st:
        add(st, [6])
    assert (tmp_path / "s.h5.v1-backup").is_file()
    st = FeatureStore(path)
    np.testing.assert_array_equal(st.features(), np.stack([feature_of(sha(i)) for i in range(7)]))


def test_a_segment_written_by_another_process_is_attached_checked_and_deduplicated(tmp_path):
    from stylesift.featurizer.store import segments

    path = tmp_path / "s.h5"
    with FeatureStore(path, "a", fingerprint=FP) as st:
        add(st, range(3))
        st.incoming.mkdir()
        ids = [sha(i) for i in (2, 3, 4, 4)]  # one known content, one twice
        worker_file = st.incoming / "worker-1.h5"
        segments.write_segment(worker_file, np.array(ids, "S64"), {"pooled": np.stack([feature_of(x) for x in ids])},
                               ["good"] * 4, [[b"/w/a.jpg"]] * 4, np.zeros(4))
        assert st.attach_segment(worker_file) == 2 and not worker_file.exists()
        bad = st.incoming / "worker-2.h5"
        segments.write_segment(bad, np.array([sha(9)], "S64"), {"pooled": np.zeros((1, 7), np.float32)}, [""],
                               [[]], np.zeros(1))
        with pytest.raises(FeatureSpaceMismatch, match="worker-2.h5"):
            st.attach_segment(bad)
    st = FeatureStore(path)
    assert list(st.sha256) == [sha(i) for i in range(5)]
    np.testing.assert_array_equal(st.features(), np.stack([feature_of(sha(i)) for i in range(5)]))
    assert st.labels.tolist() == ["", "", "", "good", "good"]


def _vm_flags(array: np.ndarray) -> set[str]:
    """The kernel's VmFlags of the mapping holding ``array``'s middle byte (Linux /proc/self/smaps).

    The middle: numpy advises only the 2 MiB-aligned inside of its buffer, a mapping of its own.
    """
    address, flags, inside = array.__array_interface__["data"][0] + array.nbytes // 2, None, False
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split()[0]
            if "-" in head and not head.endswith(":"):
                lo, hi = (int(x, 16) for x in head.split("-"))
                inside = lo <= address < hi
            elif inside and head == "VmFlags:":
                flags = set(line.split()[1:])
                break
    assert flags is not None, "no mapping holds the array"
    return flags


@pytest.mark.skipif(not os.path.exists("/proc/self/smaps"), reason="VmFlags are a Linux /proc file")
def test_a_large_read_lands_in_memory_without_huge_page_advice(tmp_path):
    # numpy advises huge pages ("hg") for its large arrays; a store read fills its matrix once, in
    # order, and on a long-running machine each huge page's first touch may wait on compaction.
    if "hg" not in _vm_flags(np.empty((1024, 2048), np.float32)):
        pytest.skip("numpy gives no huge-page advice on this kernel, so there is nothing to compare")
    path = tmp_path / "s.h5"
    with FeatureStore(path, "a", fingerprint=FP) as st:
        add(st, range(700), label="good")
    st = FeatureStore(path)
    X = st.features(np.arange(700)[::-1])  # 5.6 MB, over numpy's 4 MiB threshold
    assert "hg" not in _vm_flags(X)
    assert X.dtype == np.float32 and X.flags.c_contiguous and X.flags.writeable
    np.testing.assert_array_equal(X[0], feature_of(sha(699)))
    np.testing.assert_array_equal(X[-1], feature_of(sha(0)))
    small = st.features(np.arange(10))
    assert type(small.base) is not type(X.base)  # small reads keep numpy's allocator
