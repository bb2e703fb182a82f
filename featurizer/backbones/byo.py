"""Bring your own backbone: an ONNX or OpenVINO IR image-embedding network the user exported, run by OpenVINO.

The network file comes with a small JSON *sidecar* beside it (``model.onnx`` → ``model.json``, or
``model.onnx.json``) that says how to feed it::

    {"input_size": 224,            # square side in pixels (the whole image is resized to it)
     "layout": "NCHW",             # the network's input layout: NCHW or NHWC
     "channels": "RGB",            # RGB or BGR
     "scale": 255.0,               # pixel values are divided by this first (1.0: keep 0-255)
     "mean": [0.485, 0.456, 0.406],  # then (x - mean) / std per channel, on the scaled values
     "std": [0.229, 0.224, 0.225],
     "output": "embedding"}        # output name (default: the first output); (n, d) or (n, d, 1, 1)

Its fingerprint is the file's sha256 plus the sidecar (and the path it was used from), so its
features never mix with ResNet50's or with another file's. A file whose sha256 differs from the one
a store or model recorded is refused.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from stylesift.errors import StylesiftError

SIDECAR_KEYS = {"input_size", "layout", "channels", "scale", "mean", "std", "output"}


class BackboneFileError(StylesiftError, ValueError):
    """A bring-your-own backbone file or its sidecar is missing, malformed or not the recorded one."""


def sidecar_path(path: Path) -> Path:
    """The sidecar of ``path``: ``NAME.json`` beside it, else ``NAME.onnx.json`` / ``NAME.xml.json``."""
    for candidate in (path.with_suffix(".json"), path.with_name(path.name + ".json")):
        if candidate.is_file():
            return candidate
    return path.with_suffix(".json")


def file_sha256(path: Path) -> str:
    """sha256 of the network file (and, for OpenVINO IR, of its ``.bin`` weights too)."""
    digest = hashlib.sha256()
    for part in (path, path.with_suffix(".bin")) if path.suffix == ".xml" else (path,):
        with open(part, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def read_sidecar(path: Path) -> dict:
    """The validated sidecar of the network at ``path``; :class:`BackboneFileError` saying what to fix."""
    side = sidecar_path(path)
    try:
        spec = json.loads(side.read_text())
    except FileNotFoundError:
        raise BackboneFileError(f"{path}: no sidecar {side} describing its input (see README, 'Bring your own "
                                "backbone')") from None
    except ValueError as exc:
        raise BackboneFileError(f"{side}: not valid JSON ({exc})") from None
    return check_sidecar(spec, side)


def check_sidecar(spec, side) -> dict:
    """``spec`` with its defaults filled in, or :class:`BackboneFileError` naming ``side`` and what to fix."""
    if not isinstance(spec, dict):
        raise BackboneFileError(f"{side}: expected a JSON object")
    unknown = set(spec) - SIDECAR_KEYS
    if unknown:
        raise BackboneFileError(f"{side}: unknown keys {sorted(unknown)}; allowed: {sorted(SIDECAR_KEYS)}")
    try:
        out = {"input_size": spec.get("input_size", 224), "layout": str(spec.get("layout", "NCHW")).upper(),
               "channels": str(spec.get("channels", "RGB")).upper(), "scale": float(spec.get("scale", 255.0)),
               "mean": [float(v) for v in spec.get("mean", [0.0, 0.0, 0.0])],
               "std": [float(v) for v in spec.get("std", [1.0, 1.0, 1.0])], "output": spec.get("output")}
    except (TypeError, ValueError):
        raise BackboneFileError(f"{side}: scale must be a number, mean and std lists of numbers") from None
    if out["output"] is not None and not isinstance(out["output"], str):
        raise BackboneFileError(f"{side}: output must be the name of the network's output (a string)")
    if not isinstance(out["input_size"], int) or not 8 <= out["input_size"] <= 2048:
        raise BackboneFileError(f"{side}: input_size must be an integer between 8 and 2048")
    if out["layout"] not in ("NCHW", "NHWC") or out["channels"] not in ("RGB", "BGR"):
        raise BackboneFileError(f"{side}: layout must be NCHW or NHWC and channels RGB or BGR")
    if len(out["mean"]) != 3 or len(out["std"]) != 3 or min(out["std"]) <= 0 or out["scale"] <= 0:
        raise BackboneFileError(f"{side}: mean and std need 3 values each (std > 0), scale > 0")
    return out


def byo_fingerprint(path: Path, *, sha256: str | None = None, spec: dict | None = None, feature_dim: int | None = None) -> dict:
    """The pooled fingerprint of features from this network file."""
    path = Path(path)
    spec = spec if spec is not None else read_sidecar(path)
    return {"backbone": f"bring-your-own ({'OpenVINO IR' if path.suffix == '.xml' else 'ONNX'})",
            "file": str(path.resolve()), "file_sha256": sha256 or file_sha256(path), "sidecar": spec,
            "input_size": spec["input_size"], "feature_dim": feature_dim,
            "geometry": "whole image resized to a square, no crop (Pillow bilinear; JPEG draft decoding)",
            "precision": "float32", "dtype": "float32"}


def is_byo(fingerprint: dict | None) -> bool:
    return bool(fingerprint) and str(fingerprint.get("backbone", "")).startswith("bring-your-own")


def byo_fingerprint_problem(fp: dict) -> str | None:
    """What is wrong with a bring-your-own fingerprint read from a file (a bundle or store header), or None.

    Such a fingerprint is what builds the network later (its file, its sidecar), so every field that
    does is checked where the header is read, not where a KeyError would surface.
    """
    sha = fp.get("file_sha256")
    if not isinstance(fp.get("file"), str) or not fp["file"]:
        return "a bring-your-own fingerprint needs 'file', the network's path (a string)"
    if not (isinstance(sha, str) and len(sha) == 64 and all(c in "0123456789abcdef" for c in sha)):
        return "a bring-your-own fingerprint needs 'file_sha256', 64 lowercase hex digits"
    try:
        spec = check_sidecar(fp.get("sidecar"), "its 'sidecar'")
    except BackboneFileError as exc:
        return f"a bring-your-own fingerprint needs a valid 'sidecar' ({exc})"
    if fp.get("input_size") != spec["input_size"]:
        return "a bring-your-own fingerprint needs 'input_size', the sidecar's (an integer)"
    dim = fp.get("feature_dim")
    if dim is not None and (not isinstance(dim, int) or isinstance(dim, bool) or dim <= 0):
        return "'feature_dim' must be a positive integer"
    return None


def _output_dim(path: Path, spec: dict) -> int:
    import openvino as ov

    model = ov.Core().read_model(str(path))
    out = model.output(spec["output"]) if spec["output"] else model.outputs[0]
    shape = out.get_partial_shape()
    dims = [shape[i].get_length() for i in range(1, shape.rank.get_length()) if shape[i].is_static]
    if not dims or int(np.prod(dims)) != max(dims):
        raise BackboneFileError(f"{path}: output {out.get_any_name()} has shape {shape}; expected (n, d) or (n, d, 1, 1)")
    return int(max(dims))


def resolve_fingerprint(path: Path, recorded: dict | None = None) -> dict:
    """This file's fingerprint; with ``recorded`` (from a store or bundle), that one, after proving it is the same file."""
    from stylesift.featurizer.backbones.openvino import require_openvino

    require_openvino("--backbone")
    path = Path(path)
    if not path.is_file():
        raise BackboneFileError(f"{path}: no such backbone file (an .onnx, or an OpenVINO .xml with its .bin)")
    sha = file_sha256(path)
    if recorded is not None:
        if recorded.get("file_sha256") != sha:
            raise BackboneFileError(f"{path}: sha256 {sha[:16]}… differs from the backbone the store or model was made "
                                    f"with ({str(recorded.get('file_sha256'))[:16]}…, from {recorded.get('file')}); "
                                    "give that file with --backbone, or re-extract with this one")
        return recorded
    spec = read_sidecar(path)
    return byo_fingerprint(path, sha256=sha, spec=spec, feature_dim=_output_dim(path, spec))


class ByoBackbone:
    """A user's network on OpenVINO; same interface as the other backbones (one set, ``pooled``)."""

    runtime = "openvino"
    precision = "float32"
    feature_sets = ("pooled",)

    def __init__(self, path: Path, fingerprint: dict, threads: int | None = None):
        import openvino as ov
        from openvino.preprocess import PrePostProcessor

        self.path, self.fingerprint = Path(path), fingerprint
        self.fingerprints = {"pooled": fingerprint}
        spec = fingerprint["sidecar"]
        self.input_size = spec["input_size"]
        core = ov.Core()
        model = core.read_model(str(self.path))
        if len(model.inputs) != 1:
            raise BackboneFileError(f"{path}: the network has {len(model.inputs)} inputs; expected one image input")
        ppp = PrePostProcessor(model)
        ppp.input().tensor().set_element_type(ov.Type.u8).set_layout(ov.Layout("NHWC"))
        ppp.input().model().set_layout(ov.Layout(spec["layout"]))
        steps = ppp.input().preprocess().convert_element_type(ov.Type.f32)
        if spec["channels"] == "BGR":
            steps.reverse_channels()
        mean = [m * spec["scale"] for m in spec["mean"]]
        std = [s * spec["scale"] for s in spec["std"]]
        steps.mean(mean).scale(std)
        model = ppp.build()
        config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        self.compiled = core.compile_model(model, "CPU", config)
        self._output = self.compiled.output(spec["output"]) if spec["output"] else self.compiled.outputs[0]
        self.dim = int(fingerprint["feature_dim"])

    def run(self, images: np.ndarray) -> dict[str, np.ndarray]:
        if len(images) == 0:
            return {"pooled": np.zeros((0, self.dim), np.float32)}
        out = self.compiled(np.ascontiguousarray(images, dtype=np.uint8))[self._output]
        return {"pooled": np.asarray(out, np.float32).reshape(len(images), -1)}

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return self.run(images)["pooled"]
