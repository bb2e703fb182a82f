"""A cache entry is built by one process at a time: one that misses the cache while another builds the
same entry waits for it and uses its file instead of building it again (weights, OpenVINO and ONNX networks)."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from filelock import FileLock, Timeout

from stylesift.featurizer import build_lock as build_lock_module
from stylesift.featurizer.backbones import detail_net, legacy_onnx
from stylesift.featurizer.backbones import openvino as ov_backbone
from stylesift.featurizer.build_lock import build_lock, lock_path
from stylesift.featurizer.weights import Weights
from stylesift.featurizer.weights import sources as weight_sources

FAKE = Weights(notop=Path("unused.weights.h5"), top=None, source="test", fingerprint="ab" * 32)


def _refuse(*_args, **_kwargs):
    raise AssertionError("built again although another process had just built it")


def _race(monkeypatch, target: Path, call, finish):
    """Hold ``target``'s build lock as "another process", start ``call`` in a thread, and once it waits for
    the lock, run ``finish`` (the other process's result appears) and release; returns ``call``'s result."""
    waiting = threading.Event()
    monkeypatch.setattr(build_lock_module.log, "warning", lambda *a, **k: waiting.set())
    other = FileLock(str(lock_path(target)))
    target.parent.mkdir(parents=True, exist_ok=True)
    other.acquire()
    result = {}

    def run():
        try:
            result["value"] = call()
        except BaseException as exc:  # noqa: BLE001 - reported by the test thread
            result["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    try:
        assert waiting.wait(30), "the second builder did not wait for the first one's lock"
        assert thread.is_alive()
        finish()
    finally:
        other.release()
    thread.join(60)
    assert not thread.is_alive()
    if "error" in result:
        raise result["error"]
    return result["value"]


def _write(*paths: Path) -> None:
    for p in paths:
        p.write_text("{}" if p.suffix == ".json" else "built by the other process")


def test_weights_fetched_by_another_process_are_used_not_fetched_again(tmp_path, monkeypatch):
    monkeypatch.delenv(weight_sources.WEIGHTS_ENV, raising=False)
    monkeypatch.setattr(weight_sources, "SOURCES", (weight_sources.from_cache, _refuse))

    def fill_cache():
        (tmp_path / "notop.weights.h5").write_bytes(b"weights")
        (tmp_path / weight_sources.RECORD_FILE).write_text(json.dumps(
            {"notop": "notop.weights.h5", "top": None, "source": "the other process", "fingerprint": "cd" * 32}))

    got = _race(monkeypatch, tmp_path / weight_sources.RECORD_FILE,
                lambda: weight_sources.resolve(cache=tmp_path), fill_cache)
    assert (got.source, got.fingerprint, got.notop) == ("the other process", "cd" * 32, tmp_path / "notop.weights.h5")


def test_an_int8_openvino_network_built_meanwhile_is_not_quantized_again(tmp_path, monkeypatch):
    target = ov_backbone.model_path(FAKE, "int8", ("pooled",), cache=tmp_path)
    monkeypatch.setattr(ov_backbone, "build_float32", _refuse)  # the first step of a build
    got = _race(monkeypatch, target, lambda: ov_backbone.build_int8(FAKE, cache=tmp_path), lambda: _write(target))
    assert got == target


def test_a_float32_openvino_network_built_meanwhile_is_not_converted_again(tmp_path, monkeypatch):
    target = ov_backbone.model_path(FAKE, "float32", ("pooled", "style"), cache=tmp_path)
    monkeypatch.setattr(ov_backbone, "_build_float32", _refuse)
    got = _race(monkeypatch, target, lambda: ov_backbone.build_float32(FAKE, ("pooled", "style"), cache=tmp_path),
                lambda: _write(target, ov_backbone.check_path(target)))
    assert got == target


@pytest.mark.parametrize("precision", ["float32", "int8"])
def test_a_detail_network_built_meanwhile_is_not_built_again(tmp_path, monkeypatch, precision):
    target = detail_net.model_path(FAKE, precision, tmp_path)
    monkeypatch.setattr(detail_net, "_build_openvino", _refuse)
    made = [target] + ([ov_backbone.check_path(target)] if precision == "float32" else [])
    got = _race(monkeypatch, target, lambda: detail_net.build_openvino(FAKE, precision, tmp_path), lambda: _write(*made))
    assert got == target


def test_the_legacy_onnx_network_built_meanwhile_is_not_quantized_again(tmp_path, monkeypatch):
    target = legacy_onnx.model_path(FAKE, tmp_path)
    monkeypatch.setattr(legacy_onnx, "_build_int8_model", _refuse)
    got = _race(monkeypatch, target, lambda: legacy_onnx.build_int8_model(FAKE, cache=tmp_path), lambda: _write(target))
    assert got == target


def test_a_failed_build_releases_the_lock(tmp_path):
    target = tmp_path / "entry.xml"
    with pytest.raises(RuntimeError, match="conversion failed"), build_lock(target, "an entry"):
        raise RuntimeError("conversion failed")
    lock = FileLock(str(lock_path(target)))
    try:
        lock.acquire(timeout=0)  # free again: the next process builds instead of waiting forever
    except Timeout:
        pytest.fail("the lock of a failed build is still held")
    lock.release()


def test_a_folder_where_no_lock_can_be_made_still_lets_the_build_run(tmp_path, monkeypatch):
    def unwritable(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(lock_path(tmp_path / "entry.xml")))

    monkeypatch.setattr(FileLock, "acquire", unwritable)
    ran = []
    with build_lock(tmp_path / "entry.xml", "an entry"):
        ran.append(True)
    assert ran == [True]
