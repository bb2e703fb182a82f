"""The scoring service with models of the native-resolution `detail` set (alone and in `style+detail`): tiles
cut from each upload, batched through the detail network, the scores of `score --json`, inside the decode budget."""

from __future__ import annotations

import io
import json
import shutil

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("python_multipart")
pytest.importorskip("openvino")

from helpers.cli import run  # noqa: E402
from helpers.serve_world import TOKEN, files_of  # noqa: E402
from PIL import Image  # noqa: E402

from stylesift.featurizer.images import DecodeBudget, load_image  # noqa: E402
from stylesift.featurizer.store import FeatureStore  # noqa: E402

pytestmark = [pytest.mark.weights, pytest.mark.slow]

RUNTIME = "openvino"  # the same runtime for `score` and the service: scores compared to 1e-5


def photo(width: int, height: int, seed: int, noise: float) -> bytes:
    """A smooth JPEG with a few edges and, when ``noise``, per-pixel sensor-like noise (what `detail` sees)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    img = rng.uniform(40, 200, 3) + xx[..., None] * rng.uniform(-0.2, 0.2, 3) + yy[..., None] * rng.uniform(-0.2, 0.2, 3)
    img[(xx // 97 + yy // 61) % 3 == 0] += 40
    if noise:
        img = img + rng.normal(0, noise, img.shape)
    out = io.BytesIO()
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(out, "JPEG", quality=95)
    return out.getvalue()


@pytest.fixture(scope="module")
def project(tmp_path_factory, weights):
    """A store of clean and noisy photos with pooled, style and detail; models of detail, style+detail and pooled."""
    import stylesift
    from stylesift.featurizer.extract import Featurizer

    root = tmp_path_factory.mktemp("serve-detail")
    fz = Featurizer(weights, batch_size=8, workers=2, runtime=RUNTIME, feature_sets=("pooled", "style", "detail"))
    for label, noise in (("clean", 0.0), ("noisy", 14.0)):
        (root / label).mkdir()
        for i in range(8):
            (root / label / f"{label}_{i}.jpg").write_bytes(photo(360, 300, 100 + i, noise))
        fz.extract([root / label], root / "s.h5", label=label)
    (root / "models").mkdir()
    for name in ("detail", "style+detail", "pooled"):
        stylesift.train(root / "s.h5", "clean", "noisy", "head", feature_set=name).save(root / "models" / f"{name}.ssmodel")
    (root / "new").mkdir()
    for i, noise in enumerate((0.0, 0.0, 14.0, 14.0, 8.0)):
        (root / "new" / f"new_{i}.jpg").write_bytes(photo(420 + 40 * i, 330, 500 + i, noise))
    return root


def copy_store(src, to):
    shutil.copy2(src, to)
    shutil.copytree(f"{src}.parts", f"{to}.parts")
    return to


def service_of(model, store=None, budget=None, **settings):
    from stylesift.review.serve import ScoringService, ServeSettings

    return ScoringService.open(model, store, ServeSettings(**settings), runtime=RUNTIME, budget=budget)


def client(service):
    from fastapi.testclient import TestClient

    from stylesift.review.serve import create_app

    return TestClient(create_app(service, TOKEN), headers={"Authorization": f"Bearer {TOKEN}"})


@pytest.mark.parametrize("feature_set", ["detail", "style+detail"])
def test_a_detail_model_is_served_with_the_scores_of_score_json(project, tmp_path, feature_set):
    model = project / "models" / f"{feature_set}.ssmodel"
    paths = sorted((project / "new").iterdir())
    printed = run("score", model, *paths, "--store", copy_store(project / "s.h5", tmp_path / "a.h5"),
                  "--runtime", RUNTIME, "--json")
    assert printed.exit_code == 0, printed.output
    want = {r["sha256"]: r for r in json.loads(printed.stdout)}
    store = copy_store(project / "s.h5", tmp_path / "b.h5")
    service = service_of(model, store, max_batch=4)
    assert service.featurizer.wants_detail
    with client(service) as c:
        answer = c.post("/score", files=files_of(paths))
        assert answer.status_code == 200, answer.text
        got = answer.json()["results"]
        assert [r["filename"] for r in got] == [p.name for p in paths]
        for r in got:
            w = want[r["sha256"]]
            assert abs(r["score"] - w["score"]) <= 1e-5, (r["filename"], r["score"], w["score"])
            assert (r["selected"], r["group"], r["group_size"]) == (w["selected"], w["group"], w["group_size"])
        by_name = {r["filename"]: r["score"] for r in got}
        assert min(by_name["new_0.jpg"], by_name["new_1.jpg"]) > max(by_name["new_2.jpg"], by_name["new_3.jpg"])
        assert service.batcher.images == len(paths)  # every upload went through the network (tiles batched too)
        again = c.post("/score", files=files_of(paths[:2])).json()["results"]  # known now: from the recorder
        np.testing.assert_allclose([r["score"] for r in again], [r["score"] for r in got[:2]], atol=1e-5)
    assert service.batcher.images == len(paths)
    st = FeatureStore(store)
    rows = [st.row_of(r["sha256"]) for r in got]
    assert None not in rows and st.has_features("detail")[rows].all()  # recorded with every set the model needs


def test_rows_stored_without_detail_get_it_when_an_upload_repeats_them(project, tmp_path, weights):
    from stylesift.featurizer.extract import Featurizer

    store = tmp_path / "pooled.h5"
    Featurizer(weights, batch_size=8, workers=2, runtime=RUNTIME).extract([project / "new"], store)
    assert not FeatureStore(store).feature_sets.get("detail")
    service = service_of(project / "models" / "detail.ssmodel", store)
    with client(service) as c:
        assert c.post("/score", files=files_of(sorted((project / "new").iterdir())[:2])).status_code == 200
    st = FeatureStore(store)
    assert len(st) == 5 and int(st.has_features("detail").sum()) == 2  # filled in, not added twice


def test_reload_keeps_the_servers_sets_and_refuses_what_it_does_not_compute(project):
    from stylesift.review.serve import ServeError

    service = service_of(project / "models" / "detail.ssmodel")
    with client(service) as c:
        swapped = c.post("/reload", json={"path": "pooled.ssmodel"})  # fewer sets, same space: in use
        assert swapped.status_code == 200, swapped.text
        assert c.post("/score", files=files_of(sorted((project / "new").iterdir())[:1])).status_code == 200
        assert c.post("/reload", json={"path": "style+detail.ssmodel"}).status_code == 409  # style is not computed
        assert c.get("/model").json()["file"].endswith("pooled.ssmodel")  # the model in use stays
    header = {**service.slot.current.header, "summary": {"feature_set": "pooled+style"}}
    with pytest.raises(ServeError, match="computes pooled, detail") as refused:
        service.slot.check_sets(header, "m.ssmodel")
    assert refused.value.status == 409


def test_the_tiles_decode_of_a_big_upload_counts_against_the_same_budget(project, tmp_path):
    big = photo(3000, 2200, 9, 6.0)  # baseline JPEG: the 224-px decode is a cheap draft, the tiles' is not
    model = project / "models" / "detail.ssmodel"
    roomy = DecodeBudget(1024 * 2**20)
    service = service_of(model, budget=roomy)
    with client(service) as c:
        assert c.post("/score", files=[("files", ("big.jpg", big, "image/jpeg"))]).status_code == 200
    alone = DecodeBudget(1024 * 2**20)
    load_image(io.BytesIO(big), 224, budget=alone)
    assert roomy.peak > 1.25 * alone.peak  # (band decode reserves less than a whole frame) the tiles' full-resolution decode was reserved from the service's budget
    tight = DecodeBudget((roomy.peak + alone.peak) // 2)  # room for the 224-px decode, not for the tiles'
    service = service_of(model, budget=tight)
    with client(service) as c:
        small = (project / "new" / "new_0.jpg").read_bytes()
        mixed = c.post("/score", files=[("files", ("big.jpg", big, "image/jpeg")), ("files", ("ok.jpg", small, "image/jpeg"))])
        assert mixed.status_code == 200
        failed, scored = mixed.json()["results"]
        assert "decode memory budget" in failed["error"] and "big.jpg" in failed["error"] and "score" in scored
        alone_big = c.post("/score", files=[("files", ("big.jpg", big, "image/jpeg"))])
        assert alone_big.status_code == 413
    assert tight.used == 0 and roomy.used == 0
