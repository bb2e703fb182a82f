"""Near-duplicate groups: leader-first grouping by feature cosine, a group counts once toward top-k, one card per group."""

from __future__ import annotations

import numpy as np
import pytest

from stylesift.classifiers.grouping import group_by_score, group_near_duplicates, group_sizes, select_distinct


def _near(v, rng, eps):
    return v + eps * rng.standard_normal(v.shape)


def test_copies_group_together_and_distinct_vectors_stay_apart():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((2, 64))
    X = np.vstack([a, _near(a, rng, 0.05), b, _near(a, rng, 0.05) * 3.0, _near(b, rng, 0.05)])  # scale does not matter
    groups = group_near_duplicates(X, 0.9)
    assert groups[0] == groups[1] == groups[3] and groups[2] == groups[4] and groups[0] != groups[2]
    assert list(group_sizes(groups)) == [3, 3, 2, 3, 2]


def test_members_join_the_leader_or_its_matches_but_no_longer_chain():
    # Each vector is 0.95-similar to the next, but the ends are far apart: one hop from the leader, no further.
    angles = np.radians([0, 18, 36, 54, 72])
    X = np.c_[np.cos(angles), np.sin(angles)]
    groups = group_near_duplicates(X, 0.94)
    assert groups[0] == groups[1] == groups[2] and groups[3] != groups[0] and groups[3] == groups[4]


def test_group_leader_is_the_best_scoring_member_and_ids_follow_rank():
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((2, 32))
    X = np.vstack([_near(a, rng, 0.01), b, _near(a, rng, 0.01)])
    groups = group_by_score(X, np.array([0.1, 0.5, 0.9]), 0.9)
    assert groups[2] == 1 and groups[0] == 1 and groups[1] == 2


def test_a_group_counts_once_toward_top_k():
    rng = np.random.default_rng(2)
    a, b, c = rng.standard_normal((3, 32))
    X = np.vstack([a, _near(a, rng, 0.01), _near(a, rng, 0.01), b, c])
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
    groups = group_by_score(X, scores, 0.9)
    chosen, rule = select_distinct(scores, groups, top_k=2)
    assert list(np.flatnonzero(chosen)) == [0, 3] and rule["dedupe_groups"] == 3
    chosen, _ = select_distinct(scores, groups, threshold=0.55)
    assert list(np.flatnonzero(chosen)) == [0, 3]  # the copies of row 0 are behind its card, not picks


def test_threshold_must_be_a_cosine():
    with pytest.raises(ValueError, match="cosine"):
        group_near_duplicates(np.ones((2, 3)), 1.5)


def test_report_shows_one_card_per_group_with_the_others_behind_it(tmp_path):
    from PIL import Image

    from stylesift.review.report import write_report

    paths = []
    for i in range(4):
        p = tmp_path / f"img{i}.png"
        Image.new("RGB", (40, 30), (60 * i, 80, 120)).save(p)
        paths.append(p)
    rows = [{"path": str(paths[0]), "sha256": "a", "score": 0.9, "selected": True, "group": 1, "group_size": 3},
            {"path": str(paths[1]), "sha256": "b", "score": 0.8, "selected": False, "group": 1, "group_size": 3},
            {"path": str(paths[2]), "sha256": "c", "score": 0.7, "selected": False, "group": 1, "group_size": 3},
            {"path": str(paths[3]), "sha256": "d", "score": 0.1, "selected": False, "group": 2, "group_size": 1}]
    summary = write_report(tmp_path / "r.html", rows, method="two-class", threshold=0.5)
    page = (tmp_path / "r.html").read_text()
    assert summary.selected == 1 and summary.borderline == 1  # the copies are neither picks nor borderline cards
    assert page.count('<figure class="card') == 2
    assert "group of 3: 2 near-duplicates behind this card" in page and "img2.png" in page


def test_a_recompressed_or_resized_copy_groups_by_its_hash_even_when_features_drift(tmp_path):
    from PIL import Image

    from stylesift.classifiers.grouping import hamming
    from stylesift.featurizer.images import perceptual_hash

    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[0:120, 0:160]
    img = np.stack([xx * 1.5, yy * 2.0, (xx + yy) % 255], axis=-1) + rng.normal(0, 8, (120, 160, 3))
    photo = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    photo.save(tmp_path / "a.jpg", quality=92)
    photo.resize((80, 60)).save(tmp_path / "b.jpg", quality=30)
    Image.fromarray(np.clip(img[:, ::-1], 0, 255).astype(np.uint8)).save(tmp_path / "c.jpg")  # mirrored: another picture
    hashes = [perceptual_hash(tmp_path / n) for n in ("a.jpg", "b.jpg", "c.jpg")]
    assert hamming(np.array(hashes[1:], np.uint64), hashes[0]).tolist()[0] <= 4
    assert perceptual_hash(tmp_path / "missing.jpg") is None
    features = rng.standard_normal((3, 16))  # unrelated features: only the hash can group them
    groups = group_by_score(features, np.array([0.9, 0.8, 0.7]), 0.99, hash_of=lambda i: hashes[i])
    assert groups[0] == groups[1] != groups[2]
