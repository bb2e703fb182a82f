"""Runtimes behind one backbone interface: OpenVINO float32 proves it computes the Keras space; INT8 is its own.

The OpenVINO models are built once per machine and cached beside the weights, so only the first
run on a machine pays for the conversion (about 30 s) and the quantization (about a minute).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("openvino")

from helpers.pictures import skimage_photos  # noqa: E402

from stylesift.featurizer.backbones import openvino as openvino_backbone  # noqa: E402
from stylesift.featurizer.backbones import runtimes  # noqa: E402
from stylesift.featurizer.space import fingerprint_id  # noqa: E402

pytestmark = [pytest.mark.weights, pytest.mark.slow]


@pytest.fixture(scope="module")
def photos():
    from PIL import Image

    return skimage_photos(Image.Transpose.FLIP_TOP_BOTTOM, lambda w, h: (w // 5, 0, w, h * 3 // 4))


@pytest.fixture(scope="module")
def both_sets(weights):
    """The Keras reference and OpenVINO float32, each computing pooled and style in one pass."""
    return (runtimes.build(weights, "float32", "keras", ("pooled", "style")),
            runtimes.build(weights, "float32", "openvino", ("pooled", "style")))


def cosine(a, b):
    return openvino_backbone.cosines(a, b)


def test_openvino_float32_computes_the_keras_space(both_sets, photos):
    keras_bb, ov_bb = both_sets
    want, got = keras_bb.run(photos), ov_bb.run(photos)
    assert set(got) == {"pooled", "style"} and got["style"].shape == want["style"].shape
    for name in ("pooled", "style"):
        assert cosine(want[name], got[name]).min() >= openvino_backbone.FLOAT32_MIN_COSINE, name
    # Same space, so the same fingerprints: stores and bundles of either runtime mix.
    assert ov_bb.fingerprints == keras_bb.fingerprints
    check = json.loads(openvino_backbone.check_path(ov_bb.path).read_text())
    assert check["passed"] and check["min_cosine"] >= 0.99999 and set(check["per_set"]) == {"pooled", "style"}
    np.testing.assert_allclose(ov_bb(photos[:2]), got["pooled"][:2], rtol=1e-5, atol=1e-5)  # __call__ = pooled


def test_a_failed_check_keeps_openvino_off_the_float32_space(both_sets, weights, tmp_path):
    _, ov_bb = both_sets
    for p in (ov_bb.path, ov_bb.path.with_suffix(".bin")):
        (tmp_path / p.name).write_bytes(p.read_bytes())
    record = json.loads(openvino_backbone.check_path(ov_bb.path).read_text())
    record.update(passed=False, min_cosine=0.9995)
    openvino_backbone.check_path(tmp_path / ov_bb.path.name).write_text(json.dumps(record))
    from stylesift.featurizer.backbones import FastBackboneUnavailable

    with pytest.raises(FastBackboneUnavailable, match="--runtime keras"):
        openvino_backbone.OpenVINOBackbone(weights, "float32", feature_sets=("pooled", "style"), cache=tmp_path)


def test_int8_is_one_recipe_of_its_own(weights, photos):
    int8 = runtimes.build(weights, "int8", "openvino")
    fp32 = runtimes.pooled_fingerprint(weights, "float32")
    assert int8.fingerprint["quantization_id"] == openvino_backbone.INT8_RECIPE_ID
    assert fingerprint_id(int8.fingerprint) != fingerprint_id(fp32)
    # The recipe, not the machine, names the space: nothing about this CPU is in the fingerprint.
    text = json.dumps(int8.fingerprint)
    from stylesift.featurizer.bench import machine_info

    assert runtimes.machine_key() not in text and machine_info()["cpu"] not in text
    want = runtimes.build(weights, "float32", "openvino").run(photos)["pooled"]
    got = int8.run(photos)["pooled"]
    assert cosine(want, got).min() >= 0.97 and not np.array_equal(got, want)
