"""The headless ImageNet ResNet50 on Keras: the reference network every other runtime is checked against.

The Keras graph is the single source of every feature set: :func:`keras_model` builds one model
whose outputs are the requested sets (``pooled``: the 2048-d global average; ``style``: statistics
of intermediate stages, see :mod:`stylesift.featurizer.backbones.style`), so one forward pass computes them
all, and converting this model (OpenVINO) gives other runtimes the same outputs.
Choosing a runtime and precision is :mod:`stylesift.featurizer.backbones.runtimes`; this module imports
nothing of the other runtimes.
"""

from __future__ import annotations

import numpy as np

from stylesift.featurizer.space import FEATURE_DIM, INPUT_SIZE, PRECISIONS, fingerprint_id, resnet50_fingerprint
from stylesift.featurizer.weights import Weights

__all__ = ["FEATURE_DIM", "INPUT_SIZE", "PRECISIONS", "Backbone", "feature_fingerprint", "fingerprint_id",
           "keras_model", "preprocess", "set_fingerprints"]

POOLED = "pooled"


def feature_fingerprint(weights: Weights, *, input_size: int = INPUT_SIZE) -> dict:
    """The float32 fingerprint of the ``pooled`` set; stores and model bundles carry it."""
    return resnet50_fingerprint(weights.fingerprint, input_size=input_size)


def set_fingerprints(pooled: dict, feature_sets: tuple[str, ...]) -> dict[str, dict]:
    """One fingerprint per feature set, given the ``pooled`` set's fingerprint of the same network."""
    out = {}
    for name in feature_sets:
        if name == POOLED:
            out[name] = pooled
        elif name == "style":
            from stylesift.featurizer.backbones.style import style_fingerprint

            out[name] = style_fingerprint(pooled)
        elif name == "detail":
            from stylesift.featurizer.backbones.detail import detail_fingerprint

            out[name] = detail_fingerprint(pooled)
        else:
            raise ValueError(f"unknown feature set {name!r}; expected pooled, style or detail")
    return out


def preprocess(batch: np.ndarray) -> np.ndarray:
    """Keras' ResNet50 ``preprocess_input`` on uint8 RGB of shape ``(n, h, w, 3)``; returns float32."""
    from keras.applications.resnet50 import preprocess_input

    return preprocess_input(batch.astype(np.float32, copy=True))


def keras_model(weights: Weights, feature_sets: tuple[str, ...] = (POOLED,), input_size: int = INPUT_SIZE):
    """The Keras model (preprocessed float input) whose outputs are ``feature_sets``, in that order.

    Returns ``(model, resnet)``: ``resnet`` is the headless, average-pooled ResNet50 with weights.
    """
    import keras

    resnet = keras.applications.ResNet50(weights=None, include_top=False, pooling="avg",
                                         input_shape=(input_size, input_size, 3))
    resnet.load_weights(str(weights.notop))
    if tuple(feature_sets) == (POOLED,):
        return resnet, resnet
    outputs = []
    for name in feature_sets:
        if name == POOLED:
            outputs.append(resnet.output)
        elif name == "style":
            from stylesift.featurizer.backbones.style import style_head

            outputs.append(style_head(resnet))
        else:
            raise ValueError(f"unknown feature set {name!r}; expected pooled or style")
    return keras.Model(resnet.input, outputs, name="stylesift_backbone"), resnet


class Backbone:
    """Headless ResNet50 on Keras, float32: the reference runtime.

    Parameters
    ----------
    weights : Weights
        Resolved weights (see :func:`stylesift.featurizer.weights.resolve`).
    input_size : int
        Side of the square input in pixels.
    feature_sets : tuple of str
        The sets one call computes (one forward pass).
    """

    runtime = "keras"
    precision = "float32"

    def __init__(self, weights: Weights, input_size: int = INPUT_SIZE, feature_sets: tuple[str, ...] = (POOLED,)):
        self.weights = weights
        self.input_size = input_size
        self.feature_sets = tuple(feature_sets)
        self.model, self.resnet = keras_model(weights, self.feature_sets, input_size)
        self.fingerprints = set_fingerprints(feature_fingerprint(weights, input_size=input_size), self.feature_sets)
        self.fingerprint = self.fingerprints.get(POOLED) or feature_fingerprint(weights, input_size=input_size)

    def run(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """Every feature set of a batch: uint8 RGB ``(n, size, size, 3)`` → ``{set: float32 (n, d)}``."""
        if len(images) == 0:
            return {name: np.zeros((0, int(out.shape[-1])), np.float32)
                    for name, out in zip(self.feature_sets, self.model.outputs)}
        out = self.model.predict_on_batch(preprocess(images))
        out = out if isinstance(out, (list, tuple)) else [out]
        return {name: np.asarray(o, dtype=np.float32) for name, o in zip(self.feature_sets, out)}

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """The pooled features of a batch: uint8 RGB ``(n, size, size, 3)`` → float32 ``(n, 2048)``."""
        if POOLED not in self.feature_sets:
            raise ValueError("this backbone was built without the pooled set; use run()")
        if len(images) == 0:
            return np.zeros((0, FEATURE_DIM), np.float32)
        return self.run(images)[POOLED]
