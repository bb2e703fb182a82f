"""Hostile model files: each crafted payload would run code if loaded naively; loading must refuse it and run nothing.

Every attack rewrites the header's checksum and size to match, as an attacker who can edit the
file would, so only the allow-list stands between the file and the code. Each test first proves
its file is really hostile (loaded with the offending type trusted, the marker appears), then that
`Bundle.load`, `Predictor.load` and `stylesift score` refuse it and the marker never appears.
"""

from __future__ import annotations

import io
import json
import pickle
import sys
import zipfile

import joblib
import numpy as np
import pytest
import skops.io
from helpers.bundles import FINGERPRINT, Marker, payload_of, write

from stylesift.classifiers.bundle import Bundle, BundleError
from stylesift.classifiers.head import OutputLayerHead
from stylesift.classifiers.predict import Predictor


class FakeFeaturizer:
    """What `Predictor.load` needs of a featurizer, without the network."""

    fingerprint = FINGERPRINT


@pytest.fixture(scope="module")
def fitted():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 16)).astype(np.float32)
    return OutputLayerHead().fit(X, X[:, 0] > 0)


def edit_zip(payload: bytes, edit) -> bytes:
    """``payload`` with ``edit(members: dict[name, bytes])`` applied to its members."""
    with zipfile.ZipFile(io.BytesIO(payload)) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    edit(members)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return out.getvalue()


def assert_refused(path, marker, *, match):
    with pytest.raises(BundleError, match=match) as exc:
        Bundle.load(path)
    assert str(path) in str(exc.value)
    with pytest.raises(BundleError, match=match):
        Predictor.load(path, path.parent / "features.h5", featurizer=FakeFeaturizer())
    assert not marker.exists(), "the hostile file ran code"
    return str(exc.value)


def test_an_extra_object_whose_state_runs_code_is_refused_by_name(tmp_path, fitted):
    marker = tmp_path / "ran"
    header, payload = payload_of(fitted.pipeline_, {"extra": Marker(marker)})
    skops.io.loads(payload, trusted=[f"{Marker.__module__}.Marker"])  # proof: built, it runs code
    assert marker.exists()
    marker.unlink()
    message = assert_refused(write(tmp_path / "m.ssmodel", header, payload), marker, match="allow-list")
    assert f"{Marker.__module__}.Marker" in message and "Nothing was loaded" in message


def test_a_hostile_object_hidden_inside_the_pipeline_is_refused(tmp_path, fitted):
    from sklearn.pipeline import Pipeline

    marker = tmp_path / "ran"
    pipeline = Pipeline([("hidden", Marker(marker)), *fitted.pipeline_.steps])
    header, payload = payload_of(pipeline)
    assert f"{Marker.__module__}.Marker" in assert_refused(write(tmp_path / "m.ssmodel", header, payload), marker, match="allow-list")


def test_a_global_lookup_of_a_module_that_runs_code_on_import_is_refused(tmp_path, fitted, monkeypatch):
    module = "stylesift_evil_on_import"
    marker = tmp_path / "ran"
    (tmp_path / f"{module}.py").write_text(f"open({str(marker)!r}, 'w').write('imported')\nclass Anything(str): pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    header, payload = payload_of(fitted.pipeline_)

    def add_type(members, lookups=(("Anything", module), ("system", "os"))):
        schema = json.loads(members["schema.json"])
        # dict keys are rebuilt as key_type(key): a key type is a global looked up, then called
        for cls, mod in lookups:
            schema["key_types"]["content"].append({"__class__": cls, "__module__": mod, "__loader__": "TypeNode"})
            schema["content"][f"{mod}-key"] = {"__class__": "str", "__module__": "builtins", "__loader__": "JsonNode",
                                               "content": '"x"', "is_json": True}
        members["schema.json"] = json.dumps(schema).encode()

    hostile = edit_zip(payload, add_type)
    message = assert_refused(write(tmp_path / "m.ssmodel", header, hostile), marker, match="allow-list")
    assert f"{module}.Anything" in message and "os.system" in message
    assert module not in sys.modules
    skops.io.loads(edit_zip(payload, lambda m: add_type(m, [("Anything", module)])), trusted=[f"{module}.Anything"])
    assert marker.exists()  # proof: loaded, the module is imported and the looked-up class called


@pytest.mark.parametrize("loader", ["FunctionNode", "MethodNode", "ReduceNode", "PartialNode", "OperatorFuncNode"])
def test_node_kinds_that_call_or_fetch_functions_are_refused_even_for_allowed_types(tmp_path, fitted, loader):
    header, payload = payload_of(fitted.pipeline_)

    def add(members):
        schema = json.loads(members["schema.json"])
        schema["content"]["f"] = {"__class__": "str", "__module__": "builtins", "__loader__": loader,
                                  "content": {"module_path": "os", "function": "system"}}
        members["schema.json"] = json.dumps(schema).encode()

    message = assert_refused(write(tmp_path / "m.ssmodel", header, edit_zip(payload, add)), tmp_path / "none",
                             match="allow-list")
    assert f"node kind {loader}" in message


def test_an_array_retyped_to_a_callable_is_refused(tmp_path, fitted):
    marker = tmp_path / "ran"
    header, payload = payload_of(fitted.pipeline_)

    def retype(members):  # NdArrayNode calls its __module__.__class__ on the array it read
        schema = json.loads(members["schema.json"])
        schema["content"]["train_sha256"].update({"__module__": "builtins", "__class__": "exec"})
        members["schema.json"] = json.dumps(schema).encode()

    assert "builtins.exec" in assert_refused(write(tmp_path / "m.ssmodel", header, edit_zip(payload, retype)), marker,
                                             match="allow-list")


@pytest.mark.parametrize("how", ["joblib-compressed", "plain-pickle", "object-npy"])
def test_a_pickle_smuggled_inside_the_archive_is_never_unpickled(tmp_path, fitted, how):
    marker = tmp_path / "ran"
    header, payload = payload_of(fitted.pipeline_)
    if how == "joblib-compressed":
        buf = io.BytesIO()
        joblib.dump(Marker(marker), buf, compress=3)
        smuggled = buf.getvalue()
    elif how == "plain-pickle":
        smuggled = pickle.dumps(Marker(marker))
    else:  # a real .npy file of dtype object: its body is a pickle
        buf = io.BytesIO()
        np.save(buf, np.array([Marker(marker)], dtype=object), allow_pickle=True)
        smuggled = buf.getvalue()

    def swap(members):
        schema = json.loads(members["schema.json"])
        members[schema["content"]["train_sha256"]["file"]] = smuggled

    message = assert_refused(write(tmp_path / "m.ssmodel", header, edit_zip(payload, swap)), marker, match="refused")
    assert "not a plain numpy array" in message or "array of Python objects (its data would be a pickle)" in message


def test_a_whole_pickle_as_payload_is_refused(tmp_path, fitted):
    marker = tmp_path / "ran"
    header, _ = payload_of(fitted.pipeline_)
    buf = io.BytesIO()
    joblib.dump({"pipeline": Marker(marker)}, buf, compress=3)
    assert_refused(write(tmp_path / "m.ssmodel", header, buf.getvalue()), marker, match="not a readable skops archive")


def test_a_zip_bomb_payload_is_refused_unread(tmp_path, fitted):
    header, payload = payload_of(fitted.pipeline_)

    def inflate(members):
        members["huge.npy"] = b""

    bomb = bytearray(edit_zip(payload, inflate))
    # claim 5 GiB uncompressed in the central directory entry of the last member
    at = bomb.rfind(b"PK\x01\x02")
    bomb[at + 24:at + 28] = (5 << 30 & 0xFFFFFFFF | 0xFFFFFFF0).to_bytes(4, "little")
    assert_refused(write(tmp_path / "m.ssmodel", header, bytes(bomb)), tmp_path / "none", match="more than 4 GiB; refused")


def test_a_payload_of_the_wrong_shape_is_refused(tmp_path, fitted):
    payload = skops.io.dumps({"pipeline": [1, 2], "train_sha256": np.array(["0"]), "train_labels": np.array(["x"])})
    header = Bundle(fitted.pipeline_, 0.0, "head", "good", None, FINGERPRINT).header(payload)
    assert_refused(write(tmp_path / "m.ssmodel", header, payload), tmp_path / "none", match="fitted pipeline")


def svc_pipeline():
    from sklearn.pipeline import Pipeline
    from sklearn.svm import SVC

    rng = np.random.default_rng(1)
    X = rng.normal(size=(60, 16))
    return Pipeline([("svm", SVC().fit(X, X[:, 0] > 0))]), X


@pytest.mark.parametrize("alter", ["counts", "dual", "intercept", "dtype", "kernel", "width"])
def test_libsvm_state_that_would_be_read_out_of_bounds_is_refused(tmp_path, alter):
    pipeline, X = svc_pipeline()
    svm = pipeline.steps[-1][1]
    if alter == "counts":
        svm._n_support = np.array([5000, 5000], np.int32)
    elif alter == "dual":
        svm._dual_coef_ = np.zeros((1, 3))
    elif alter == "intercept":
        svm._intercept_ = np.zeros(7)
    elif alter == "dtype":
        svm.support_vectors_ = svm.support_vectors_.astype(np.float32)
    elif alter == "kernel":
        svm.kernel = "precomputed"
    else:
        svm.support_vectors_ = np.ascontiguousarray(svm.support_vectors_[:, :4])
    header, payload = payload_of(pipeline)
    assert_refused(write(tmp_path / "m.ssmodel", header, payload), tmp_path / "none", match="inconsistent")


def test_a_neighbour_tree_is_never_written_or_loaded(tmp_path):
    from sklearn.neighbors import NearestNeighbors
    from sklearn.pipeline import Pipeline

    from stylesift.classifiers.distance import NearestPositives

    rng = np.random.default_rng(2)
    X = rng.normal(size=(50, 3)).astype(np.float32)  # few dimensions: sklearn picks a KD tree
    model = NearestPositives().fit(X, np.ones(len(X), bool))
    assert model.pipeline_.steps[-1][1].neighbors_._tree is not None
    bundle = Bundle(model.pipeline_, 0.0, "nearest-positives", "good", None, FINGERPRINT)
    back = Bundle.load(bundle.save(tmp_path / "np.ssmodel"))
    np.testing.assert_allclose(back.score(X), bundle.score(X), rtol=1e-6)  # brute force: the same neighbours
    assert model.pipeline_.steps[-1][1].neighbors_._tree is not None  # the caller's model is left as it was
    assert back.pipeline.steps[-1][1].neighbors_._fit_method == "brute"
    tree = Pipeline([("knn", NearestNeighbors(algorithm="kd_tree").fit(X))])
    header, payload = payload_of(tree)
    message = assert_refused(write(tmp_path / "tree.ssmodel", header, payload), tmp_path / "none", match="allow-list")
    assert "KDTree" in message


def test_an_array_header_claiming_more_than_its_bytes_is_refused_before_numpy_allocates(tmp_path, fitted):
    header, payload = payload_of(fitted.pipeline_)

    def inflate(members):
        schema = json.loads(members["schema.json"])
        name = schema["content"]["train_sha256"]["file"]
        buf = io.BytesIO()
        np.lib.format.write_array_header_1_0(buf, {"descr": "<f8", "fortran_order": False, "shape": (10**9, 1000)})
        members[name] = buf.getvalue() + b"\0" * 64

    message = assert_refused(write(tmp_path / "m.ssmodel", header, edit_zip(payload, inflate)), tmp_path / "none",
                             match=r"which its \d+ bytes do not hold")
    assert "(1000000000, 1000)" in message


@pytest.mark.parametrize("strip", ["coef_", "intercept_", "mean_", "scale_"])
def test_a_model_missing_its_fitted_state_is_refused_at_load_not_mid_run(tmp_path, fitted, strip):
    import copy

    pipeline = copy.deepcopy(fitted.pipeline_)
    for _, step in pipeline.steps:
        if hasattr(step, strip):
            delattr(step, strip)
    header, payload = payload_of(pipeline)
    message = assert_refused(write(tmp_path / "m.ssmodel", header, payload), tmp_path / "none", match="cannot score")
    assert "Retrain it" in message


def test_an_svm_without_its_kernel_is_refused(tmp_path):
    pipeline, _ = svc_pipeline()
    del pipeline.steps[-1][1].kernel
    header, payload = payload_of(pipeline)
    assert_refused(write(tmp_path / "m.ssmodel", header, payload), tmp_path / "none", match="inconsistent")
