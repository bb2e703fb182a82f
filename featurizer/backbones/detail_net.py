"""The ``detail`` network on each runtime: Keras float32, OpenVINO float32 (checked) and INT8 (NNCF).

The recipe and the Keras graph are :mod:`stylesift.featurizer.backbones.detail`; this module builds,
caches and runs them, as :mod:`stylesift.featurizer.backbones.openvino` does for the whole-image network.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np

from stylesift.featurizer import tiles as tiling
from stylesift.featurizer.backbones import openvino as ov_backbone
from stylesift.featurizer.backbones.detail import (
    DETAIL_DIM,
    DETAIL_LAYERS,
    DETAIL_VERSION,
    FLOAT32_MIN_COSINE,
    detail_fingerprint,
    detail_model,
)
from stylesift.featurizer.build_lock import build_once
from stylesift.featurizer.weights import Weights, cache_dir

__all__ = ["DetailNet", "build_openvino", "model_path"]

CHUNK = 8 * tiling.TILES  # tiles per OpenVINO call: bounds the network's activation memory


def model_path(weights: Weights, precision: str, cache: Path | None = None) -> Path:
    """Where the OpenVINO IR of the detail network is cached (``.xml``, ``.bin`` beside it)."""
    recipe = ov_backbone.INT8_RECIPE_ID if precision == "int8" else ov_backbone.CONVERSION_ID
    name = f"resnet50-detail{DETAIL_VERSION}-{'+'.join(DETAIL_LAYERS)}-{tiling.TILE}-openvino-{precision}-" \
           f"{weights.fingerprint[:16]}-{recipe}.xml"
    return (cache or cache_dir()) / name


def _keras_run(model, tiles: np.ndarray) -> np.ndarray:
    from stylesift.featurizer.backbones.keras import preprocess

    return np.asarray(model.predict_on_batch(preprocess(tiles)), dtype=np.float32)


def build_openvino(weights: Weights, precision: str, cache: Path | None = None) -> Path:
    """Convert (float32, checked against Keras) or quantize (int8) the detail network once; returns the ``.xml``."""
    ov_backbone.require_openvino("the detail set on openvino")
    target = model_path(weights, precision, cache)
    return build_once(target, f"the {precision} detail network",
                      lambda: target.is_file() and (precision == "int8" or ov_backbone.check_path(target).is_file()),
                      lambda: _build_openvino(weights, precision, cache, target))


def _build_openvino(weights: Weights, precision: str, cache: Path | None, target: Path) -> None:
    import openvino as ov

    if precision == "int8":
        try:
            import nncf  # noqa: F401 - only whether it is installed
        except ImportError:
            from stylesift.featurizer.backbones.legacy_onnx import FastBackboneUnavailable

            raise FastBackboneUnavailable("building the int8 detail network needs NNCF (not installed); install the "
                                          "extra with `pip install 'stylesift[fast]'`") from None
        float_xml = build_openvino(weights, "float32", cache)
        calibration = tiling.calibration_tiles()
        quantized = ov_backbone.quantize(ov.Core().read_model(str(float_xml)), calibration)
        ov_backbone.save_ir(quantized, target)
        return
    model = detail_model(weights)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        converted = ov.convert_model(model, share_weights=False)
    converted.outputs[0].get_tensor().set_names({"detail"})
    converted = ov_backbone.with_preprocessing(converted)
    check = tiling.calibration_tiles()[::4]
    compiled = ov.Core().compile_model(converted, "CPU", ov_backbone.compile_config("LATENCY"))
    got = np.asarray(compiled(np.ascontiguousarray(check))[compiled.outputs[0]], np.float32)
    result = ov_backbone.check_equal({"detail": _keras_run(model, check)}, {"detail": got}, FLOAT32_MIN_COSINE)
    result["reference"] = "keras float32"
    ov_backbone.save_ir(converted, target, result)


class DetailNet:
    """Computes the ``detail`` set from decoded tiles, on Keras or OpenVINO, float32 or INT8.

    Parameters
    ----------
    weights : Weights
        The ResNet50 weights of the feature space.
    precision : {"float32", "int8"}
    runtime : {"keras", "openvino"}
        ``int8`` runs on OpenVINO only; the caller resolves ``auto``.
    pooled_fingerprint : dict
        The pooled set's fingerprint of the same space; :attr:`fingerprint` is derived from it.
    threads : int, optional
        OpenVINO inference threads.
    """

    def __init__(self, weights: Weights, precision: str, runtime: str, pooled_fingerprint: dict,
                 threads: int | None = None):
        self.weights, self.precision, self.runtime = weights, precision, runtime
        self.fingerprint = detail_fingerprint(pooled_fingerprint)
        if runtime == "keras":
            if precision != "float32":
                raise ValueError("the keras runtime computes float32 only")
            self._model = detail_model(weights)
            self._compiled = None
            return
        self.path = build_openvino(weights, precision, None)
        if precision == "float32":
            check = json.loads(ov_backbone.check_path(self.path).read_text())
            if not check.get("passed"):
                from stylesift.featurizer.backbones.legacy_onnx import FastBackboneUnavailable

                raise FastBackboneUnavailable(f"{self.path}: OpenVINO float32 does not reproduce the Keras detail "
                                              f"features here (minimum cosine {check.get('min_cosine')}); use --runtime keras")
        import openvino as ov

        self._compiled = ov.Core().compile_model(str(self.path), "CPU", ov_backbone.compile_config("LATENCY", threads))

    def run_tiles(self, tiles: np.ndarray) -> np.ndarray:
        """Per-tile statistics: uint8 ``(m, TILE, TILE, 3)`` → float32 ``(m, DETAIL_DIM)``."""
        if len(tiles) == 0:
            return np.zeros((0, DETAIL_DIM), np.float32)
        if self._compiled is None:
            return _keras_run(self._model, tiles)
        # At most CHUNK tiles a call: OpenVINO keeps activation buffers for the largest batch it has
        # seen, and a batch of 32 images' tiles held ~510 MiB of them (measured: 72 tiles ~130 MiB,
        # no slower), which raised the extract's peak from 884 to 1,680 MiB.
        parts = [self._compiled(np.ascontiguousarray(tiles[i:i + CHUNK], dtype=np.uint8))[self._compiled.outputs[0]]
                 for i in range(0, len(tiles), CHUNK)]
        return np.concatenate([np.asarray(p, dtype=np.float32) for p in parts])

    def __call__(self, tiles: np.ndarray) -> np.ndarray:
        """The detail set of a batch: uint8 ``(n, TILES, TILE, TILE, 3)`` → float32 ``(n, DETAIL_DIM)``."""
        tiles = np.asarray(tiles)
        n, k = tiles.shape[:2]
        per_tile = self.run_tiles(tiles.reshape(n * k, *tiles.shape[2:]))
        return per_tile.reshape(n, k, -1).mean(axis=1, dtype=np.float64).astype(np.float32)
