"""Feature spaces: the facts that decide what a feature vector means, and how two are told apart.

A feature space is named by its *fingerprint*, a JSON-able dict (network, weights, precision,
feature set, input geometry). Stores, model bundles and Ray workers all carry one and compare them
through this module; it imports nothing heavy (of stylesift only the error base), so reading a bundle
header or a store's attributes never pulls in TensorFlow.
"""

from __future__ import annotations

import hashlib
import json

from stylesift.errors import StylesiftError

INPUT_SIZE = 224
FEATURE_DIM = 2048
# Precisions a backbone can run in; each is its own feature space.
PRECISIONS = ("float32", "int8")


class FeatureSpaceMismatch(StylesiftError, ValueError):
    """Features of two different spaces were about to meet; the message names both sides' differences.

    The one such error of stylesift (the store raises it too); a ``ValueError`` as well, since it is a
    wrong value handed in (features of another network, width or precision).
    """


def resnet50_fingerprint(weights_sha256: str, *, input_size: int = INPUT_SIZE) -> dict:
    """The float32 fingerprint of the headless Keras ResNet50 with these weights (a sha256 over weight values)."""
    return {
        "backbone": "keras.applications.ResNet50",
        "weights_sha256": weights_sha256,
        "input_size": input_size,
        "geometry": "whole image resized to a square, no crop (Pillow bilinear; JPEG draft decoding)",
        "preprocessing": "keras.applications.resnet50.preprocess_input (caffe: BGR, ImageNet mean)",
        "pooling": "global average",
        "feature_dim": FEATURE_DIM,
        "dtype": "float32",
    }


def fingerprint_id(fingerprint: dict) -> str:
    """A short, stable id of a fingerprint (first 16 hex digits of the sha256 of its canonical JSON)."""
    return hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()[:16]


def same_space(a: dict | None, b: dict | None) -> bool:
    """Whether two fingerprints name the same feature space (``None`` matches nothing)."""
    return a is not None and b is not None and fingerprint_id(a) == fingerprint_id(b)


def differences(a: dict, b: dict) -> dict:
    """``{key: (a's value, b's value)}`` for every key where the two fingerprints differ, sorted by key."""
    return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


def require_same(expected: dict, actual: dict, what: str, fix: str, error: type[Exception] = FeatureSpaceMismatch) -> None:
    """Raise ``error`` naming ``what`` and its differences unless both fingerprints are one space.

    Parameters
    ----------
    expected, actual : dict
        The fingerprint that is already there (store, bundle, driver) and the one arriving.
    what : str
        Who holds ``expected``, e.g. the file name; starts the message.
    fix : str
        What the user can do about it; ends the message.
    """
    if not same_space(expected, actual):
        raise error(f"{what}: holds features of another feature space; differences (there, now): "
                    f"{differences(expected, actual)}. {fix}")
