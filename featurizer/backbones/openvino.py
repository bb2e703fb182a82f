"""The backbone on OpenVINO: float32 (converted from the Keras model) and INT8 (NNCF post-training quantization).

Both are made once per machine and weights, then cached beside the weights as OpenVINO IR
(``.xml`` + ``.bin``), so later runs load them without TensorFlow:

- **float32**: ``openvino.convert_model`` of the Keras model (every requested feature set is an
  output of the one graph), with Keras' caffe preprocessing (uint8 → float, RGB → BGR, ImageNet
  mean) added by OpenVINO's ``PrePostProcessor``, so the input is the raw ``uint8 (n, size, size, 3)``
  batch. It shares the Keras float32 feature space only because a check at build time proves it
  (per-image cosine ≥ :data:`FLOAT32_MIN_COSINE` to Keras on the check images, every set); the
  result is recorded beside the model and a failed check makes the runtime unavailable for float32.
  Compiled with ``INFERENCE_PRECISION_HINT=f32``: on CPUs with bf16 OpenVINO otherwise computes in
  bfloat16 (measured: cosine 0.9995 to Keras, not the same space).
- **int8**: :data:`INT8_RECIPE`, NNCF's ``quantize`` of the float32 model on
  :func:`stylesift.featurizer.backbones.calibration.calibration_images`. The fingerprint names the recipe, never the
  CPU: the non-quantized parts run in float32 on every CPU (``f32`` hint) and the overflow fix
  keeps AVX2-only CPUs from saturating, so a VNNI or bf16 CPU computes the same features as an
  AVX2-only one (measured with ``ONEDNN_MAX_CPU_ISA=AVX2``: cosine 1.000000 on 192 shared images).

Needs the optional extra: ``pip install 'stylesift[fast]'`` (openvino, nncf).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np

from stylesift.atomic import atomic_path, atomic_write
from stylesift.featurizer.build_lock import build_once
from stylesift.featurizer.space import INPUT_SIZE
from stylesift.featurizer.weights import Weights, cache_dir

IMAGENET_MEAN_BGR = (103.939, 116.779, 123.68)  # keras.applications.imagenet_utils "caffe" mode
FLOAT32_MIN_COSINE = 0.99999  # to share the Keras float32 fingerprint
CONVERSION = {"converter": "openvino.convert_model(keras.Model)", "preprocessing": "PrePostProcessor u8 NHWC, "
              "convert f32, reverse_channels, mean " + ",".join(map(str, IMAGENET_MEAN_BGR)), "version": 1}
CONVERSION_ID = hashlib.sha256(json.dumps(CONVERSION, sort_keys=True).encode()).hexdigest()[:12]
# Everything that decides the INT8 network besides the weights and the feature sets; part of the fingerprint.
INT8_RECIPE = {
    "quantizer": "nncf.quantize (post-training, MIXED preset: symmetric per-channel int8 weights, asymmetric "
                 "activations, fast bias correction)",
    "activation_ranges": "MINMAX: minimum and maximum over the whole calibration set",
    "overflow_fix": "enable (7-bit weight range in every layer: the same sums with or without VNNI)",
    "source": "OpenVINO float32 model converted from Keras (" + CONVERSION_ID + ")",
    "calibration": "calibration_images('skimage-v1') and their mirror images (96)",
    "float_parts": "float32 (INFERENCE_PRECISION_HINT f32 on every CPU)",
    "runtime": "openvino",
}
INT8_RECIPE_ID = hashlib.sha256(json.dumps(INT8_RECIPE, sort_keys=True).encode()).hexdigest()[:12]


def require_openvino(what: str = "the openvino runtime") -> None:
    """Raise :class:`FastBackboneUnavailable` unless OpenVINO (and NNCF for INT8) can be imported."""
    from stylesift.featurizer.backbones.legacy_onnx import FastBackboneUnavailable

    try:
        import openvino  # noqa: F401
    except ImportError:
        raise FastBackboneUnavailable(f"{what} needs OpenVINO (not installed); install the extra with "
                                      "`pip install 'stylesift[fast]'`, or choose --runtime keras") from None


def available() -> bool:
    """Whether OpenVINO can be imported here."""
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


def int8_fingerprint(base: dict) -> dict:
    """The fingerprint of this recipe's INT8 features, given the float32 fingerprint ``base`` of the same weights."""
    return {**base, "backbone": base["backbone"] + " → OpenVINO, INT8 (NNCF post-training quantization)",
            "precision": "int8", "quantization": INT8_RECIPE, "quantization_id": INT8_RECIPE_ID}


def model_path(weights: Weights, precision: str, feature_sets: tuple[str, ...], input_size: int = INPUT_SIZE,
               cache: Path | None = None) -> Path:
    """Where the IR of this precision, weights and feature sets is cached (``.xml``; ``.bin`` beside it)."""
    from stylesift.featurizer.backbones.style import STYLE_VERSION

    # A set's recipe is part of the name: a network built for an older style set is never reused.
    sets = "+".join(f"style{STYLE_VERSION}" if name == "style" else name for name in feature_sets)
    recipe = INT8_RECIPE_ID if precision == "int8" else CONVERSION_ID
    return (cache or cache_dir()) / f"resnet50-openvino-{precision}-{weights.fingerprint[:16]}-{sets}-{input_size}-{recipe}.xml"


def check_path(xml: Path) -> Path:
    """The JSON record of the equality check, beside the model."""
    return xml.with_suffix(".check.json")


def with_preprocessing(model):
    """``model`` taking raw uint8 NHWC RGB: Keras' caffe preprocessing added by OpenVINO's ``PrePostProcessor``."""
    import openvino as ov
    from openvino.preprocess import PrePostProcessor

    ppp = PrePostProcessor(model)
    ppp.input().tensor().set_element_type(ov.Type.u8).set_layout(ov.Layout("NHWC"))
    ppp.input().model().set_layout(ov.Layout("NHWC"))
    ppp.input().preprocess().convert_element_type(ov.Type.f32).reverse_channels().mean(list(IMAGENET_MEAN_BGR))
    return ppp.build()


def cosines(reference: np.ndarray, other: np.ndarray) -> np.ndarray:
    """Per-image cosine similarity of two ``(n, d)`` feature matrices of the same images."""
    num = (reference.astype(np.float64) * other).sum(axis=1)
    den = np.linalg.norm(reference.astype(np.float64), axis=1) * np.linalg.norm(other.astype(np.float64), axis=1)
    return num / np.maximum(den, 1e-30)


def check_equal(reference: dict[str, np.ndarray], other: dict[str, np.ndarray], min_cosine: float) -> dict:
    """``{"passed", "min_cosine", "per_set": {set: minimum per-image cosine}, "images"}`` of two runs' outputs."""
    per_set = {name: float(cosines(reference[name], other[name]).min()) for name in reference}
    low = min(per_set.values())
    return {"passed": bool(low >= min_cosine), "min_cosine": low, "required": min_cosine, "per_set": per_set,
            "images": int(len(next(iter(reference.values()))))}


def save_ir(model, target: Path, extra: dict | None = None) -> None:
    """Write the IR pair ``target`` (``.xml``) and its ``.bin``, and the check record ``extra`` if given.

    Each file replaces its old self atomically (:mod:`stylesift.atomic`); the check record first, then
    the ``.bin``, the ``.xml`` last, so an ``.xml`` is only there once its ``.bin`` is.
    """
    import openvino as ov

    target.parent.mkdir(parents=True, exist_ok=True)
    # OpenVINO wants a name ending in .xml and puts the .bin beside it, so it writes into a scratch
    # folder (beside the target: same file system, named like a temp of it); each file then moves
    # into its atomic temp path.
    with tempfile.TemporaryDirectory(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent) as scratch:
        xml = Path(scratch) / target.name
        ov.save_model(model, str(xml), compress_to_fp16=False)
        if extra is not None:
            with atomic_write(check_path(target), "w") as fh:
                fh.write(json.dumps(extra, indent=1))
        for written, final in ((xml.with_suffix(".bin"), target.with_suffix(".bin")), (xml, target)):
            with atomic_path(final) as tmp:
                os.replace(written, tmp)


def build_float32(weights: Weights, feature_sets: tuple[str, ...] = ("pooled",), input_size: int = INPUT_SIZE,
                  cache: Path | None = None) -> Path:
    """Convert the Keras model once, check it against Keras, cache it; returns the ``.xml`` (needs TensorFlow once)."""
    require_openvino()
    target = model_path(weights, "float32", feature_sets, input_size, cache)
    return build_once(target, "the float32 OpenVINO network", lambda: target.is_file() and check_path(target).is_file(),
                      lambda: _build_float32(weights, feature_sets, input_size, target))


def _build_float32(weights: Weights, feature_sets: tuple[str, ...], input_size: int, target: Path) -> None:
    import openvino as ov

    from stylesift.featurizer.backbones.calibration import check_images
    from stylesift.featurizer.backbones.keras import Backbone

    keras_backbone = Backbone(weights, input_size, feature_sets)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # Keras: "structure of `inputs` doesn't match" while tracing
        model = ov.convert_model(keras_backbone.model, share_weights=False)
    for output, name in zip(model.outputs, feature_sets):
        output.get_tensor().set_names({name})
    model = with_preprocessing(model)
    images = check_images(input_size)
    compiled = ov.Core().compile_model(model, "CPU", compile_config("LATENCY"))
    got = _run_compiled(compiled, images, feature_sets)
    result = check_equal(keras_backbone.run(images), got, FLOAT32_MIN_COSINE)
    result["reference"] = "keras float32"
    save_ir(model, target, result)


def build_int8(weights: Weights, feature_sets: tuple[str, ...] = ("pooled",), input_size: int = INPUT_SIZE,
               cache: Path | None = None) -> Path:
    """Quantize the float32 IR with :data:`INT8_RECIPE` once and cache it; returns the ``.xml``.

    Takes about a minute on two cores; later calls return the cached file at once.
    """
    require_openvino("the int8 backbone")
    target = model_path(weights, "int8", feature_sets, input_size, cache)
    return build_once(target, "the int8 OpenVINO network", target.is_file,
                      lambda: _build_int8(weights, feature_sets, input_size, cache, target))


def _build_int8(weights: Weights, feature_sets: tuple[str, ...], input_size: int, cache: Path | None,
                target: Path) -> None:
    try:
        import nncf  # noqa: F401 - only whether it is installed
    except ImportError:
        from stylesift.featurizer.backbones.legacy_onnx import FastBackboneUnavailable

        raise FastBackboneUnavailable("building the int8 backbone needs NNCF (not installed); install the extra "
                                      "with `pip install 'stylesift[fast]'`") from None
    import openvino as ov

    from stylesift.featurizer.backbones.calibration import calibration_images

    float_xml = build_float32(weights, feature_sets, input_size, cache)
    images = calibration_images(input_size)
    quantized = quantize(ov.Core().read_model(str(float_xml)), np.concatenate([images, images[:, :, ::-1]]))
    save_ir(quantized, target)


def quantize(model, images: np.ndarray):
    """:data:`INT8_RECIPE` applied to an OpenVINO float32 ``model`` calibrated on uint8 ``images`` (one per sample)."""
    import nncf
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    dataset = nncf.Dataset([images[i:i + 1] for i in range(len(images))])
    # Activation ranges over the whole set, as the first recipe had them: NNCF's default (the mean of each
    # image's min/max) clips the large activations of screenshots (measured on 192 shared images: minimum
    # per-image cosine to float32 0.898 and 28 below 0.99 with the default; 0.988 and 1 with MINMAX).
    # Overflow fix on every layer: without it, AVX2-only CPUs (no VNNI) saturate int16 sums and compute
    # other features than VNNI CPUs (measured, ONEDNN_MAX_CPU_ISA=AVX2 on this CPU: per-image cosine down to
    # 0.99959, 3 of 192 images below 0.9999); with it both give the same features (cosine 1.000000), so the
    # recipe, not the CPU, defines the space, for ~5 % of int8 speed and a mean cosine to float32 of
    # 0.9955 instead of 0.9966 (minimum 0.988 either way).
    advanced = AdvancedQuantizationParameters(activations_range_estimator_params=RangeEstimatorParametersSet.MINMAX,
                                              overflow_fix=OverflowFix.ENABLE)
    with contextlib.redirect_stdout(sys.stderr):  # NNCF's progress bars must not mix into --json output
        return nncf.quantize(model, dataset, preset=nncf.QuantizationPreset.MIXED, subset_size=len(images),
                             advanced_parameters=advanced)


def compile_config(hint: str = "LATENCY", threads: int | None = None) -> dict:
    """OpenVINO compile settings: float32 for every non-quantized part on every CPU (never bf16)."""
    config = {"PERFORMANCE_HINT": hint, "INFERENCE_PRECISION_HINT": "f32"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = int(threads)
    return config


def _run_compiled(compiled, images: np.ndarray, feature_sets: tuple[str, ...]) -> dict[str, np.ndarray]:
    result = compiled(np.ascontiguousarray(images, dtype=np.uint8))
    return {name: np.asarray(result[compiled.outputs[i]], dtype=np.float32) for i, name in enumerate(feature_sets)}


class OpenVINOBackbone:
    """The backbone on OpenVINO, float32 or INT8; same interface as :class:`stylesift.featurizer.backbones.keras.Backbone`.

    Parameters
    ----------
    weights : Weights
    precision : {"float32", "int8"}
    input_size : int
    feature_sets : tuple of str
    threads : int, optional
        OpenVINO's inference threads (default: its own choice, all cores).
    cache : Path, optional
        Where the IR lives (default: the weights cache).
    """

    runtime = "openvino"

    def __init__(self, weights: Weights, precision: str = "float32", input_size: int = INPUT_SIZE,
                 feature_sets: tuple[str, ...] = ("pooled",), threads: int | None = None, cache: Path | None = None):
        require_openvino()
        import openvino as ov

        from stylesift.featurizer.backbones.keras import POOLED, feature_fingerprint, set_fingerprints

        self.weights, self.precision, self.input_size = weights, precision, input_size
        self.feature_sets = tuple(feature_sets)
        if precision == "float32":
            self.path = build_float32(weights, self.feature_sets, input_size, cache)
            check = json.loads(check_path(self.path).read_text())
            if not check.get("passed"):
                from stylesift.featurizer.backbones.legacy_onnx import FastBackboneUnavailable

                raise FastBackboneUnavailable(
                    f"{self.path}: OpenVINO float32 does not reproduce the Keras features on this machine (minimum "
                    f"per-image cosine {check.get('min_cosine')}, needs {FLOAT32_MIN_COSINE}); use --runtime keras")
            base = feature_fingerprint(weights, input_size=input_size)
        elif precision == "int8":
            self.path = build_int8(weights, self.feature_sets, input_size, cache)
            base = int8_fingerprint(feature_fingerprint(weights, input_size=input_size))
        else:
            raise ValueError(f"unknown precision {precision!r}")
        self.fingerprints = set_fingerprints(base, self.feature_sets)
        self.fingerprint = self.fingerprints.get(POOLED, base)
        core = ov.Core()
        try:
            self.compiled = core.compile_model(str(self.path), "CPU", compile_config("LATENCY", threads))
        except RuntimeError as exc:
            raise RuntimeError(f"{self.path}: cannot load the cached OpenVINO model ({exc}); delete it and run "
                               "again to rebuild it") from None

    def run(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """Every feature set of a batch: uint8 RGB ``(n, size, size, 3)`` → ``{set: float32 (n, d)}``."""
        if len(images) == 0:
            return {name: np.zeros((0, int(self.compiled.outputs[i].get_partial_shape()[-1].get_length())), np.float32)
                    for i, name in enumerate(self.feature_sets)}
        return _run_compiled(self.compiled, images, self.feature_sets)

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """The pooled features of a batch (uint8 ``(n, size, size, 3)`` → float32 ``(n, 2048)``)."""
        return self.run(images)["pooled"]
