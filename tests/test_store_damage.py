"""Damaged stores (issue #12, item 4): flipped bytes anywhere in a part, parts vanishing, give one
StoreError naming the file and what to do, never a traceback and never silently different numbers."""

from __future__ import annotations

import hashlib
import json
import traceback

import numpy as np
import pytest

from stylesift.featurizer.store import FeatureStore, StoreError, Verdict
from stylesift.featurizer.store.check import check

FP = {"backbone": "test", "feature_dim": 64, "dtype": "float32"}


def sha(i: int) -> str:
    return hashlib.sha256(f"image {i}".encode()).hexdigest()


def feature_of(i: int) -> np.ndarray:
    return np.random.default_rng(i).standard_normal(64).astype(np.float32)


@pytest.fixture
def store(tmp_path):
    path = tmp_path / "s.h5"
    with FeatureStore(path, "a", fingerprint=FP, merge_rows=40) as st:
        for b in (0, 40):
            st.add([sha(i) for i in range(b, b + 40)], np.stack([feature_of(i) for i in range(b, b + 40)]),
                   [[f"/img/{i}.jpg"] for i in range(b, b + 40)], "good")
        st.add_verdicts([Verdict(sha(3), "yes", "ann", 1.0)])
    return path


def read_everything(path) -> None:
    st = FeatureStore(path)
    ids = list(st.sha256)
    X = st.features()
    for i, x in zip(range(80), X):  # whatever is returned is the truth
        assert ids[i] == sha(i)
        np.testing.assert_array_equal(x, feature_of(i))
    assert list(st.labels) == ["yes" if i == 3 else "good" for i in range(len(ids))]  # row 3's verdict relabelled it
    assert [st.paths(i) for i in range(len(st))] == [[f"/img/{i}.jpg"] for i in range(len(ids))]
    assert st.row_of(sha(50)) == 50
    assert st.verdicts() == [Verdict(sha(3), "yes", "ann", 1.0)]


def outcome(path) -> str:
    try:
        read_everything(path)
        return "ok"
    except StoreError as exc:
        message = str(exc)
        assert "\n" not in message and str(path.parent) in message, message
        return "error"
    except AssertionError:
        raise
    except Exception:  # noqa: BLE001 - the point of the test
        pytest.fail("a traceback instead of a StoreError:\n" + traceback.format_exc())


def test_flipped_bytes_anywhere_in_a_segment_are_an_error_or_harmless(store):
    manifest = json.loads((store.parent / "s.h5.parts" / "manifest.json").read_text())
    seg = store.parent / "s.h5.parts" / manifest["segments"][0]["name"]
    original = seg.read_bytes()
    rng = np.random.default_rng(0)
    positions = sorted(set(rng.integers(0, len(original), 60).tolist()) | set(range(0, 4096, 151)))
    seen = {"ok": 0, "error": 0}
    for pos in positions:
        raw = bytearray(original)
        raw[pos] ^= 0xFF
        seg.write_bytes(bytes(raw))
        got = outcome(store)
        seen[got] += 1
        result = check(store)  # the checker never crashes either, and never calls a damaged store healthy
        if result["healthy"]:
            assert got == "ok", f"check calls the store healthy with byte {pos} flipped, but reading it fails"
            read_everything(store)
    seg.write_bytes(original)
    assert seen["error"] > 10 and outcome(store) == "ok"


def test_damaged_manifest_or_records_and_vanishing_parts(store):
    parts = store.parent / "s.h5.parts"
    for target in [parts / "manifest.json", *sorted((parts / "log").glob("*.json"))]:
        original = target.read_bytes()
        for pos in range(0, len(original), max(1, len(original) // 25)):
            raw = bytearray(original)
            raw[pos] ^= 0x01
            target.write_bytes(bytes(raw))
            assert outcome(store) == "error", (target.name, pos)  # manifest and records are checksummed
        target.write_bytes(original)
    seg = parts / json.loads((parts / "manifest.json").read_text())["segments"][1]["name"]
    seg.rename(seg.with_suffix(".away"))
    with pytest.raises(StoreError, match="store check"):
        FeatureStore(store).features()
    assert not check(store)["healthy"]
    seg.with_suffix(".away").rename(seg)
    assert outcome(store) == "ok"
