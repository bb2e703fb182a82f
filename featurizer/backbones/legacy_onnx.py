"""The first INT8 recipe (ONNX Runtime): kept so that stores and bundles made with it keep scoring.

New int8 features come from :mod:`stylesift.featurizer.backbones.openvino` (NNCF, OpenVINO); this recipe
is its own feature space and runs with ``--runtime onnxruntime``; :mod:`stylesift.featurizer.backbones.runtimes`
picks it by itself for a store or bundle that holds its features.

Made once per weights and then cached next to them: the Keras network is exported to ONNX
(:mod:`stylesift.featurizer.backbones.onnx_export`), then statically quantized with ONNX Runtime's quantizer,
calibrated on a fixed set of pictures that scikit-image ships (plus a few drawn screenshots), so
the result depends on nothing but the weights and the recipe below. Both are in the fingerprint:
INT8 features are a feature space of their own and never mix with float32 ones.

Choices, each measured on the shared tasks against float32 features (per-image cosine):
uint8 weights at full range rather than the usual signed ones, because on CPUs without VNNI (AVX2
only) ONNX Runtime's signed int8 kernels saturate (cosine down to 0.35) unless weights are cut to
7 bits, and 7-bit weights cost agreement (minimum 0.96); the first convolution stays float32 (it
sees raw pixels; quantizing it took the worst images from 0.982 down to 0.976, for ~3% of the work).
What remains on the 2763 shared images: mean cosine 0.996, 2% of images below 0.99 (minimum
0.976), cross-validated accuracy unchanged; the 0.99-per-image goal is not met for those 2%.

Needs the optional extra: ``pip install 'stylesift[fast]'`` (onnx, onnxruntime).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from stylesift.atomic import atomic_path
from stylesift.errors import StylesiftError
from stylesift.featurizer.backbones.calibration import CALIBRATION_SET, calibration_images  # noqa: F401
from stylesift.featurizer.build_lock import build_once
from stylesift.featurizer.weights import Weights, cache_dir

# Everything that decides the quantized network besides the weights; part of the fingerprint.
RECIPE = {
    "runtime": "onnxruntime",
    "format": "QDQ, per-channel weights",
    "activations": "uint8",
    "weights": "uint8, full range",
    "calibration": "minmax over calibration_images('skimage-v1')",
    "float32_layers": ["conv1_conv"],
}
RECIPE_ID = hashlib.sha256(json.dumps(RECIPE, sort_keys=True).encode()).hexdigest()[:12]


class FastBackboneUnavailable(StylesiftError, RuntimeError):
    """The optional runtime is not installed; the message says how to install it."""


def require_runtime() -> None:
    """Raise :class:`FastBackboneUnavailable` unless onnx and onnxruntime can be imported."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as exc:
        raise FastBackboneUnavailable(
            f"the int8 backbone needs ONNX Runtime ({exc.name} is not installed); "
            "install the extra with `pip install 'stylesift[fast]'`, or use --precision float32"
        ) from None


def int8_fingerprint(base: dict) -> dict:
    """The fingerprint of INT8 features, given the float32 fingerprint ``base`` of the same weights."""
    return {**base, "backbone": base["backbone"] + " → ONNX, INT8 (static quantization)",
            "precision": "int8", "quantization": RECIPE, "quantization_id": RECIPE_ID}


def model_path(weights: Weights, cache: Path | None = None) -> Path:
    """Where the quantized network of these weights is cached."""
    return (cache or cache_dir()) / f"resnet50-int8-{weights.fingerprint[:16]}-{RECIPE_ID}.onnx"


def build_int8_model(weights: Weights, *, input_size: int = 224, cache: Path | None = None) -> Path:
    """Export, calibrate and quantize the network once; return the cached ``.onnx`` (atomic write).

    Takes one to two minutes on two cores; later calls return the cached file at once.
    """
    require_runtime()
    target = model_path(weights, cache)
    return build_once(target, "the legacy int8 ONNX network", target.is_file,
                      lambda: _build_int8_model(weights, input_size, target))


def _build_int8_model(weights: Weights, input_size: int, target: Path) -> None:
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    from stylesift.featurizer.backbones.keras import Backbone
    from stylesift.featurizer.backbones.onnx_export import export_resnet

    target.parent.mkdir(parents=True, exist_ok=True)
    calibration = calibration_images(input_size)
    # The float32 export is a scratch file; only the quantized network is the cache entry, and it
    # appears under its name only once complete (the quantizer writes the temp path itself).
    with tempfile.TemporaryDirectory(prefix="stylesift-int8-", dir=target.parent) as tmp, \
            atomic_path(target) as quantized:
        float_model = Path(tmp) / "float32.onnx"
        onnx.save(export_resnet(Backbone(weights, input_size).model, input_size=input_size), str(float_model))
        with _quiet_quantizer():
            quantize_static(
                str(float_model), str(quantized), _batches(calibration, 8),
                quant_format=QuantFormat.QDQ, per_channel=True, reduce_range=False,
                activation_type=QuantType.QUInt8, weight_type=QuantType.QUInt8,
                calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=RECIPE["float32_layers"],
            )


class Int8Backbone:
    """Headless ResNet50, INT8, on ONNX Runtime; same call as :class:`stylesift.featurizer.backbones.keras.Backbone`.

    Parameters
    ----------
    weights : Weights
        Resolved float32 weights; the quantized network is built from them once (see :func:`build_int8_model`).
    input_size : int
        Side of the square input in pixels.
    threads : int, optional
        ONNX Runtime's intra-op threads (default: number of CPUs).
    """

    def __init__(self, weights: Weights, input_size: int = 224, threads: int | None = None,
                 feature_sets: tuple[str, ...] = ("pooled",)):
        if tuple(feature_sets) != ("pooled",):
            raise FastBackboneUnavailable("the first int8 recipe (ONNX Runtime) computes the pooled set only; "
                                          "re-extract with --runtime openvino for other feature sets")
        from stylesift.featurizer.backbones.keras import feature_fingerprint

        require_runtime()
        import onnxruntime as ort

        self.weights = weights
        self.input_size = input_size
        self.path = build_int8_model(weights, input_size=input_size)
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(threads or os.cpu_count() or 1)
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - ORT raises its own types; a damaged cache file is rebuilt
            raise RuntimeError(f"{self.path}: cannot load the cached INT8 network ({exc}); delete the file "
                               "and run again to rebuild it") from None
        self.fingerprint = int8_fingerprint(feature_fingerprint(weights, input_size=input_size))
        self.fingerprints = {"pooled": self.fingerprint}

    feature_sets = ("pooled",)
    runtime = "onnxruntime"
    precision = "int8"

    def run(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """``{"pooled": features}`` of a batch (this recipe computes the pooled set only)."""
        return {"pooled": self(images)}

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """Features of a batch: uint8 RGB ``(n, size, size, 3)`` → float32 ``(n, 2048)``."""
        if len(images) == 0:
            return np.zeros((0, 2048), np.float32)
        return self.session.run(None, {"images": np.ascontiguousarray(images, dtype=np.uint8)})[0]


def _batches(images: np.ndarray, batch: int):
    """ONNX Runtime's CalibrationDataReader over a uint8 batch, ``batch`` images at a time."""
    from onnxruntime.quantization import CalibrationDataReader

    class Batches(CalibrationDataReader):
        def __init__(self):
            self._chunks = iter([{"images": images[i:i + batch]} for i in range(0, len(images), batch)])

        def get_next(self):
            return next(self._chunks, None)

    return Batches()


@contextmanager
def _quiet_quantizer():
    # The quantizer logs advice about optional pre-processing on the root logger at WARNING.
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)
