"""Which runtime executes a feature space: the one place that maps (precision, runtime) to a backbone.

A *space* is what the features mean; a *runtime* is what computes them. Spaces and the runtimes
allowed to execute them (each proven equal by a check, see :mod:`stylesift.featurizer.backbones.openvino`):

====================  ===========================  ==========================================
space                 runtimes                      notes
====================  ===========================  ==========================================
``float32``           keras, openvino               openvino only after its build-time check
                                                    (per-image cosine ≥ 0.99999 to Keras)
``int8``              openvino                      NNCF recipe, :data:`INT8_RECIPE`
``int8`` (first)      onnxruntime                   the first recipe; stores/bundles made with it
====================  ===========================  ==========================================

``runtime="auto"`` picks, among the runtimes installed and valid for the space, the fastest
measured on this machine; the measurement runs once per machine (CPU model, flags, core count,
library versions, ``ONEDNN_MAX_CPU_ISA``) and is cached in ``runtime-choice.json`` beside the weights.
A runtime that does not need TensorFlow wins unless Keras is more than :data:`KERAS_MARGIN` times
faster, because TensorFlow's import and model build cost seconds on every start.

Every backbone has the same interface: ``feature_sets``, ``run(images) -> {set: array}``,
``fingerprints`` (one per set), ``fingerprint`` (the pooled one), ``backbone(images)`` (pooled),
``runtime`` and ``precision``. This module imports no runtime until one is built.
"""

from __future__ import annotations

import json
import os
import platform
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from stylesift.atomic import atomic_write
from stylesift.errors import StylesiftError
from stylesift.featurizer.backbones import legacy_onnx
from stylesift.featurizer.backbones import openvino as openvino_backbone
from stylesift.featurizer.backbones.keras import POOLED, feature_fingerprint, set_fingerprints
from stylesift.featurizer.space import INPUT_SIZE, PRECISIONS
from stylesift.featurizer.weights import Weights, cache_dir

RUNTIMES = ("auto", "keras", "openvino", "onnxruntime")
# Spaces: "float32", "int8" (the NNCF recipe) and "int8-onnxruntime" (the first recipe).
LEGACY_INT8 = "int8-onnxruntime"
KERAS_MARGIN = 1.10
CHOICE_FILE = "runtime-choice.json"
INT8_RECIPE = openvino_backbone.INT8_RECIPE


class RuntimeUnavailable(StylesiftError, ValueError):
    """The runtime asked for cannot execute this feature space here; the message says what can."""


def space_of(precision: str, runtime: str = "auto") -> str:
    """The feature space a ``--precision``/``--runtime`` pair names (``int8`` on onnxruntime is the first recipe)."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; expected one of {', '.join(PRECISIONS)}")
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime {runtime!r}; expected one of {', '.join(RUNTIMES)}")
    return LEGACY_INT8 if (precision == "int8" and runtime == "onnxruntime") else precision


def space_of_fingerprint(fingerprint: dict | None) -> str:
    """The space of a store's or bundle's pooled fingerprint (``float32`` when there is none)."""
    if not fingerprint or fingerprint.get("precision", "float32") == "float32":
        return "float32"
    if fingerprint.get("quantization_id") == legacy_onnx.RECIPE_ID:
        return LEGACY_INT8
    return "int8"


def precision_of(space: str) -> str:
    return "int8" if space.startswith("int8") else "float32"


def pooled_fingerprint(weights: Weights, space: str, *, input_size: int = INPUT_SIZE) -> dict:
    """The pooled set's fingerprint of ``space`` for these weights (nothing is built)."""
    base = feature_fingerprint(weights, input_size=input_size)
    if space == "float32":
        return base
    if space == "int8":
        return openvino_backbone.int8_fingerprint(base)
    if space == LEGACY_INT8:
        return legacy_onnx.int8_fingerprint(base)
    raise ValueError(f"unknown feature space {space!r}")


def fingerprints(weights: Weights, space: str, feature_sets: tuple[str, ...] = (POOLED,), *,
                 input_size: int = INPUT_SIZE) -> dict[str, dict]:
    """One fingerprint per feature set of ``space`` (nothing is built)."""
    return set_fingerprints(pooled_fingerprint(weights, space, input_size=input_size), tuple(feature_sets))


def backbone_fingerprint(weights: Weights, precision: str = "float32", *, runtime: str = "auto",
                         input_size: int = INPUT_SIZE) -> dict:
    """The pooled fingerprint of the space a precision (and runtime) names; float32's is :func:`feature_fingerprint`."""
    return pooled_fingerprint(weights, space_of(precision, runtime), input_size=input_size)


def installed(runtime: str) -> bool:
    """Whether a runtime's library can be imported (keras always can)."""
    if runtime == "openvino":
        return openvino_backbone.available()
    if runtime == "onnxruntime":
        try:
            legacy_onnx.require_runtime()
        except legacy_onnx.FastBackboneUnavailable:
            return False
    return True


def valid_runtimes(space: str) -> tuple[str, ...]:
    """The runtimes proven (or, for openvino float32, checked at build) to compute ``space``."""
    return {"float32": ("keras", "openvino"), "int8": ("openvino",), LEGACY_INT8: ("onnxruntime",)}[space]


def require_runtime(space: str, runtime: str = "auto") -> None:
    """Raise a user error now, before any file is read, unless ``runtime`` can execute ``space`` here."""
    if runtime == "auto":
        if not any(installed(r) for r in valid_runtimes(space)):
            if space == LEGACY_INT8:
                legacy_onnx.require_runtime()
            openvino_backbone.require_openvino(f"the {space} backbone")
        return
    if runtime not in valid_runtimes(space):
        raise RuntimeUnavailable(f"--runtime {runtime} cannot compute {_describe(space)} features (no check proves "
                                 f"it gives the same features); use one of: {', '.join(valid_runtimes(space))}, or auto")
    if runtime == "onnxruntime":
        legacy_onnx.require_runtime()
    elif runtime == "openvino":
        openvino_backbone.require_openvino()


def _describe(space: str) -> str:
    return {"float32": "float32", "int8": "int8", LEGACY_INT8: "the first int8 recipe's (ONNX Runtime)"}[space]


def build(weights: Weights, space: str, runtime: str, feature_sets: tuple[str, ...] = (POOLED,), *,
          input_size: int = INPUT_SIZE, threads: int | None = None):
    """Build the backbone of ``space`` on a concrete ``runtime`` (not auto)."""
    feature_sets = tuple(feature_sets)
    require_runtime(space, runtime)
    if runtime == "keras":
        from stylesift.featurizer.backbones.keras import Backbone

        return Backbone(weights, input_size, feature_sets)
    if runtime == "openvino":
        return openvino_backbone.OpenVINOBackbone(weights, precision_of(space), input_size, feature_sets, threads)
    return legacy_onnx.Int8Backbone(weights, input_size, threads, feature_sets)


def make_backbone(weights: Weights, precision: str = "float32", *, runtime: str = "auto",
                  feature_sets: tuple[str, ...] = (POOLED,), input_size: int = INPUT_SIZE, space: str | None = None):
    """The backbone for a precision (or an explicit ``space``) on ``runtime`` (``auto``: see :func:`choose`)."""
    space = space or space_of(precision, runtime)
    if runtime != "auto":
        return build(weights, space, runtime, feature_sets, input_size=input_size)
    chosen, built = choose(weights, space, feature_sets, input_size=input_size)
    return built if built is not None else build(weights, space, chosen, feature_sets, input_size=input_size)


# -- the automatic choice -------------------------------------------------------------------------------------------

def machine_key() -> str:
    """What decides which runtime is fastest here: CPU model and flags, cores, library versions, ISA limits."""
    from importlib.metadata import PackageNotFoundError, version

    cpu, flags = platform.processor() or platform.machine(), ""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name") and cpu in ("", platform.machine(), platform.processor()):
                    cpu = line.split(":", 1)[1].strip()
                if line.startswith("flags"):
                    flags = " ".join(sorted(f for f in line.split(":", 1)[1].split()
                                            if f.startswith(("avx", "amx", "fma", "sse4"))))
                    break
    except OSError:
        pass
    versions = []
    for package in ("tensorflow", "openvino", "onnxruntime"):
        try:
            versions.append(f"{package}={version(package)}")
        except PackageNotFoundError:
            versions.append(f"{package}=none")
    parts = [cpu, flags, f"cpus={os.cpu_count()}", *versions, f"isa={os.environ.get('ONEDNN_MAX_CPU_ISA', '')}"]
    import hashlib

    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def _choice_path(cache: Path | None = None) -> Path:
    return (cache or cache_dir()) / CHOICE_FILE


def cached_choice(space: str, feature_sets: tuple[str, ...], input_size: int = INPUT_SIZE,
                  cache: Path | None = None) -> dict | None:
    """The cached measurement for this machine and space, or None."""
    try:
        table = json.loads(_choice_path(cache).read_text())
    except (OSError, ValueError):
        return None
    entry = table.get(machine_key(), {}).get(_space_key(space, feature_sets, input_size))
    candidates = [r for r in valid_runtimes(space) if installed(r)]
    if not entry or entry.get("runtime") not in candidates or entry.get("candidates") != candidates:
        return None  # something was installed or removed since: measure again
    return entry


def _space_key(space: str, feature_sets: tuple[str, ...], input_size: int) -> str:
    return f"{space}/{'+'.join(feature_sets)}/{input_size}"


def pick(rates: dict[str, float]) -> str:
    """The runtime to use given measured images/s: the fastest, but Keras only when clearly faster (start-up)."""
    best = max(rates, key=rates.get)
    if best == "keras":
        others = {r: v for r, v in rates.items() if r != "keras"}
        if others:
            runner_up = max(others, key=others.get)
            if rates["keras"] <= KERAS_MARGIN * others[runner_up]:
                return runner_up
    return best


def measure(backbone, images: np.ndarray, *, batch_size: int = 16, rounds: int = 2) -> float:
    """Images per second of ``backbone`` on ``images`` (one warm-up batch, then the best of ``rounds``)."""
    backbone.run(images[:batch_size])
    best = 0.0
    for _ in range(rounds):
        start = time.perf_counter()
        for i in range(0, len(images), batch_size):
            backbone.run(images[i:i + batch_size])
        best = max(best, len(images) / (time.perf_counter() - start))
    return best


def choose(weights: Weights, space: str, feature_sets: tuple[str, ...] = (POOLED,), *, input_size: int = INPUT_SIZE,
           cache: Path | None = None, remeasure: bool = False, log=lambda message: None) -> tuple[str, object | None]:
    """``(runtime, built backbone or None)`` for ``space``: from this machine's cache, else measured now and cached."""
    feature_sets = tuple(feature_sets)
    require_runtime(space, "auto")
    candidates = [r for r in valid_runtimes(space) if installed(r)]
    if len(candidates) == 1:
        return candidates[0], None
    entry = None if remeasure else cached_choice(space, feature_sets, input_size, cache)
    if entry:
        return entry["runtime"], None
    from stylesift.featurizer.backbones.calibration import check_images

    images = np.concatenate([check_images(input_size)] * 2)
    built, rates = {}, {}
    for runtime in candidates:
        log(f"measuring the {runtime} runtime for {space} on this machine (once)")
        try:
            built[runtime] = build(weights, space, runtime, feature_sets, input_size=input_size)
        except legacy_onnx.FastBackboneUnavailable:
            continue  # e.g. openvino failed its equality check here: not a candidate
        rates[runtime] = round(measure(built[runtime], images), 2)
    chosen = pick(rates)
    record(space, feature_sets, input_size, {"runtime": chosen, "candidates": candidates, "images_per_second": rates,
                                             "measured": datetime.now(timezone.utc).isoformat(timespec="seconds")},
           cache)
    return chosen, built.get(chosen)


def record(space: str, feature_sets: tuple[str, ...], input_size: int, entry: dict, cache: Path | None = None) -> None:
    """Write one measurement into the per-machine choice table (atomic replace)."""
    path = _choice_path(cache)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        table = json.loads(path.read_text())
    except (OSError, ValueError):
        table = {}
    table.setdefault(machine_key(), {})[_space_key(space, feature_sets, input_size)] = entry
    with atomic_write(path, "w") as fh:
        fh.write(json.dumps(table, indent=1, sort_keys=True))
