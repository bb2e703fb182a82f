"""What computes features: the networks, the runtimes that execute them, and the choice between them.

The implementation is in the modules, re-exported here (as scikit-learn does):

- :mod:`~stylesift.featurizer.backbones.keras`: the headless ImageNet ResNet50 on Keras, the
  reference every other runtime is checked against;
- :mod:`~stylesift.featurizer.backbones.style`: the ``style`` feature set, built inside that graph;
- :mod:`~stylesift.featurizer.backbones.detail`: the ``detail`` set (native-resolution tiles), run by
  :mod:`~stylesift.featurizer.backbones.detail_net` on each runtime;
- :mod:`~stylesift.featurizer.backbones.openvino`: the same network on OpenVINO, float32 and INT8;
- :mod:`~stylesift.featurizer.backbones.legacy_onnx`: the first INT8 recipe (ONNX Runtime), kept so
  that stores and bundles made with it keep scoring; it exports with
  :mod:`~stylesift.featurizer.backbones.onnx_export`;
- :mod:`~stylesift.featurizer.backbones.byo`: a user's own ONNX or OpenVINO network;
- :mod:`~stylesift.featurizer.backbones.calibration`: the fixed pictures quantizers and checks use;
- :mod:`~stylesift.featurizer.backbones.runtimes`: which runtime executes a feature space.

Importing this package loads numpy only: TensorFlow, OpenVINO and ONNX Runtime are imported when a
backbone is built, so ``import stylesift`` and the score path of a non-Keras runtime stay fast.
"""

from __future__ import annotations

from stylesift.featurizer.backbones.byo import BackboneFileError, ByoBackbone, byo_fingerprint, is_byo
from stylesift.featurizer.backbones.calibration import CALIBRATION_SET, calibration_images, check_images
from stylesift.featurizer.backbones.detail import DETAIL_DIM, DETAIL_LAYERS, DETAIL_VERSION, detail_fingerprint
from stylesift.featurizer.backbones.keras import (
    POOLED,
    Backbone,
    feature_fingerprint,
    fingerprint_id,
    keras_model,
    preprocess,
    set_fingerprints,
)
from stylesift.featurizer.backbones.legacy_onnx import FastBackboneUnavailable, Int8Backbone
from stylesift.featurizer.backbones.onnx_export import UnsupportedLayer, export_resnet
from stylesift.featurizer.backbones.openvino import INT8_RECIPE, OpenVINOBackbone
from stylesift.featurizer.backbones.runtimes import (
    LEGACY_INT8,
    RUNTIMES,
    RuntimeUnavailable,
    backbone_fingerprint,
    make_backbone,
    space_of,
    space_of_fingerprint,
)
from stylesift.featurizer.backbones.style import STYLE_DIM, STYLE_LAYERS, STYLE_VERSION, style_fingerprint, style_head

__all__ = [
    "CALIBRATION_SET", "DETAIL_DIM", "DETAIL_LAYERS", "DETAIL_VERSION", "INT8_RECIPE", "LEGACY_INT8", "POOLED", "RUNTIMES", "STYLE_DIM", "STYLE_LAYERS",
    "STYLE_VERSION", "Backbone", "BackboneFileError", "ByoBackbone", "FastBackboneUnavailable", "Int8Backbone",
    "OpenVINOBackbone", "RuntimeUnavailable", "UnsupportedLayer", "backbone_fingerprint", "byo_fingerprint",
    "calibration_images", "check_images", "detail_fingerprint", "export_resnet", "feature_fingerprint", "fingerprint_id", "is_byo",
    "keras_model", "make_backbone", "preprocess", "set_fingerprints", "space_of", "space_of_fingerprint",
    "style_fingerprint", "style_head",
]
