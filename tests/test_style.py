"""The style feature set: graph head against a numpy reference, fingerprint naming the set."""

from __future__ import annotations

import numpy as np
import pytest

from stylesift.featurizer.backbones.style import STYLE_DIM, STYLE_LAYERS, style_fingerprint, style_head
from stylesift.featurizer.space import fingerprint_id, same_space


def test_fingerprint_names_the_set_and_keeps_the_network():
    pooled = {"backbone": "keras.applications.ResNet50", "weights_sha256": "ab" * 32, "input_size": 224,
              "pooling": "global average", "feature_dim": 2048, "dtype": "float32"}
    fp = style_fingerprint(pooled)
    assert fp["feature_set"] == "style" and fp["feature_dim"] == STYLE_DIM
    assert fp["style_layers"] == list(STYLE_LAYERS)
    assert fp["weights_sha256"] == pooled["weights_sha256"] and fp["input_size"] == 224
    assert not same_space(fp, pooled)
    # Another network (an int8 one here) gives another style space.
    int8 = {**pooled, "precision": "int8"}
    assert fingerprint_id(style_fingerprint(int8)) != fingerprint_id(fp)
    assert style_fingerprint(dict(pooled)) == fp  # deterministic


@pytest.mark.weights
@pytest.mark.slow
def test_style_head_matches_numpy_statistics_of_the_tapped_layers(weights):
    import keras

    from stylesift.featurizer.backbones import preprocess

    resnet = keras.applications.ResNet50(weights=None, include_top=False, pooling="avg", input_shape=(224, 224, 3))
    resnet.load_weights(str(weights.notop))
    model = keras.Model(resnet.input, {"pooled": resnet.output, "style": style_head(resnet),
                                       **{name: resnet.get_layer(name).output for name in STYLE_LAYERS}})
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (2, 224, 224, 3), dtype=np.uint8)
    out = model.predict_on_batch(preprocess(images))
    style = np.asarray(out["style"])
    assert style.shape == (2, STYLE_DIM) and style.dtype == np.float32
    expected = np.concatenate(
        [np.concatenate([np.asarray(out[n]).mean(axis=(1, 2)), np.asarray(out[n]).std(axis=(1, 2))], axis=1)
         for n in STYLE_LAYERS], axis=1)
    np.testing.assert_allclose(style, expected, rtol=1e-3, atol=1e-4)
    # Pooled output untouched by the extra head: equals the single-output network.
    np.testing.assert_allclose(np.asarray(out["pooled"]), resnet.predict_on_batch(preprocess(images)), rtol=1e-5,
                               atol=1e-5)
