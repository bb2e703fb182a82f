"""The similarity index beside a store: built on first use, updated by what a run adds, rebuilt when damaged."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from stylesift.featurizer.search import SimilarityIndex, index_root, rebuild, state
from stylesift.featurizer.search import index as ix
from stylesift.featurizer.search.exact import TopK, exact_top_k, normalise
from stylesift.featurizer.store import FeatureStore

D = 32
FP = {"backbone": "test", "feature_dim": D, "dtype": "float32"}
CENTRES = np.random.default_rng(99).standard_normal((12, D))


def sha(i: int) -> str:
    return hashlib.sha256(f"image {i}".encode()).hexdigest()


def feats(ids) -> np.ndarray:
    """Clustered rows (a nearest-neighbour question with an answer), the same for the same ids."""
    out = []
    for i in ids:
        rng = np.random.default_rng(i)
        out.append(CENTRES[i % len(CENTRES)] + 0.4 * rng.standard_normal(D))
    return np.asarray(out, np.float32)


def add(path, ids, label=None):
    ids = list(ids)
    with FeatureStore(path, "a", fingerprint=FP) as st:
        st.add([sha(i) for i in ids], feats(ids), [[f"/img/{i}.jpg"] for i in ids], label)


@pytest.fixture
def small_index(monkeypatch):
    """Index thresholds scaled to test sizes: an inverted file from 300 rows on, parts of 256 rows."""
    monkeypatch.setattr(ix, "FLAT_MAX", 300)
    monkeypatch.setattr(ix, "MERGE_ROWS", 256)
    monkeypatch.setattr(ix, "FIT_SAMPLE", 400)


def reference(st, rows, k=5):
    Q = normalise(st.features(rows))
    top = exact_top_k(Q, [(np.arange(len(st)), st.features())], k, exclude=np.asarray(rows))
    return top.result()


def test_topk_merges_blocks_and_breaks_ties_by_row():
    top = TopK(1, 3)
    top.push(np.array([5, 1]), np.array([[0.5, 0.9]]))
    top.push(np.array([7, 2, 3]), np.array([[0.5, 0.1, 0.95]]))
    rows, sims = top.result()[0]
    assert rows.tolist() == [3, 1, 5] and sims.tolist() == pytest.approx([0.95, 0.9, 0.5])


def test_a_small_store_gets_a_flat_index_that_answers_exactly(tmp_path):
    path = tmp_path / "s.h5"
    add(path, range(120))
    st = FeatureStore(path)
    index = SimilarityIndex(path)
    report = index.update(st)
    assert report["rebuilt"] and report["added"] == 120
    assert state(st)["pooled"]["kind"] == "flat" and state(st)["pooled"]["ok"]
    rows = np.array([3, 50])
    got = index.search(st, st.features(rows), 5, exclude=rows)
    for (g, gs), (e, es) in zip(got, reference(st, rows)):
        assert g.tolist() == e.tolist() and 3 not in g.tolist()[:1]
        np.testing.assert_allclose(gs, es, rtol=1e-5)
    # beside the store, not inside its parts folder (the store's check treats unknown files there as damage)
    assert index.folder.parent == index_root(path) == tmp_path / "s.h5.index"
    assert not any("index" in p.name for p in (tmp_path / "s.h5.parts").iterdir())


def test_an_inverted_file_is_updated_by_what_a_run_adds_and_keeps_recall(tmp_path, small_index):
    path = tmp_path / "s.h5"
    add(path, range(600))
    st = FeatureStore(path)
    index = SimilarityIndex(path)
    assert index.update(st)["added"] == 600
    doc = index.sidecar()
    assert doc["quantizer"]["kind"] == "ivf"
    add(path, range(600, 640))
    st = FeatureStore(path)
    assert state(st, deep=False)["pooled"]["pending"] == 40
    # the rows not indexed yet are searched exactly: a new row is found before the update
    got = index.search(st, st.features([620]), 3, exclude=np.array([-1]))
    assert got[0][0][0] == 620
    report = index.update(st)
    assert report == {**report, "added": 40, "rebuilt": False}
    assert index.sidecar()["quantizer"] == doc["quantizer"]  # no refit: the update cost what it added
    assert state(st)["pooled"]["pending"] == 0
    rows = np.arange(0, 640, 32)
    got = index.search(st, st.features(rows), 5, exclude=rows)
    want = reference(st, rows)
    recall = np.mean([len(np.intersect1d(g, e)) / 5 for (g, _), (e, _) in zip(got, want)])
    assert recall >= 0.95
    assert all(r not in g.tolist() for r, (g, _) in zip(rows, got))


def test_parts_merge_like_a_binary_counter(tmp_path, small_index):
    path = tmp_path / "s.h5"
    add(path, range(320))
    index = SimilarityIndex(path)
    index.update(FeatureStore(path))
    for start in range(320, 400, 20):
        add(path, range(start, start + 20))
        index.update(FeatureStore(path))
    doc = index.sidecar()
    sizes = [p["rows"] for p in doc["parts"]]
    assert sum(sizes) == 400 and len(sizes) <= 4
    assert sorted(f.name for f in index.folder.iterdir()) == sorted(
        ["index.json", doc["quantizer"]["file"], *(p["file"] for p in doc["parts"])])


def _built_400(tmp_path):
    """A 400-row store with its index built: ``(path, store, index, sidecar document)``."""
    path = tmp_path / "s.h5"
    add(path, range(400))
    st = FeatureStore(path)
    index = SimilarityIndex(path)
    index.update(st)
    return path, st, index, json.loads((index.folder / "index.json").read_text())


def test_every_file_is_checksummed_and_a_damaged_one_is_rebuilt(tmp_path, small_index):
    path, st, index, doc = _built_400(tmp_path)
    part = index.folder / doc["parts"][0]["file"]
    assert hashlib.sha256(part.read_bytes()).hexdigest() == doc["parts"][0]["sha256"]
    raw = bytearray(part.read_bytes())
    raw[-200] ^= 0xFF  # same size: only the sha256 tells
    part.write_bytes(bytes(raw))
    s = state(st)["pooled"]
    assert not s["ok"] and "sha256" in s["problems"][0]
    got = index.search(st, st.features([7]), 3, exclude=np.array([7]))  # still answers (exactly)
    assert got[0][0].tolist() == reference(st, [7], 3)[0][0].tolist()
    rebuild(st)
    assert state(st)["pooled"]["ok"]


def test_a_missing_index_or_sidecar_is_rebuilt_on_update(tmp_path):
    path = tmp_path / "s.h5"
    add(path, range(50))
    st = FeatureStore(path)
    index = SimilarityIndex(path)
    index.update(st)
    (index.folder / "index.json").write_text("{not json")
    assert not state(st)["pooled"]["ok"]
    assert index.update(st)["rebuilt"]
    import shutil

    shutil.rmtree(index_root(path))
    assert index.update(st)["rebuilt"] and state(st)["pooled"]["ok"]


def test_a_renumbered_store_is_noticed(tmp_path, small_index):
    path = tmp_path / "s.h5"
    add(path, range(400))
    index = SimilarityIndex(path)
    index.update(FeatureStore(path))
    with FeatureStore(path, "a") as w:
        keep = np.ones(len(w), bool)
        keep[10] = False
        w.rewrite(keep, "prune")
    st = FeatureStore(path)
    assert any("renumbered" in p for p in index.problems(st))
    row = st.row_of(sha(200))
    got = index.search(st, st.features([row]), 1, exclude=np.array([-1]))
    assert got[0][0].tolist() == [row]  # exact until rebuilt, never a stale row number
    assert index.update(st)["rebuilt"] and state(st)["pooled"]["ok"]


def test_filters_never_shorten_the_answer(tmp_path, small_index):
    path = tmp_path / "s.h5"
    add(path, range(500))
    add(path, range(500, 520), label="good")
    st = FeatureStore(path)
    index = SimilarityIndex(path)
    index.update(st)
    allowed = st.labels.astype(str) == "good"
    got = index.search(st, st.features([0]), 10, allowed=allowed, exclude=np.array([0]))[0][0]
    assert len(got) == 10 and all(allowed[got])


def _part(index, k=0):
    doc = json.loads((index.folder / "index.json").read_text())
    return doc, doc["parts"][k], index.folder / doc["parts"][k]["file"]


def _flip(path, offset):
    raw = bytearray(path.read_bytes())
    raw[offset] ^= 0x40
    path.write_bytes(bytes(raw))


def test_opening_checks_the_small_arrays_and_a_damaged_vector_never_gives_a_wrong_similarity(tmp_path, small_index):
    path = tmp_path / "s.h5"
    add(path, range(400))
    st = FeatureStore(path)
    SimilarityIndex(path).update(st)
    index = SimilarityIndex(path)
    doc, entry, file = _part(index)
    assert entry["arrays"]["vectors"]["crc32"] is None and entry["arrays"]["rows"]["crc32"] is not None
    # a flipped bit in the store rows a part names: found on opening (crc32), the search is exact meanwhile
    _flip(file, entry["arrays"]["rows"]["offset"] + 3)
    with pytest.raises(ix.IndexDamage, match="crc32"):
        index.load()
    got = index.search(st, st.features([7]), 3, exclude=np.array([7]))
    assert got[0][0].tolist() == reference(st, [7], 3)[0][0].tolist()
    rebuild(st)
    # a damaged vector or int8 row is not read on opening (a million-row index opens without reading them):
    # it can change which candidates are re-ranked, but every similarity returned comes from the store's rows
    index = SimilarityIndex(path)
    doc, entry, file = _part(index)
    for name in ("vectors", "codes"):
        spec = entry["arrays"][name]
        for at in range(0, int(np.prod(spec["shape"])) * np.dtype(spec["dtype"]).itemsize, 997):
            _flip(file, spec["offset"] + at)
    assert index.load()[1] is not None and not state(st, deep=False)["pooled"]["problems"]
    assert "sha256" in state(st)["pooled"]["problems"][0]  # what `store check` finds (deep)
    rows = np.arange(0, 400, 40)
    X = normalise(st.features())
    for (found, sims), r in zip(index.search(st, st.features(rows), 5, exclude=rows), rows):
        np.testing.assert_allclose(sims, X[found] @ X[r], rtol=1e-5)
        assert r not in found


def test_an_index_of_the_older_format_is_rebuilt_and_its_files_removed(tmp_path, small_index):
    path, st, index, doc = _built_400(tmp_path)
    doc["version"] = 1
    (index.folder / "index.json").write_text(json.dumps(doc))
    (index.folder / "part-1-000000.npz").write_bytes(b"an index part of format 1")
    assert "version 2" in index.problems(st)[0]
    assert index.update(st)["rebuilt"]
    assert not list(index.folder.glob("*.npz")) and state(st)["pooled"]["ok"]


def test_int8_rows_keep_cosines_within_a_thousandth():
    from stylesift.featurizer.search.ivf import quantize_rows

    X = normalise(np.maximum(np.random.default_rng(3).standard_normal((200, 2048)), 0))
    codes, scale = quantize_rows(X)
    approx = codes.astype(np.float32) * scale[:, None]
    assert codes.dtype == np.int8 and np.abs(approx @ X[0] - X @ X[0]).max() < 1e-3
