"""The headless ImageNet ResNet50 that turns images into 2048-d feature vectors."""

from __future__ import annotations

import numpy as np

from stylesift.featurizer.space import FEATURE_DIM, INPUT_SIZE, PRECISIONS, fingerprint_id, resnet50_fingerprint
from stylesift.featurizer.weights import Weights

__all__ = ["FEATURE_DIM", "INPUT_SIZE", "PRECISIONS", "Backbone", "backbone_fingerprint", "feature_fingerprint",
           "fingerprint_id", "make_backbone", "preprocess"]


def feature_fingerprint(weights: Weights, *, input_size: int = INPUT_SIZE) -> dict:
    """Everything that decides what a feature vector means; stores and model bundles carry it."""
    return resnet50_fingerprint(weights.fingerprint, input_size=input_size)


def backbone_fingerprint(weights: Weights, precision: str = "float32", *, input_size: int = INPUT_SIZE) -> dict:
    """The fingerprint of features from a backbone of this precision; float32's is :func:`feature_fingerprint`."""
    base = feature_fingerprint(weights, input_size=input_size)
    if precision == "float32":
        return base
    if precision == "int8":
        from stylesift.featurizer.fast_backbone import int8_fingerprint

        return int8_fingerprint(base)
    raise ValueError(f"unknown precision {precision!r}; expected one of {', '.join(PRECISIONS)}")


def make_backbone(weights: Weights, precision: str = "float32", *, input_size: int = INPUT_SIZE):
    """Build the backbone of a precision: :class:`Backbone` (Keras, float32) or the INT8 one (ONNX Runtime).

    Both are called the same way: uint8 RGB ``(n, size, size, 3)`` → float32 ``(n, 2048)``, and carry
    ``.fingerprint``.
    """
    if precision == "float32":
        return Backbone(weights, input_size)
    if precision == "int8":
        from stylesift.featurizer.fast_backbone import Int8Backbone

        return Int8Backbone(weights, input_size)
    raise ValueError(f"unknown precision {precision!r}; expected one of {', '.join(PRECISIONS)}")


def preprocess(batch: np.ndarray) -> np.ndarray:
    """Keras' ResNet50 ``preprocess_input`` on uint8 RGB of shape ``(n, h, w, 3)``; returns float32."""
    from keras.applications.resnet50 import preprocess_input

    return preprocess_input(batch.astype(np.float32, copy=True))


class Backbone:
    """Headless ResNet50 with global average pooling.

    Parameters
    ----------
    weights : Weights
        Resolved weights (see :func:`featurizer.weights.resolve`).
    input_size : int
        Side of the square input in pixels.
    """

    def __init__(self, weights: Weights, input_size: int = INPUT_SIZE):
        import keras

        self.weights = weights
        self.input_size = input_size
        self.model = keras.applications.ResNet50(
            weights=None, include_top=False, pooling="avg", input_shape=(input_size, input_size, 3)
        )
        self.model.load_weights(str(weights.notop))
        self.fingerprint = feature_fingerprint(weights, input_size=input_size)

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """Features of a batch: uint8 RGB ``(n, size, size, 3)`` → float32 ``(n, 2048)``."""
        if len(images) == 0:
            return np.zeros((0, FEATURE_DIM), np.float32)
        out = self.model.predict_on_batch(preprocess(images))
        return np.asarray(out, dtype=np.float32)
