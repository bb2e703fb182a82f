"""The ``detail`` set: tiles at native resolution (placement, decoding, orientation, bounds) and its network."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from helpers.cli import run
from PIL import Image

from stylesift.featurizer import images, tiles
from stylesift.featurizer.images import DecodeBudget, ImageError


def noisy_photo(width: int, height: int, seed: int = 0, noise: float = 0.0) -> np.ndarray:
    """A smooth picture with a few edges, optionally with per-pixel noise: uint8 ``(height, width, 3)``."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    img = rng.uniform(40, 200, 3) + xx[..., None] * rng.uniform(-0.2, 0.2, 3) + yy[..., None] * rng.uniform(-0.2, 0.2, 3)
    img[(xx // 97 + yy // 61) % 3 == 0] += 40
    img = img + rng.normal(0, noise, img.shape) if noise else img
    return np.clip(img, 0, 255).astype(np.uint8)


def jpeg_bytes(array: np.ndarray, orientation: int | None = None, quality: int = 95) -> bytes:
    out = io.BytesIO()
    img = Image.fromarray(array)
    if orientation is None:
        img.save(out, "JPEG", quality=quality)
    else:
        exif = Image.Exif()
        exif[0x0112] = orientation
        img.save(out, "JPEG", quality=quality, exif=exif)
    return out.getvalue()


def as_set(stack: np.ndarray) -> list[bytes]:
    return sorted(t.tobytes() for t in stack)


def test_grid_is_spread_over_the_frame_and_stays_inside():
    assert tiles.starts(600) == [150 - 56, 300 - 56, 450 - 56]  # centres at 1/4, 1/2, 3/4
    assert tiles.starts(tiles.TILE) == [0, 0, 0]
    assert tiles.starts(200) == [0, 44, 88]  # overlapping, still inside
    picture = noisy_photo(600, 480)
    cut = tiles.cut(picture)
    assert cut.shape == (tiles.TILES, tiles.TILE, tiles.TILE, 3)
    np.testing.assert_array_equal(cut[4], picture[184:296, 244:356])  # the middle tile is the middle


def test_a_side_shorter_than_a_tile_is_mirror_padded():
    picture = noisy_photo(300, 50)
    cut = tiles.cut(picture)
    assert cut.shape == (tiles.TILES, tiles.TILE, tiles.TILE, 3)
    assert tiles.starts(300) == [19, 94, 169]
    np.testing.assert_array_equal(cut[0][:50], picture[:50, 19:131])
    np.testing.assert_array_equal(cut[0][50:100], picture[::-1][:50, 19:131])  # mirrored, not a constant border


def textured_frame(width: int, height: int, busy: list[int], seed: int = 0) -> np.ndarray:
    """A smooth frame whose candidate tiles numbered ``busy`` (raster order) are filled with fine texture."""
    picture = noisy_photo(width, height, seed=seed, noise=1.5)
    n, t = tiles.grid_size(height, width), tiles.TILE
    rng = np.random.default_rng(seed)
    for i in busy:
        y, x = tiles.starts(height, n)[i // n], tiles.starts(width, n)[i % n]
        picture[y:y + t, x:x + t] = rng.integers(0, 256, (t, t, 3), dtype=np.uint8)
    return picture


def test_candidates_grow_with_the_frame_up_to_eight_a_side():
    assert tiles.grid_size(480, 600) == tiles.grid_size(895, 4000) == tiles.GRID  # every shared task's size
    assert tiles.grid_size(896, 1200) == tiles.grid_size(1200, 896) == 4
    assert tiles.grid_size(3024, 4032) == tiles.MAX_GRID == 8
    for length in (112, 200, 601, 1000, 3024, 4033):
        for n in (3, 4, 7, 8):
            s = tiles.starts(length, n)
            assert len(s) == n and s == sorted(s) and 0 <= s[0] and s[-1] <= max(length - tiles.TILE, 0)
            room = max(length - tiles.TILE, 0)
            assert all(s[i] + s[n - 1 - i] == room for i in range(n // 2))  # mirrored about the middle


def test_a_large_frame_keeps_its_busiest_candidates():
    busy = [0, 5, 7, 12, 20, 21, 30, 33, 35]  # 9 of the 6 x 6 candidates of a 1800 x 1400 frame
    picture = textured_frame(1800, 1400, busy)
    n = tiles.grid_size(1400, 1800)
    assert n == 6
    ys, xs = tiles.starts(1400, n), tiles.starts(1800, n)
    want = np.stack([picture[ys[i // n]:ys[i // n] + 112, xs[i % n]:xs[i % n] + 112] for i in busy])
    np.testing.assert_array_equal(tiles.cut(picture), want)
    assert tiles.busyness(want).min() > 10 * tiles.busyness(tiles.cut(noisy_photo(600, 480, noise=1.5))).max()


def test_busyness_is_exact_and_blind_to_turning():
    t = np.random.default_rng(3).integers(0, 256, (4, tiles.TILE, tiles.TILE, 3), dtype=np.uint8)
    b = tiles.busyness(t)
    assert b.dtype == np.int64 and (b > 0).all()
    for turn in (lambda a: a[:, ::-1], lambda a: np.rot90(a, 1, axes=(1, 2)), lambda a: a.transpose(0, 2, 1, 3)):
        np.testing.assert_array_equal(tiles.busyness(np.ascontiguousarray(turn(t))), b)
    assert tiles.busyness(np.full_like(t, 90)).max() == 0


@pytest.mark.parametrize("orientation", [1, 6, 3])
def test_jpeg_candidates_chosen_as_the_upright_picture_chooses(orientation):
    data = jpeg_bytes(textured_frame(1000, 1800, [1, 4, 6, 8, 9, 10, 13, 14, 15], seed=orientation), orientation)
    got = tiles.load_tiles(data, "big.jpg")
    upright = images.load_native(io.BytesIO(data), tiles.cut)
    assert got.shape == (tiles.TILES, tiles.TILE, tiles.TILE, 3)
    np.testing.assert_array_equal(got, upright)  # same tiles, same order


def test_draft_scale_is_the_scale_of_the_jpeg_draft_of_the_whole_image_input():
    for width, height in ((4032, 3024), (1800, 1000), (1000, 900), (600, 480)):
        with Image.open(io.BytesIO(jpeg_bytes(noisy_photo(width, height)))) as img:
            img.draft("RGB", (224, 224))
            s = tiles.draft_scale(height, width)
            assert img.size == (-(-width // s), -(-height // s))
    assert tiles.draft_scale(3024, 4032) == 8 and tiles.draft_scale(1000, 1800) == 4


def test_large_jpeg_candidates_are_ranked_on_the_draft_given():
    picture = noisy_photo(1800, 1000, noise=1.5)
    data = jpeg_bytes(picture)
    n, s = tiles.grid_size(1000, 1800), tiles.draft_scale(1000, 1800)
    ys, xs = tiles.starts(1000, n), tiles.starts(1800, n)
    draft = np.full((-(-1000 // s), -(-1800 // s), 3), 128, np.uint8)
    busy = [1, 2, 4, 6, 7, 9, 11, 12, 14]  # of 4 x 4; textured only in this made-up draft, not in the picture
    rng = np.random.default_rng(1)
    for i in busy:
        y, x, k = ys[i // n] // s, xs[i % n] // s, tiles.TILE // s
        draft[y:y + k, x:x + k] = rng.integers(0, 256, (k, k, 3), dtype=np.uint8)
    got = tiles.load_tiles(data, "big.jpg", draft=draft)
    full = images.load_native(io.BytesIO(data), lambda p: p)
    want = np.stack([full[ys[i // n]:ys[i // n] + 112, xs[i % n]:xs[i % n] + 112] for i in busy])
    assert np.abs(got.astype(int) - want).max() <= 1  # those candidates, at full resolution
    assert not np.array_equal(tiles.chosen(1000, 1800, tiles.reduce(full)), busy)  # the picture itself ranks others


@pytest.mark.parametrize("orientation", [1, 6])
def test_one_draft_decode_gives_the_input_and_the_tiles(orientation, monkeypatch):
    data = jpeg_bytes(textured_frame(1800, 1000, [0, 3, 5, 6, 9, 10, 12, 13, 15], seed=4), orientation)
    image, got = tiles.load_image_and_tiles(data, "big.jpg", 224)
    np.testing.assert_array_equal(image, images.load_image(io.BytesIO(data), 224))
    np.testing.assert_array_equal(got, tiles.load_tiles(data, "big.jpg"))
    np.testing.assert_array_equal(got, images.load_native(io.BytesIO(data), tiles.cut))  # as the upright picture
    decodes = []
    real = images.load_image
    monkeypatch.setattr(images, "load_image", lambda *a, **k: decodes.append(k) or real(*a, **k))
    tiles.load_image_and_tiles(data, "big.jpg", 224)
    assert len(decodes) == 1  # the draft was not decoded a second time for the ranking
    png = io.BytesIO()
    Image.fromarray(noisy_photo(400, 300, noise=8)).save(png, "PNG")
    image, got = tiles.load_image_and_tiles(png.getvalue(), "p.png", 224)
    assert image.shape == (224, 224, 3) and got.shape == (tiles.TILES, tiles.TILE, tiles.TILE, 3)


def test_jpeg_tiles_from_libvips_are_the_pixels_of_a_full_decode():
    data = jpeg_bytes(noisy_photo(600, 480, noise=12))
    got = tiles.load_tiles(data, "photo.jpg")
    reference = images.load_native(io.BytesIO(data), tiles.cut)
    assert got.dtype == np.uint8 and got.shape == (tiles.TILES, tiles.TILE, tiles.TILE, 3)
    assert np.abs(got.astype(int) - reference).max() <= 1  # the same libjpeg-turbo decode, at full size


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_exif_orientation_turns_every_tile_upright(orientation):
    data = jpeg_bytes(noisy_photo(600, 480, seed=orientation, noise=12), orientation)
    got = tiles.load_tiles(data, "turned.jpg")
    upright = images.load_native(io.BytesIO(data), tiles.cut)  # Pillow applies the orientation, then cuts
    assert as_set(got) == as_set(upright)
    ignoring = tiles.cut(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))
    assert as_set(got) != as_set(ignoring)


def test_other_formats_go_through_the_bounded_decoder():
    picture = noisy_photo(400, 300, noise=8)
    out = io.BytesIO()
    Image.fromarray(picture).save(out, "PNG")
    np.testing.assert_array_equal(tiles.load_tiles(out.getvalue(), "p.png"), tiles.cut(picture))


def test_tile_decoding_reserves_from_the_decode_budget(monkeypatch):
    data = jpeg_bytes(noisy_photo(600, 480))
    small = DecodeBudget(8 * 2**20)
    monkeypatch.setattr(images, "_BUDGET", small)
    with pytest.raises(ImageError, match="decode memory budget"):
        tiles.load_tiles(data, "big.jpg")
    roomy = DecodeBudget(512 * 2**20)
    monkeypatch.setattr(images, "_BUDGET", roomy)
    tiles.load_tiles(data, "big.jpg")
    assert 0 < roomy.peak < 64 * 2**20 and roomy.used == 0  # a few MB for a 600-px frame, released after


def test_bad_jpegs_fail_alone_naming_the_file(monkeypatch):
    data = jpeg_bytes(noisy_photo(600, 480))
    with pytest.raises(ImageError, match="cut.jpg"):
        tiles.load_tiles(data[: len(data) // 2], "cut.jpg")
    monkeypatch.setattr(images, "MAX_PIXELS", 1000)
    with pytest.raises(ImageError, match="more than the limit"):
        tiles.load_tiles(data, "huge.jpg")


def test_detail_fingerprint_names_tiles_decoder_and_precision():
    from stylesift.featurizer.backbones.detail import DETAIL_DIM, detail_fingerprint
    from stylesift.featurizer.backbones.openvino import int8_fingerprint
    from stylesift.featurizer.backbones.style import style_fingerprint
    from stylesift.featurizer.space import fingerprint_id, resnet50_fingerprint

    pooled = resnet50_fingerprint("w" * 64)
    fp = detail_fingerprint(pooled)
    assert fp["feature_set"] == "detail" and fp["feature_dim"] == DETAIL_DIM
    assert fp["tiles"]["tile"] == tiles.TILE and "libvips" in fp["tiles"]["decoder"]
    assert "geometry" not in fp  # the pooled resize does not apply to tiles
    ids = {fingerprint_id(x) for x in (pooled, fp, style_fingerprint(pooled), detail_fingerprint(int8_fingerprint(pooled)))}
    assert len(ids) == 4


def test_refusals_are_one_line():
    from stylesift.featurizer.backbones.runtimes import RuntimeUnavailable
    from stylesift.featurizer.extract import Featurizer

    with pytest.raises(RuntimeUnavailable, match="does not compute the detail set"):
        Featurizer(precision="int8", runtime="onnxruntime", feature_sets=("pooled", "detail"))


@pytest.fixture(scope="module")
def detail_project(tmp_path_factory, featurizer):
    """Clean and noisy pictures (360 × 300 px) in a store extracted with pooled only."""
    root = tmp_path_factory.mktemp("detail")
    for label, noise in (("clean", 0.0), ("noisy", 14.0)):
        (root / label).mkdir()
        for i in range(10):
            (root / label / f"{label}_{i}.jpg").write_bytes(jpeg_bytes(noisy_photo(360, 300, seed=100 + i, noise=noise)))
        featurizer.extract([root / label], root / "s.h5", label=label)
    return root


@pytest.mark.weights
@pytest.mark.slow
def test_backfill_adds_detail_to_stored_rows_and_it_sees_noise(detail_project):
    from stylesift.featurizer.backbones.detail import DETAIL_DIM
    from stylesift.featurizer.store import FeatureStore

    store = detail_project / "s.h5"
    pooled_before = FeatureStore(store).features()
    added = run("extract", detail_project / "clean", detail_project / "noisy", "--store", store,
                "--features", "pooled,detail", "--runtime", "keras", "--json")
    assert added.exit_code == 0, added.output
    assert json.loads(added.stdout)["new"] == 0
    st = FeatureStore(store)
    assert st.has_features("detail").all() and st.features(feature_set="detail").shape == (20, DETAIL_DIM)
    np.testing.assert_array_equal(st.features(), pooled_before)
    compared = run("compare", "--store", store, "--positive", "clean", "--negative", "noisy", "--folds", 4,
                   "--methods", "head", "--features", "detail", "--json")
    assert compared.exit_code == 0, compared.output
    assert json.loads(compared.stdout)["feature_sets"]["detail"]["methods"]["head"]["accuracy"] >= 0.9
    model = detail_project / "detail.ssmodel"
    trained = run("train", "--store", store, "--positive", "clean", "--negative", "noisy", "--method", "head",
                  "--features", "detail", "--out", model)
    assert trained.exit_code == 0, trained.output
    new = detail_project / "new"
    new.mkdir()
    for i, noise in enumerate((0.0, 0.0, 14.0, 14.0)):
        (new / f"{i}.jpg").write_bytes(jpeg_bytes(noisy_photo(420, 330, seed=500 + i, noise=noise)))
    scored = run("score", model, new, "--store", store, "--runtime", "keras", "--no-dedupe", "--json")
    assert scored.exit_code == 0, scored.output
    by_name = {r["path"].rsplit("/", 1)[-1]: r["score"] for r in json.loads(scored.stdout)}
    assert min(by_name["0.jpg"], by_name["1.jpg"]) > max(by_name["2.jpg"], by_name["3.jpg"])
    assert FeatureStore(store).has_features("detail").all()  # the new uploads got the model's set


@pytest.mark.weights
@pytest.mark.slow
def test_openvino_float32_detail_agrees_with_keras(weights, detail_project):
    pytest.importorskip("openvino")
    from stylesift.featurizer.backbones.detail_net import DetailNet
    from stylesift.featurizer.backbones.openvino import cosines
    from stylesift.featurizer.space import resnet50_fingerprint

    batch = np.stack([tiles.load_tiles(p.read_bytes(), p) for p in sorted((detail_project / "noisy").iterdir())])
    fp = resnet50_fingerprint(weights.fingerprint)
    keras_net = DetailNet(weights, "float32", "keras", fp)
    ov_net = DetailNet(weights, "float32", "openvino", fp)
    assert keras_net.fingerprint == ov_net.fingerprint
    assert cosines(keras_net(batch), ov_net(batch)).min() >= 0.9999


@pytest.mark.weights
@pytest.mark.slow
def test_int8_detail_is_its_own_space_and_close_to_float32(weights, detail_project):
    pytest.importorskip("nncf")
    from stylesift.featurizer.backbones.openvino import cosines
    from stylesift.featurizer.extract import Featurizer

    files = sorted((detail_project / "noisy").iterdir()) + sorted((detail_project / "clean").iterdir())
    batch = np.stack([tiles.load_tiles(p.read_bytes(), p) for p in files])
    f32 = Featurizer(weights, runtime="keras", feature_sets=("pooled", "detail"))
    int8 = Featurizer(weights, precision="int8", feature_sets=("pooled", "detail"))
    assert int8.fingerprints["detail"]["precision"] == "int8"
    assert int8.fingerprints["detail"] != f32.fingerprints["detail"]
    assert int8.detail_net.runtime == "openvino"
    assert cosines(f32.detail_net(batch), int8.detail_net(batch)).min() >= 0.98


def test_tile_decoding_has_the_decoders_time_limit(monkeypatch):
    data = jpeg_bytes(noisy_photo(600, 480, noise=12))
    monkeypatch.setattr(images, "MAX_DECODE_SECONDS", 0.0)
    with pytest.raises(ImageError, match="slow.jpg: decoding took longer than 0 s and was abandoned"):
        tiles.load_tiles(data, "slow.jpg")
    monkeypatch.setattr(images, "MAX_DECODE_SECONDS", 30.0)
    assert tiles.load_tiles(data, "slow.jpg").shape == (tiles.TILES, tiles.TILE, tiles.TILE, 3)


def test_overlapping_tile_rows_are_read_once_in_order():
    t = tiles.TILE
    assert tiles._bands([0, 36, 72], 200) == [(0, 72 + t)]  # overlapping rows: one band
    assert tiles._bands([36, 236, 436], 600) == [(36, t), (236, t), (436, t)]
    for width, height in ((200, 150), (150, 700), (900, 130)):  # overlapping and separate bands
        data = jpeg_bytes(noisy_photo(width, height, seed=width, noise=10))
        reference = images.load_native(io.BytesIO(data), tiles.cut)
        assert np.abs(tiles.load_tiles(data, "x.jpg").astype(int) - reference).max() <= 1
