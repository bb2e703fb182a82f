"""History in scoring (#21): an upload that repeats an earlier stored image with a verdict is marked and not picked."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from PIL import Image

from stylesift.classifiers.grouping import choose
from stylesift.featurizer.search.history import seen_before
from stylesift.featurizer.store import FeatureStore, Verdict

D = 16
FP = {"backbone": "test", "feature_dim": D, "dtype": "float32"}


def sha(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


@pytest.fixture
def store(tmp_path):
    rng = np.random.default_rng(3)
    base = rng.standard_normal((4, D)).astype(np.float32)
    rows = {"judged": base[0], "unjudged-twin": base[0] + 0.01, "other": base[1], "repost": base[0] + 0.05,
            "new": base[2]}
    path = tmp_path / "s.h5"
    with FeatureStore(path, "a", fingerprint=FP) as st:
        st.add([sha(k) for k in rows], np.stack(list(rows.values())), [[f"/feed/{k}.jpg"] for k in rows])
        st.add_verdicts([Verdict(sha("judged"), "good", "ann", 1_700_000_000.0),
                         Verdict(sha("judged"), "plain", "bob", 1_760_000_000.0),  # the latest wins
                         Verdict(sha("other"), "good", "ann", 1_700_000_000.0)])
    return FeatureStore(path), rows


def test_a_repost_finds_the_judged_row_never_itself_and_never_an_unjudged_one(store):
    st, rows = store
    names = ["repost", "judged", "new", "unjudged-twin"]
    got = seen_before(st, [sha(n) for n in names], np.stack([rows[n] for n in names]))
    repost, judged, new, twin = got
    assert repost["sha256"] == sha("judged") and repost["label"] == "plain" and repost["path"] == "/feed/judged.jpg"
    assert repost["similarity"] >= 0.99 and repost["date"] == "2025-10-09"
    assert judged is None  # its own row does not count, and no other judged row is near it
    assert new is None
    assert twin["sha256"] == sha("judged")  # the unjudged twin is marked by the judged row ...
    assert all(g is None or g["sha256"] != sha("unjudged-twin") for g in got)  # ... and never returned itself


def test_the_threshold_decides(store):
    st, rows = store
    far = rows["judged"] + 2.0 * np.random.default_rng(0).standard_normal(D).astype(np.float32)
    cos = float(far @ rows["judged"] / np.linalg.norm(far) / np.linalg.norm(rows["judged"]))
    assert seen_before(st, [sha("x")], far[None], threshold=cos - 0.01)[0]["sha256"] == sha("judged")
    assert seen_before(st, [sha("x")], far[None], threshold=cos + 0.01) == [None]


def test_rows_seen_before_are_never_picked_and_top_k_picks_among_the_others():
    scores = np.array([0.9, 0.8, 0.7, 0.6, -0.5])
    seen = np.array([True, False, False, False, False])
    chosen, _, how = choose(scores, 0.0, top_k=2, exclude=seen)
    assert chosen.tolist() == [False, True, True, False, False] and how["excluded"] == 1
    chosen, _, _ = choose(scores, 0.0, exclude=seen)
    assert chosen.tolist() == [False, True, True, True, False]
    assert choose(scores, 0.0, exclude=np.zeros(5, bool))[0].tolist() == [True, True, True, True, False]


@pytest.mark.weights
def test_score_marks_a_recompressed_crop_of_a_judged_photo(tmp_path, featurizer):
    import skimage.data as data

    from stylesift.classifiers.bundle import Bundle
    from stylesift.classifiers.head import OutputLayerHead
    from stylesift.classifiers.predict import Predictor

    folder, feed = tmp_path / "stored", tmp_path / "feed"
    folder.mkdir()
    feed.mkdir()
    for name in ("astronaut", "chelsea", "coffee", "rocket"):
        Image.fromarray(getattr(data, name)()).convert("RGB").save(folder / f"{name}.jpg", quality=92)
    store = tmp_path / "s.h5"
    featurizer.extract([folder], store)
    st = FeatureStore(store)
    X = st.features()
    model = OutputLayerHead().fit(X, np.array([True, False, True, False]))
    bundle = Bundle(model.pipeline_, -1e9, "head", "good", "plain", st.fingerprint)  # every score is a pick
    with FeatureStore(store, "a") as w:
        w.add_verdicts([Verdict(st.sha256[1], "good", "ann", 1_760_000_000.0)])  # chelsea was judged
    cat = Image.open(folder / "chelsea.jpg")
    w, h = cat.size
    cat.crop((w // 12, h // 12, w - w // 12, h - h // 12)).resize((w * 3 // 4, h * 3 // 4)).save(feed / "cat.jpg", quality=50)
    Image.fromarray(data.camera()).convert("RGB").save(feed / "camera.jpg")
    predictor = Predictor(bundle, store, featurizer=featurizer)
    rows = {r["path"].rsplit("/", 1)[-1]: r for r in predictor.score([feed]).rows}
    assert rows["cat.jpg"]["seen_before"]["path"].endswith("chelsea.jpg") and rows["cat.jpg"]["seen_before"]["label"] == "good"
    assert not rows["cat.jpg"]["selected"] and rows["camera.jpg"]["selected"] and rows["camera.jpg"]["seen_before"] is None
    kept = {r["path"].rsplit("/", 1)[-1]: r for r in predictor.score([feed], keep_seen=True).rows}
    assert kept["cat.jpg"]["selected"] and kept["cat.jpg"]["seen_before"] is not None
    skipped = predictor.score([feed], history=False).rows
    assert all("seen_before" not in r and r["selected"] for r in skipped)


def _photo(seed: int, size=(160, 120)) -> Image.Image:
    """A smooth random picture with edges: blurred noise blobs, different per seed."""
    from PIL import ImageFilter

    rng = np.random.default_rng(seed)
    small = (rng.random((size[1] // 8, size[0] // 8, 3)) * 255).astype(np.uint8)
    return Image.fromarray(small).resize(size, Image.Resampling.BICUBIC).filter(ImageFilter.GaussianBlur(1))


@pytest.fixture
def pixel_store(tmp_path):
    """A store whose judged row's file exists: features alike for every image, so only the pixels decide."""
    judged = tmp_path / "judged.png"
    _photo(0).save(judged)
    crop = tmp_path / "crop.jpg"
    w, h = 160, 120
    _photo(0).crop((10, 8, 10 + int(w * 0.85), 8 + int(h * 0.85))).resize((100, 76)).save(crop, quality=40)  # 72 %
    other = tmp_path / "other.jpg"
    _photo(1).save(other, quality=90)
    feats = np.ones((3, D), np.float32)  # cosine 1.0 everywhere: the plain rule would mark everything
    path = tmp_path / "s.h5"
    names = {"judged": judged, "crop": crop, "other": other}
    shas = {k: hashlib.sha256(p.read_bytes()).hexdigest() for k, p in names.items()}
    with FeatureStore(path, "a", fingerprint=FP) as st:
        st.add(list(shas.values()), feats, [[str(p)] for p in names.values()])
        st.add_verdicts([Verdict(shas["judged"], "good", "ann", 1_700_000_000.0)])
    return FeatureStore(path), names, shas, feats


def test_alignment_marks_a_72_percent_crop_and_not_a_distinct_photo(pixel_store):
    from stylesift.featurizer.search.reposts import thumbnail_of

    st, names, shas, feats = pixel_store
    order = ["crop", "other", "judged"]
    got = seen_before(st, [shas[k] for k in order], feats[:3], thumb_of=lambda i: thumbnail_of(names[order[i]]))
    assert got[0] is not None and got[0]["sha256"] == shas["judged"] and got[0]["similarity"] >= 0.96
    assert got[1] is None  # cosine 1.0, but its pixels are another picture
    assert got[2] is None  # a row never matches itself


def test_a_judged_file_gone_falls_back_to_the_cosine_rule(pixel_store):
    from stylesift.featurizer.search import history
    from stylesift.featurizer.search.reposts import thumbnail_of

    st, names, shas, feats = pixel_store
    names["judged"].unlink()
    history._THUMBS.clear()
    got = seen_before(st, [shas["other"]], feats[:1], thumb_of=lambda i: thumbnail_of(names["other"]))
    assert got[0] is not None and got[0]["similarity"] == 1.0  # no pixels left: cosine 1.0 ≥ 0.90 marks it
    assert seen_before(st, [shas["other"]], feats[:1], threshold=1.01, thumb_of=lambda i: None) == [None]
