"""Choosing a runtime: only runtimes proven for a space, the fastest measured here, cached per machine."""

from __future__ import annotations

import pytest

from stylesift.featurizer.backbones import legacy_onnx as fast_backbone
from stylesift.featurizer.backbones import openvino as openvino_backbone
from stylesift.featurizer.backbones import runtimes


def test_spaces_and_the_runtimes_allowed_to_compute_them():
    assert runtimes.space_of("float32") == "float32"
    assert runtimes.space_of("int8") == runtimes.space_of("int8", "openvino") == "int8"
    assert runtimes.space_of("int8", "onnxruntime") == runtimes.LEGACY_INT8  # the first recipe
    assert runtimes.valid_runtimes("int8") == ("openvino",)
    with pytest.raises(runtimes.RuntimeUnavailable, match="openvino"):
        runtimes.require_runtime("int8", "keras")
    with pytest.raises(runtimes.RuntimeUnavailable, match="keras, openvino"):
        runtimes.require_runtime("float32", "onnxruntime")


def test_a_fingerprint_names_its_space():
    base = {"backbone": "keras.applications.ResNet50", "precision": "float32"}
    assert runtimes.space_of_fingerprint(None) == runtimes.space_of_fingerprint(base) == "float32"
    assert runtimes.space_of_fingerprint(openvino_backbone.int8_fingerprint(base)) == "int8"
    assert runtimes.space_of_fingerprint(fast_backbone.int8_fingerprint(base)) == runtimes.LEGACY_INT8


def test_pick_prefers_a_runtime_without_tensorflow_unless_keras_is_clearly_faster():
    assert runtimes.pick({"keras": 10.0, "openvino": 12.0}) == "openvino"
    assert runtimes.pick({"keras": 10.5, "openvino": 10.0}) == "openvino"  # within the start-up margin
    assert runtimes.pick({"keras": 12.0, "openvino": 10.0}) == "keras"
    assert runtimes.pick({"keras": 5.0}) == "keras"


def test_choice_is_cached_per_machine(tmp_path, monkeypatch):
    monkeypatch.setattr(runtimes, "installed", lambda r: r in ("keras", "openvino"))
    key = ("float32", ("pooled",), 224)
    assert runtimes.cached_choice(*key, cache=tmp_path) is None
    runtimes.record(*key, {"runtime": "openvino", "candidates": ["keras", "openvino"],
                           "images_per_second": {"keras": 6.0, "openvino": 7.0}}, tmp_path)
    assert runtimes.cached_choice(*key, cache=tmp_path)["runtime"] == "openvino"
    assert runtimes.choose(None, "float32", cache=tmp_path) == ("openvino", None)  # nothing built or measured
    # Another machine (here: OpenVINO limited to AVX2) measures for itself.
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert runtimes.cached_choice(*key, cache=tmp_path) is None
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA")
    # A runtime installed or removed since the measurement: measured again.
    monkeypatch.setattr(runtimes, "installed", lambda r: r == "keras" or r == "openvino" or r == "onnxruntime")
    monkeypatch.setattr(runtimes, "valid_runtimes", lambda space: ("keras", "openvino", "onnxruntime"))
    assert runtimes.cached_choice(*key, cache=tmp_path) is None


def test_missing_openvino_names_the_extra(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "openvino", None)
    assert not runtimes.installed("openvino")
    with pytest.raises(fast_backbone.FastBackboneUnavailable, match=r"stylesift\[fast\]"):
        runtimes.require_runtime("int8", "auto")
    with pytest.raises(fast_backbone.FastBackboneUnavailable, match="openvino"):
        runtimes.require_runtime("float32", "openvino")
