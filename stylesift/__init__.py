"""stylesift: learn a visual style from example images and pick matching images out of a stream.

The public surface is a handful of names, re-exported here in the manner of h5py and imagededup;
the machinery lives in the subpackages ``stylesift.featurizer`` (images, networks, the feature
store), ``stylesift.classifiers`` (models on feature matrices), ``stylesift.review`` (contact sheet,
demo) and ``stylesift.cli`` (the ``stylesift`` command).

Names are imported lazily (PEP 562): ``import stylesift`` loads neither TensorFlow nor
scikit-learn, so ``stylesift --version`` and scripts that only read a store start fast.

Examples
--------
>>> import stylesift
>>> with stylesift.FeatureStore("features.h5") as store:          # doctest: +SKIP
...     print(len(store), store.label_counts())
"""

from __future__ import annotations

import importlib

__version__ = "0.2.0"

# public name -> module that defines it
_PUBLIC = {
    "FeatureStore": "stylesift.featurizer.store",
    "StoreError": "stylesift.featurizer.store",
    "FeatureSpaceMismatch": "stylesift.featurizer.store",
    "Featurizer": "stylesift.featurizer.extract",
    "ExtractReport": "stylesift.featurizer.extract",
    "extract": "stylesift.featurizer.extract",
    "list_images": "stylesift.featurizer.extract",
    "train": "stylesift.classifiers.train",
    "tune": "stylesift.classifiers.train",
    "load_labelled": "stylesift.classifiers.train",
    "compare": "stylesift.classifiers.compare",
    "Predictor": "stylesift.classifiers.predict",
    "ScoreResult": "stylesift.classifiers.predict",
    "Bundle": "stylesift.classifiers.bundle",
    "read_header": "stylesift.classifiers.bundle",
    "write_report": "stylesift.review.report",
    "write_score_report": "stylesift.review.report",
    "RayEngine": "stylesift.featurizer.ray",
}

__all__ = ["__version__", *sorted(_PUBLIC)]


def __getattr__(name: str):
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'stylesift' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this hook
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))
