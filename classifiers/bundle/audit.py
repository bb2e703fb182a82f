"""What a bundle's payload may build: the allow-list of types and node kinds, and the checks of fitted state.

The payload is a `skops <https://skops.readthedocs.io>`_ zip of one JSON schema and plain ``.npy``
arrays. :func:`untrusted_types` reads the schema alone; only when every type is on
:func:`allowed_types` and every node kind on :data:`ALLOWED_NODES` does skops build anything, and
the objects built are checked again (:func:`check_state`, :func:`check_scores`).
"""

from __future__ import annotations

import io
import json
import math
import zipfile

import numpy as np

from stylesift.classifiers.base import pipeline_scores
from stylesift.classifiers.bundle.header import MAX_PAYLOAD_BYTES, MAX_SCHEMA_BYTES, BundleError

# The node kinds of a skops schema a bundle may use: containers, JSON scalars, plain arrays, numpy
# scalar types and objects rebuilt from their attribute dict. Function, method, partial, reduce and
# operator nodes (the ones that call something by name) are refused outright.
ALLOWED_NODES = frozenset({"ObjectNode", "DictNode", "ListNode", "TupleNode", "JsonNode", "NdArrayNode", "TypeNode",
                           "CachedNode"})


def allowed_types() -> frozenset[str]:
    """``module.Name`` of exactly the types the methods' fitted pipelines hold (see classifiers/methods.py)."""
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import NearestNeighbors
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC, OneClassSVM

    from stylesift.classifiers.distance import KNearestScore
    from stylesift.classifiers.kernel_svm import KernelOneClassSVM
    from stylesift.classifiers.one_class import ScaledOneClassSVM
    from stylesift.classifiers.preprocess import CappedPCA, PowerNormalizer

    types = [dict, list, tuple, str, int, float, bool, type(None),
             np.ndarray, np.float64, np.float32, np.int64, np.int32, np.bool_,
             Pipeline, PCA, SVC, OneClassSVM, LogisticRegression, StandardScaler,
             NearestNeighbors,
             CappedPCA, PowerNormalizer, ScaledOneClassSVM, KernelOneClassSVM, KNearestScore]
    return frozenset(f"{t.__module__}.{t.__name__}" for t in types)


def untrusted_types(payload: bytes, path) -> list[str]:
    """Types and node kinds in the skops ``payload`` that are not on the allow-lists, sorted (empty: safe).

    Reads the zip's ``schema.json`` only; builds nothing and imports nothing the file names.
    """
    types, nodes = schema_types(payload, path)
    return sorted((types - allowed_types()) | {f"node kind {n}" for n in nodes - ALLOWED_NODES})


def schema_types(payload: bytes, path, arrays: bool = False) -> tuple[set[str], set[str]]:
    """``({"module.Name", ...}, {"NodeKind", ...})`` named anywhere in the skops schema of ``payload``.

    With ``arrays``, every other member must also be a plain ``.npy`` array that its size holds.
    """
    try:
        with zipfile.ZipFile(io.BytesIO(payload)) as zf:
            infos = zf.infolist()
            if sum(i.file_size for i in infos) > MAX_PAYLOAD_BYTES:
                raise BundleError(f"{path}: the model payload would unpack to more than {MAX_PAYLOAD_BYTES >> 30} GiB; refused")
            info = zf.getinfo("schema.json")
            if info.file_size > MAX_SCHEMA_BYTES:
                raise BundleError(f"{path}: the model schema is larger than {MAX_SCHEMA_BYTES >> 20} MiB; refused")
            schema = json.loads(zf.read(info))
            if arrays:
                for member in infos:
                    if member.filename != "schema.json":
                        _check_array_header(zf, member, path)
    except BundleError:
        raise
    except (zipfile.BadZipFile, KeyError, ValueError, OSError, EOFError, NotImplementedError, RuntimeError) as exc:
        raise BundleError(f"{path}: the model payload is not a readable skops archive ({type(exc).__name__}: {exc}); "
                          "the file is damaged or was altered. Retrain it or copy it again.") from None
    types: set[str] = set()
    nodes: set[str] = set()
    stack = [schema]
    while stack:  # every dict anywhere counts: a superset of what skops would visit
        node = stack.pop()
        if isinstance(node, dict):
            if "__loader__" in node or "__class__" in node or "__module__" in node:
                nodes.add(str(node.get("__loader__")))
                types.add(f"{node.get('__module__')}.{node.get('__class__')}")
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    if not isinstance(schema, dict) or schema.get("__loader__") != "DictNode":
        nodes.add(f"{schema.get('__loader__') if isinstance(schema, dict) else type(schema).__name__} at the top")
    return types, nodes


def _check_array_header(zf: zipfile.ZipFile, member: zipfile.ZipInfo, path) -> None:
    """Refuse an archive member that is not a plain ``.npy`` array whose header matches its size.

    numpy allocates the shape a header claims before reading the data, and an object array's data
    is a pickle; both are refused here, from the first bytes of the member, before skops reads it.
    """
    with zf.open(member) as fh:
        try:
            major, _ = np.lib.format.read_magic(fh)
            shape, fortran, dtype = (np.lib.format.read_array_header_1_0(fh) if major == 1
                                     else np.lib.format.read_array_header_2_0(fh))
            header_end = fh.tell()
        except (ValueError, SyntaxError, TypeError, OSError, EOFError) as exc:
            raise BundleError(f"{path}: refused: archive member {member.filename!r} is not a plain numpy array "
                              f"({type(exc).__name__}: {exc}); nothing was loaded") from None
    if dtype.hasobject or dtype.fields is not None:
        raise BundleError(f"{path}: refused: archive member {member.filename!r} is an array of Python objects (its "
                          "data would be a pickle); nothing was loaded")
    if math.prod(shape) * dtype.itemsize != member.file_size - header_end:
        raise BundleError(f"{path}: refused: archive member {member.filename!r} claims shape {shape} of {dtype}, "
                          f"which its {member.file_size} bytes do not hold; nothing was loaded")


def check_payload(data, path) -> None:
    from sklearn.pipeline import Pipeline

    ok = (isinstance(data, dict) and set(data) == {"pipeline", "train_sha256", "train_labels"}
          and isinstance(data["pipeline"], Pipeline)
          and all(isinstance(data[k], np.ndarray) and data[k].dtype.kind == "U" and data[k].ndim == 1
                  for k in ("train_sha256", "train_labels"))
          and len(data["train_sha256"]) == len(data["train_labels"]))
    if not ok:
        raise BundleError(f"{path}: the model payload does not hold a fitted pipeline and its training ids; "
                          "the file is damaged or was made elsewhere. Retrain it with `stylesift train`.")


def _estimators(pipeline):
    """Every estimator inside ``pipeline``: its steps, and estimators held in their attributes."""
    from sklearn.base import BaseEstimator

    seen, stack = [], [pipeline]
    while stack:
        est = stack.pop()
        if isinstance(est, BaseEstimator) and all(est is not s for s in seen):
            seen.append(est)
            stack.extend(v for v in vars(est).values() if isinstance(v, BaseEstimator))
            stack.extend(step for _, step in getattr(est, "steps", []) if isinstance(step, BaseEstimator))
    return seen


def brute_neighbors(pipeline):
    """``pipeline``, with any NearestNeighbors that searches a KD or ball tree switched to brute force.

    A tree's arrays are walked by compiled code without bounds checks, so a bundle never carries
    one (trees are refused on load); brute force over the same rows finds the same neighbours.
    """
    import copy

    from sklearn.neighbors import NearestNeighbors

    if not any(isinstance(e, NearestNeighbors) and getattr(e, "_tree", None) is not None for e in _estimators(pipeline)):
        return pipeline
    pipeline = copy.deepcopy(pipeline)
    for est in _estimators(pipeline):
        if isinstance(est, NearestNeighbors) and getattr(est, "_tree", None) is not None:
            est.algorithm, est._fit_method, est._tree = "brute", "brute", None
    return pipeline


def check_state(pipeline, path) -> None:
    """Refuse fitted state that compiled code would read out of bounds.

    Allow-listed types are built from attribute dicts, so their arrays are whatever the file says.
    numpy and Python code check shapes themselves; libsvm (SVC, OneClassSVM) and the neighbour
    search do not, so their arrays must agree with each other before anything is scored.
    """
    from sklearn.neighbors import NearestNeighbors
    from sklearn.svm._base import BaseLibSVM

    def bad(est, what):
        raise BundleError(f"{path}: refused: the fitted {type(est).__name__} in the model is inconsistent ({what}); "
                          "the file was altered or damaged. Nothing was scored; retrain it with `stylesift train`.")

    def array(est, name, kind, ndim):
        value = getattr(est, name, None)
        if not (isinstance(value, np.ndarray) and value.dtype == kind and value.ndim == ndim and value.flags.c_contiguous):
            bad(est, f"{name} must be a C-ordered {ndim}-d {np.dtype(kind).name} array")
        return value

    for est in _estimators(pipeline):
        if isinstance(est, BaseLibSVM):
            sv = array(est, "support_vectors_", np.float64, 2)
            counts = array(est, "_n_support", np.int32, 1)
            support = array(est, "support_", np.int32, 1)
            dual = array(est, "_dual_coef_", np.float64, 2)
            intercept = array(est, "_intercept_", np.float64, 1)
            classes = getattr(est, "_impl", None) in ("c_svc", "nu_svc")  # else one-class: [n, n]
            if getattr(est, "_impl", None) not in ("c_svc", "nu_svc", "one_class", "epsilon_svr", "nu_svr"):
                bad(est, "unknown libsvm type")
            k = len(counts)
            used = counts.sum() if classes else counts[0] if k == 2 else -1
            if k < 2 or (counts < 0).any() or used != len(sv) or len(support) != len(sv):
                bad(est, "support vector counts do not match the support vectors")
            if dual.shape != (k - 1, len(sv)) or len(intercept) != k * (k - 1) // 2:
                bad(est, "dual coefficients or intercepts do not match the support vectors")
            for name in ("_probA", "_probB"):
                if len(array(est, name, np.float64, 1)) not in (0, len(intercept)):
                    bad(est, f"{name} does not match the intercepts")
            if getattr(est, "n_features_in_", len(sv[0]) if len(sv) else 0) != sv.shape[1]:
                bad(est, "support vectors of another width than its input")
            if getattr(est, "kernel", None) not in ("linear", "poly", "rbf", "sigmoid") or getattr(est, "_sparse", None) is not False:
                bad(est, "kernel must be linear, poly, rbf or sigmoid on dense input")
            gamma, degree = getattr(est, "_gamma", None), getattr(est, "degree", None)
            if not (isinstance(gamma, (float, int)) and np.isfinite(gamma) and isinstance(degree, int) and 0 <= degree <= 32):
                bad(est, "kernel parameters")
        elif isinstance(est, NearestNeighbors):
            if getattr(est, "_fit_method", None) != "brute" or getattr(est, "_tree", None) is not None:
                bad(est, "only brute-force neighbour search is loaded")
            array(est, "_fit_X", est._fit_X.dtype if isinstance(getattr(est, "_fit_X", None), np.ndarray) else np.float64, 2)


def check_scores(pipeline, fingerprint: dict, path) -> None:
    """Score one zero row, so that a model with missing or mismatched fitted state is refused at load
    (one message naming the file) rather than failing with a traceback in the middle of a run."""
    width = next((getattr(step, "n_features_in_", None) for _, step in pipeline.steps
                  if getattr(step, "n_features_in_", None) is not None), fingerprint.get("feature_dim"))
    if not isinstance(width, int) or not 0 < width <= 1 << 20:
        raise BundleError(f"{path}: refused: the model does not say how many features it scores; the file was "
                          "altered or made elsewhere. Retrain it with `stylesift train`.")
    try:
        scores = pipeline_scores(pipeline, np.zeros((1, width), np.float32))
        if np.shape(scores) != (1,):
            raise ValueError(f"{np.shape(scores)} scores for one row")
    except Exception as exc:  # noqa: BLE001 - an untrusted file's objects: any failure means it cannot score
        raise BundleError(f"{path}: refused: the model cannot score ({type(exc).__name__}: {exc}); the file was "
                          "altered or damaged. Retrain it with `stylesift train`.") from None
