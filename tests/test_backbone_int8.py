"""The ONNX export and the first INT8 recipe (ONNX Runtime): same network, agreeing features, own feature space.

The recipe is kept so that stores and bundles made with it keep working (``--runtime onnxruntime``).
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("onnxruntime")

from helpers.pictures import skimage_photos  # noqa: E402

from stylesift.featurizer.backbones.legacy_onnx import FastBackboneUnavailable, require_runtime  # noqa: E402
from stylesift.featurizer.backbones.runtimes import LEGACY_INT8, backbone_fingerprint, space_of_fingerprint  # noqa: E402
from stylesift.featurizer.space import fingerprint_id  # noqa: E402
from stylesift.featurizer.store import FeatureSpaceMismatch  # noqa: E402

pytestmark = [pytest.mark.weights, pytest.mark.slow]


def cosine(a, b):
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.fixture(scope="module")
def photos():
    return skimage_photos(Image.Transpose.FLIP_LEFT_RIGHT, lambda w, h: (0, h // 3, w * 2 // 3, h))


@pytest.fixture(scope="module")
def int8_featurizer(weights):
    from stylesift.featurizer.extract import Featurizer

    return Featurizer(weights, batch_size=4, workers=2, precision="int8", runtime="onnxruntime")


def test_onnx_export_computes_the_keras_network(featurizer, photos):
    import onnxruntime as ort

    from stylesift.featurizer.backbones.onnx_export import export_resnet

    model = export_resnet(featurizer.backbone.model)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    got = session.run(None, {"images": photos[:4]})[0]
    want = featurizer.featurize(photos[:4])
    assert got.shape == want.shape == (4, 2048)
    # Preprocessing, BGR flip, batch-norm and padding folding change nothing but float rounding.
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-3)


def test_exporter_refuses_layers_it_does_not_know():
    import keras

    from stylesift.featurizer.backbones.onnx_export import UnsupportedLayer, export_resnet

    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same")(inputs)
    x = keras.layers.Activation("sigmoid")(x)
    with pytest.raises(UnsupportedLayer, match="sigmoid"):
        export_resnet(keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x)), input_size=8)


def test_int8_features_agree_with_float32(featurizer, int8_featurizer, photos):
    want = featurizer.featurize(photos)
    got = int8_featurizer.featurize(photos)
    assert got.dtype == np.float32 and got.shape == (len(photos), 2048)
    assert cosine(want, got).min() >= 0.99
    assert not np.array_equal(got, want)  # really another network, not the float32 one


def test_int8_is_its_own_feature_space(tmp_path, weights, featurizer, int8_featurizer, pictures):
    fp32, int8 = backbone_fingerprint(weights, "float32"), backbone_fingerprint(weights, "int8", runtime="onnxruntime")
    assert int8["precision"] == "int8" and int8["weights_sha256"] == fp32["weights_sha256"]
    assert fingerprint_id(int8) != fingerprint_id(fp32)
    assert fingerprint_id(int8) != fingerprint_id(backbone_fingerprint(weights, "int8"))  # not the NNCF recipe
    assert space_of_fingerprint(int8) == LEGACY_INT8  # a store of it is scored with this runtime again
    assert int8_featurizer.fingerprint == int8 and int8_featurizer.backbone.fingerprint == int8

    featurizer.extract(pictures[:2], tmp_path / "float32.h5")
    with pytest.raises(FeatureSpaceMismatch, match="precision"):
        int8_featurizer.extract(pictures[2:4], tmp_path / "float32.h5")


def test_extract_cli_with_precision_int8(tmp_path, pictures, int8_featurizer):
    from typer.testing import CliRunner

    from stylesift.cli.main import app

    int8_featurizer.backbone  # the quantized network is built (and cached) once per machine
    store = tmp_path / "int8.h5"
    result = CliRunner().invoke(app, ["extract", *map(str, pictures[:3]), "--store", str(store), "--precision", "int8",
                                      "--runtime", "onnxruntime", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["new"] == 3 and json.loads(result.stdout)["runtime"] == "onnxruntime"
    # A store of the first recipe keeps its recipe with the default runtime (auto) too.
    more = CliRunner().invoke(app, ["extract", *map(str, pictures[3:5]), "--store", str(store), "--precision", "int8", "--json"])
    assert more.exit_code == 0, more.output
    assert json.loads(more.stdout)["runtime"] == "onnxruntime"
    info = CliRunner().invoke(app, ["info", str(store), "--json"])
    fp = json.loads(info.stdout)["fingerprint"]
    assert fp["precision"] == "int8" and space_of_fingerprint(fp) == LEGACY_INT8


def test_missing_runtime_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # makes `import onnxruntime` fail
    with pytest.raises(FastBackboneUnavailable, match=r"stylesift\[fast\]"):
        require_runtime()
