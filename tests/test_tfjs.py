"""The TF.js → Keras 3 converter, on a tiny ResNet-named model that the test writes itself."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest

from stylesift.featurizer.weights.tfjs import ConversionError, assign_keras2_weights, keras3_name, load_tfjs_weights


def tiny_keras3_model():
    """Layers named as in keras.applications.ResNet50, shapes tiny."""
    inp = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, name="conv1_conv")(inp)
    x = keras.layers.BatchNormalization(name="conv1_bn")(x)
    short = keras.layers.Conv2D(6, 1, name="conv2_block1_0_conv")(x)
    x = keras.layers.Conv2D(6, 1, name="conv2_block1_1_conv")(x)
    x = keras.layers.BatchNormalization(name="conv2_block1_1_bn")(x)
    x = keras.layers.Add()([x, short])
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = keras.layers.Dense(5, name="predictions")(x)
    return keras.Model(inp, out)


KERAS2 = {  # Keras 2 layer name -> (kind, shapes in manifest order)
    "conv1": {"kernel": (3, 3, 3, 4), "bias": (4,)},
    "bn_conv1": {"gamma": (4,), "beta": (4,), "moving_mean": (4,), "moving_variance": (4,)},
    "res2a_branch1": {"kernel": (1, 1, 4, 6), "bias": (6,)},
    "res2a_branch2a": {"kernel": (1, 1, 4, 6), "bias": (6,)},
    "bn2a_branch2a": {"gamma": (6,), "beta": (6,), "moving_mean": (6,), "moving_variance": (6,)},
    "fc1000": {"kernel": (6, 5), "bias": (5,)},
}


def write_tfjs(folder, arrays, *, n_shards=2, drop_bytes=0, extra=None):
    """Write arrays as a TF.js layers model: model.json + shards, values back to back in manifest order."""
    folder.mkdir(parents=True, exist_ok=True)
    entries, blobs = [], []
    # Manifest order deliberately differs from the model's layer order, as in the real package.
    for name in sorted(arrays):
        for param, value in arrays[name].items():
            entries.append({"name": f"{name}/{param}", "shape": list(value.shape), "dtype": "float32"})
            blobs.append(value.astype("<f4").tobytes())
    if extra:
        entries.append(extra)
    blob = b"".join(blobs)
    blob = blob[: len(blob) - drop_bytes] if drop_bytes else blob
    cut = len(blob) // n_shards
    shards = [blob[i * cut : (i + 1) * cut if i < n_shards - 1 else len(blob)] for i in range(n_shards)]
    paths = [f"group1-shard{i + 1}of{n_shards}.bin" for i in range(n_shards)]
    for path, data in zip(paths, shards):
        (folder / path).write_bytes(data)
    manifest = {"format": "layers-model", "modelTopology": {}, "weightsManifest": [{"paths": paths, "weights": entries}]}
    (folder / "model.json").write_text(json.dumps(manifest))


@pytest.fixture
def arrays():
    rng = np.random.default_rng(1)
    return {layer: {p: rng.normal(size=s).astype(np.float32) for p, s in params.items()} for layer, params in KERAS2.items()}


def test_names_map_to_keras3():
    assert keras3_name("conv1") == ("conv1_conv", "conv")
    assert keras3_name("bn_conv1") == ("conv1_bn", "bn")
    assert keras3_name("fc1000") == ("predictions", "dense")
    assert keras3_name("res2a_branch1") == ("conv2_block1_0_conv", "conv")
    assert keras3_name("bn4f_branch2c") == ("conv4_block6_3_bn", "bn")
    assert keras3_name("res5c_branch2b") == ("conv5_block3_2_conv", "conv")
    with pytest.raises(ConversionError, match="unknown"):
        keras3_name("dense_7")


def test_converter_copies_every_array_to_the_right_layer(tmp_path, arrays):
    write_tfjs(tmp_path / "m", arrays)
    loaded = load_tfjs_weights(tmp_path / "m")
    for layer, params in arrays.items():
        for p, value in params.items():
            np.testing.assert_array_equal(loaded[layer][p], value)
    model = tiny_keras3_model()
    assert assign_keras2_weights(model, loaded) == 6
    np.testing.assert_array_equal(model.get_layer("conv1_conv").kernel.numpy(), arrays["conv1"]["kernel"])
    bn = model.get_layer("conv2_block1_1_bn")
    np.testing.assert_array_equal(bn.moving_variance.numpy(), arrays["bn2a_branch2a"]["moving_variance"])
    np.testing.assert_array_equal(bn.gamma.numpy(), arrays["bn2a_branch2a"]["gamma"])
    np.testing.assert_array_equal(model.get_layer("predictions").bias.numpy(), arrays["fc1000"]["bias"])


def test_headless_model_may_leave_only_the_head_over(tmp_path, arrays):
    inp = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, name="conv1_conv")(inp)
    headless = keras.Model(inp, keras.layers.BatchNormalization(name="conv1_bn")(x))
    subset = {k: arrays[k] for k in ("conv1", "bn_conv1", "fc1000")}
    with pytest.raises(ConversionError, match="predictions"):
        assign_keras2_weights(headless, subset)
    assert assign_keras2_weights(headless, subset, allow_unused={"fc1000"}) == 2


def test_missing_layer_fails_loudly(tmp_path, arrays):
    del arrays["bn2a_branch2a"]
    write_tfjs(tmp_path / "m", arrays)
    with pytest.raises(ConversionError, match="no weights for 1 layers"):
        assign_keras2_weights(tiny_keras3_model(), load_tfjs_weights(tmp_path / "m"))


def test_wrong_shape_fails_loudly(tmp_path, arrays):
    arrays["res2a_branch2a"]["kernel"] = np.zeros((1, 1, 4, 7), np.float32)
    arrays["res2a_branch2a"]["bias"] = np.zeros((7,), np.float32)
    write_tfjs(tmp_path / "m", arrays)
    with pytest.raises(ConversionError, match="shapes"):
        assign_keras2_weights(tiny_keras3_model(), load_tfjs_weights(tmp_path / "m"))


def test_truncated_shards_and_unsupported_dtypes_are_refused(tmp_path, arrays):
    write_tfjs(tmp_path / "short", arrays, drop_bytes=8)
    with pytest.raises(ConversionError, match="truncated"):
        load_tfjs_weights(tmp_path / "short")
    write_tfjs(tmp_path / "q", arrays, extra={"name": "x/kernel", "shape": [2], "dtype": "uint8"})
    with pytest.raises(ConversionError, match="only float32"):
        load_tfjs_weights(tmp_path / "q")
    with pytest.raises(ConversionError, match="model.json"):
        load_tfjs_weights(tmp_path / "nowhere")
