"""The model bundle: one file holding a fitted pipeline, its threshold and everything needed to trust it.

Layout (one file, conventionally ``MODEL.ssmodel``)::

    stylesift-bundle 2\\n           magic line
    {...}\\n                        header: one line of JSON, readable without loading the model
    <skops zip>                    payload: {"pipeline", "train_sha256", "train_labels"}

The payload is a `skops <https://skops.readthedocs.io>`_ file: a zip of one JSON schema and plain
``.npy`` arrays (read with ``allow_pickle=False``). Nothing in it is a pickle, and every object it
would build is named in the schema, so :meth:`Bundle.load` reads the schema first and refuses the
file, naming the offenders, unless every type is on the allow-list (``_allowed_types()``: exactly the
types the methods need) and every node kind on :data:`ALLOWED_NODES`; only then does skops build the objects,
audited again against the same list. Loading a bundle therefore runs no code chosen by the file.

The header records the payload's size and sha256; they are checked, with the feature-space
fingerprint and the library versions, before anything is built. The checksum catches corrupted,
truncated or spliced files; it is not a signature (whoever can write the file can rewrite the
header), which is why the payload itself must be inert.

Format 1 (``stylesift-bundle 1``, stylesift 0.1) held a joblib pickle. It is refused
everywhere except :func:`upgrade` (``stylesift model upgrade OLD NEW --trust-pickle``), which the
user runs knowingly on a file from a source they trust.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import platform
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from stylesift.classifiers.base import pipeline_scores
from stylesift.errors import StylesiftError
from stylesift.featurizer.space import differences, fingerprint_id, same_space

MAGIC = b"stylesift-bundle 2\n"
LEGACY_MAGIC = b"stylesift-bundle 1\n"  # format 1: a joblib pickle payload
FORMAT = "stylesift-bundle"
FORMAT_VERSION = 2
EXTENSION = ".ssmodel"
MAX_HEADER_BYTES = 64 << 20
MAX_PAYLOAD_BYTES = 4 << 30  # on disk, and again for the arrays unpacked from it
MAX_SCHEMA_BYTES = 64 << 20
UPGRADE_COMMAND = "stylesift model upgrade OLD NEW --trust-pickle"

# The node kinds of a skops schema a bundle may use: containers, JSON scalars, plain arrays, numpy
# scalar types and objects rebuilt from their attribute dict. Function, method, partial, reduce and
# operator nodes (the ones that call something by name) are refused outright.
ALLOWED_NODES = frozenset({"ObjectNode", "DictNode", "ListNode", "TupleNode", "JsonNode", "NdArrayNode", "TypeNode",
                           "CachedNode"})


def _allowed_types() -> frozenset[str]:
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


class BundleError(StylesiftError, RuntimeError):
    """A bundle cannot be used; the message names the file, what is wrong and what to do."""


def current_versions() -> dict:
    """Versions of the libraries whose objects a bundle holds."""
    from importlib.metadata import PackageNotFoundError, version

    import sklearn
    import skops

    try:
        own = version("stylesift")
    except PackageNotFoundError:
        own = "unknown"
    return {"stylesift": own, "scikit-learn": sklearn.__version__, "numpy": np.__version__,
            "skops": skops.__version__, "python": platform.python_version()}


@dataclass
class Bundle:
    """A fitted model ready to score feature vectors.

    Parameters
    ----------
    pipeline : sklearn Pipeline
        Fitted; :func:`~stylesift.classifiers.base.pipeline_scores` gives its scores, higher = more
        like the positives.
    threshold : float
        Scores at or above it are selected.
    method : str
        Name of the method that made it (see :data:`classifiers.methods.METHODS`).
    positive_label, negative_label : str, str or None
        Store labels it was trained on.
    fingerprint : dict
        Feature-space fingerprint of the store the features came from.
    summary : dict
        JSON-able training summary: counts, chosen parameters, CV metrics, notes.
    train_sha256 : ndarray of str, shape (n_train,)
        Store ids (content sha256) of the training rows, in training order.
    train_labels : ndarray of str, shape (n_train,)
        Their store labels.
    versions : dict
        Library versions at training time.
    """

    pipeline: object
    threshold: float
    method: str
    positive_label: str
    negative_label: str | None
    fingerprint: dict
    summary: dict = field(default_factory=dict)
    train_sha256: np.ndarray = field(default_factory=lambda: np.array([], dtype=str))
    train_labels: np.ndarray = field(default_factory=lambda: np.array([], dtype=str))
    versions: dict = field(default_factory=current_versions)
    created: float = field(default_factory=time.time)

    @property
    def fingerprint_id(self) -> str:
        return fingerprint_id(self.fingerprint)

    def score(self, X) -> np.ndarray:
        """Scores of feature rows ``X`` of shape ``(n, d)``: float array of shape ``(n,)``."""
        X = np.asarray(X, dtype=np.float32)
        if len(X) == 0:
            return np.zeros(0)
        return pipeline_scores(self.pipeline, X)

    def header(self, payload: bytes) -> dict:
        return {"format": FORMAT, "format_version": FORMAT_VERSION, "payload_format": "skops",
                "payload_sha256": hashlib.sha256(payload).hexdigest(), "payload_bytes": len(payload),
                "method": self.method, "threshold": float(self.threshold),
                "labels": {"positive": self.positive_label, "negative": self.negative_label},
                "fingerprint": self.fingerprint, "fingerprint_id": self.fingerprint_id,
                "versions": self.versions, "created": self.created, "summary": self.summary}

    def save(self, path) -> Path:
        """Write the bundle to ``path`` atomically (temp file, fsync, rename); returns the path.

        The payload is audited exactly as :meth:`load` will audit it, so a bundle that could not be
        loaded again is never written.
        """
        import skops.io

        path = Path(path)
        payload = skops.io.dumps({"pipeline": _brute_neighbors(self.pipeline),
                                  "train_sha256": np.asarray(self.train_sha256, dtype=str),
                                  "train_labels": np.asarray(self.train_labels, dtype=str)},
                                 compression=zipfile.ZIP_DEFLATED, compresslevel=6)
        refused = untrusted_types(payload, path)
        if refused:
            raise BundleError(f"{path}: the model holds types outside the bundle allow-list ({', '.join(refused)}); "
                              "it could not be loaded again, so it was not written. This is a bug in stylesift.")
        if not math.isfinite(float(self.threshold)):
            raise BundleError(f"{path}: the model's threshold is {self.threshold}; a bundle needs a finite threshold")
        header = json.dumps(self.header(payload), default=_json_default, separators=(",", ":"),
                            allow_nan=False).encode()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            with open(tmp, "wb") as fh:
                fh.write(MAGIC + header + b"\n" + payload)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise BundleError(f"{path}: cannot write the model bundle ({exc.strerror or exc})") from exc
        return path

    @classmethod
    def load(cls, path, *, fingerprint: dict | None = None, check_versions: bool = True) -> "Bundle":
        """Read and verify a bundle, audit its payload's types, and only then build the model.

        Parameters
        ----------
        path : path
        fingerprint : dict, optional
            Feature-space fingerprint the bundle will score (a store's or a featurizer's); a
            different one is a :class:`BundleError`, raised before anything is built.
        check_versions : bool
            Refuse a bundle saved by another scikit-learn version or numpy major version (fitted
            estimators' attributes do not travel between them reliably).

        Raises
        ------
        BundleError
            Not a bundle, a format-1 (pickle) bundle, a damaged or edited file, a type outside the
            allow-list, inconsistent fitted state, another feature space or other library versions.
        """
        import skops.io

        path = Path(path)
        header, payload = _read(path)
        if fingerprint is not None:
            check_fingerprint(header, fingerprint, path)
        if check_versions:
            check_versions_match(header, path)
        refused = untrusted_types(payload, path)
        if refused:
            raise BundleError(f"{path}: refused: the model would build types outside stylesift's allow-list: "
                              f"{', '.join(refused)}. Nothing was loaded. A bundle written by `stylesift train` "
                              "holds none; this file was altered or made elsewhere.")
        _schema_types(payload, path, arrays=True)
        try:
            data = skops.io.loads(payload, trusted=sorted(_allowed_types()))
        except Exception as exc:  # noqa: BLE001 - an untrusted file; any failure is a damaged bundle
            raise BundleError(f"{path}: the model payload cannot be read ({type(exc).__name__}: {exc}); "
                              "the file is damaged or was altered. Retrain it or copy it again.") from None
        _check_payload(data, path)
        _check_state(data["pipeline"], path)
        _check_scores(data["pipeline"], header["fingerprint"], path)
        labels = header["labels"]
        return cls(pipeline=data["pipeline"], threshold=float(header["threshold"]), method=header["method"],
                   positive_label=labels["positive"], negative_label=labels.get("negative"),
                   fingerprint=header["fingerprint"], summary=header["summary"],
                   train_sha256=data["train_sha256"], train_labels=data["train_labels"],
                   versions=header["versions"], created=header["created"])


def read_header(path) -> dict:
    """The bundle's JSON header (method, threshold, labels, fingerprint, versions, summary), loading no model.

    Every field is validated; a format-1 (pickle) bundle is refused with the upgrade command.
    """
    return _read(Path(path), verify=False)[0]


def inspect(path) -> dict:
    """What ``stylesift model info`` shows: the header, the file's size, whether its checksum holds
    and which types the payload would build (read from its schema; nothing is built).

    A format-1 bundle gives its header with ``"format_version": 1`` and ``"needs_upgrade"``;
    nothing of its pickle is read.
    """
    path = Path(path)
    if _magic(path) == LEGACY_MAGIC:
        return {"file": str(path), "bytes": path.stat().st_size, "format_version": 1,
                "needs_upgrade": UPGRADE_COMMAND, "header": _legacy_header(path)}
    header = read_header(path)
    try:
        payload = _read(path)[1]
    except BundleError:
        return {"file": str(path), "bytes": path.stat().st_size, "format_version": FORMAT_VERSION,
                "checksum_ok": False, "types": [], "refused_types": [], "header": header}
    return {"file": str(path), "bytes": path.stat().st_size, "format_version": FORMAT_VERSION, "checksum_ok": True,
            "types": sorted(_schema_types(payload, path)[0]), "refused_types": untrusted_types(payload, path),
            "header": header}


def untrusted_types(payload: bytes, path) -> list[str]:
    """Types and node kinds in the skops ``payload`` that are not on the allow-lists, sorted (empty: safe).

    Reads the zip's ``schema.json`` only; builds nothing and imports nothing the file names.
    """
    types, nodes = _schema_types(payload, path)
    return sorted((types - _allowed_types()) | {f"node kind {n}" for n in nodes - ALLOWED_NODES})


def check_fingerprint(header: dict, fingerprint: dict, path) -> None:
    """Raise :class:`BundleError` unless ``fingerprint`` is the feature space the bundle was trained in."""
    if same_space(header["fingerprint"], fingerprint):
        return
    diff = differences(header["fingerprint"], fingerprint)
    raise BundleError(f"{path}: trained on features of another feature space than the one scoring now; "
                      f"differences (bundle, now): {diff}. Score with the weights and store the model was "
                      "trained with, or retrain it from a store built by this featurizer (`stylesift train`).")


def precision_of(fingerprint: dict, path="model bundle") -> str:
    """The backbone precision a bundle's features came from (``"float32"`` when the fingerprint names none)."""
    from stylesift.featurizer.space import PRECISIONS

    precision = fingerprint.get("precision", "float32")
    if precision not in PRECISIONS:
        raise BundleError(f"{path}: trained on {precision!r} features, which this stylesift cannot compute "
                          f"(it has {', '.join(PRECISIONS)}); upgrade stylesift or retrain the model")
    return precision


def check_versions_match(header: dict, path) -> None:
    """Raise :class:`BundleError` if the bundle's scikit-learn version or numpy major version differs from ours."""
    saved, now = header.get("versions", {}), current_versions()
    problems = []
    if saved.get("scikit-learn") != now["scikit-learn"]:
        problems.append(f"scikit-learn {saved.get('scikit-learn')} (now {now['scikit-learn']})")
    if str(saved.get("numpy", "")).split(".")[0] != now["numpy"].split(".")[0]:
        problems.append(f"numpy {saved.get('numpy')} (now {now['numpy']})")
    if problems:
        raise BundleError(f"{path}: saved with {', '.join(problems)}; fitted estimators may load wrongly across "
                          "versions. Retrain it here with `stylesift train`, or install the versions it was made with.")


def upgrade(old, new, *, trust_pickle: bool = False) -> Path:
    """Convert a format-1 bundle (a joblib pickle) at ``old`` into a format-2 bundle at ``new``.

    Unpickling runs whatever code the file holds, so it happens only here and only with
    ``trust_pickle=True``: the caller vouches for where ``old`` came from. The header checksum
    and versions are checked first; the converted model must pass the allow-list of format 2.
    """
    old, new = Path(old), Path(new)
    if not trust_pickle:
        raise BundleError(f"{old}: converting a format-1 bundle unpickles it, which runs any code it holds; "
                          "pass --trust-pickle only if you trust where the file came from")
    if _magic(old) != LEGACY_MAGIC:
        _read(old, verify=False)  # a damaged file or a non-bundle gets its own message
        raise BundleError(f"{old}: already a format-{FORMAT_VERSION} bundle; nothing to upgrade")
    if new.resolve() == old.resolve():
        raise BundleError(f"{new}: write the upgraded bundle to a new file; the old one is kept until you delete it")
    import joblib

    header, payload = _legacy_read(old)
    check_versions_match(header, old)
    try:
        data = joblib.load(io.BytesIO(payload))
        pipeline, sha, labels = data["pipeline"], data["train_sha256"], data["train_labels"]
    except Exception as exc:  # noqa: BLE001 - the old file's pickle is damaged
        raise BundleError(f"{old}: its pickle cannot be read ({type(exc).__name__}: {exc}); retrain the model") from None
    bundle = Bundle(pipeline=pipeline, threshold=header["threshold"], method=header["method"],
                    positive_label=header["labels"]["positive"], negative_label=header["labels"].get("negative"),
                    fingerprint=header["fingerprint"],
                    summary=header["summary"] if isinstance(header.get("summary"), dict) else {},
                    train_sha256=sha, train_labels=labels, versions=current_versions(),
                    created=header.get("created", time.time()))
    bundle.summary = {**bundle.summary, "upgraded_from": {"file": str(old), "versions": header.get("versions")}}
    if not isinstance(bundle.created, (int, float)) or isinstance(bundle.created, bool):
        bundle.created = time.time()
    bundle.save(new)
    try:
        Bundle.load(new)  # what was written must load: the same checks as every later use
    except BundleError:
        new.unlink(missing_ok=True)
        raise
    return new


# ---------------------------------------------------------------------------------------------- reading


def _magic(path: Path) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read(len(MAGIC))
    except OSError as exc:
        raise BundleError(f"{path}: cannot read the model bundle ({exc.strerror or exc})") from None


def _read(path: Path, verify: bool = True) -> tuple[dict, bytes]:
    try:
        with open(path, "rb") as fh:
            magic = fh.read(len(MAGIC))
            if magic == LEGACY_MAGIC:
                raise BundleError(f"{path}: a format-1 model bundle (stylesift 0.1), which holds a pickle "
                                  "that could run code when loaded; it is not loaded. If you trust where it came "
                                  f"from, convert it once with `{UPGRADE_COMMAND}` and use NEW.")
            if magic != MAGIC:
                raise BundleError(f"{path}: not a stylesift model bundle (it does not start with {MAGIC.strip().decode()!r}); "
                                  "make one with `stylesift train`")
            line = fh.readline(MAX_HEADER_BYTES)
            payload = fh.read(MAX_PAYLOAD_BYTES + 1) if verify else b""
    except IsADirectoryError:
        raise BundleError(f"{path}: is a directory, not a model bundle") from None
    except OSError as exc:
        raise BundleError(f"{path}: cannot read the model bundle ({exc.strerror or exc})") from None
    if not line.endswith(b"\n"):
        raise BundleError(f"{path}: the bundle header is damaged (no end of line within {MAX_HEADER_BYTES >> 20} MiB); "
                          "retrain the model or copy the file again")
    try:
        header = json.loads(line)
    except (ValueError, RecursionError) as exc:
        raise BundleError(f"{path}: the bundle header is damaged (not JSON: {exc}); retrain the model or copy the file again") from None
    validate_header(header, path)
    if verify:
        if len(payload) != header["payload_bytes"] or hashlib.sha256(payload).hexdigest() != header["payload_sha256"]:
            raise BundleError(f"{path}: the model payload does not match the checksum in its header "
                              f"(expected {header['payload_bytes']} bytes with sha256 {header['payload_sha256'][:16]}…, "
                              f"found {len(payload)} bytes); the file is damaged or was altered. Nothing was loaded; "
                              "copy it again from a trusted place or retrain it.")
    return header, payload


def validate_header(header, path) -> None:
    """Raise one :class:`BundleError` naming ``path`` and the first header field that is missing or wrong."""
    if not isinstance(header, dict):
        raise BundleError(f"{path}: the bundle header is damaged (a JSON {type(header).__name__}, not an object); "
                          "retrain the model or copy the file again")

    def bad(name: str, problem: str):
        value = header.get(name, None)
        shown = "missing" if name not in header else f"{json.dumps(value)[:80]}"
        raise BundleError(f"{path}: bundle header field {name!r} {problem} (found: {shown}); the file is damaged "
                          "or was edited. Copy it again from where it came from, or retrain it with `stylesift train`.")

    def is_int(v) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    def is_number(v) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

    if header.get("format") != FORMAT:
        bad("format", f"must be {FORMAT!r}")
    version = header.get("format_version")
    if not is_int(version):
        bad("format_version", "must be an integer")
    if version > FORMAT_VERSION:
        raise BundleError(f"{path}: bundle format {version} is newer than this stylesift (format {FORMAT_VERSION}); "
                          "upgrade stylesift")
    if version != FORMAT_VERSION:
        bad("format_version", f"must be {FORMAT_VERSION} after the magic line {MAGIC.strip().decode()!r}")
    if header.get("payload_format") != "skops":
        bad("payload_format", "must be 'skops'")
    sha = header.get("payload_sha256")
    if not (isinstance(sha, str) and len(sha) == 64 and all(c in "0123456789abcdef" for c in sha)):
        bad("payload_sha256", "must be 64 lowercase hex digits")
    if not is_int(header.get("payload_bytes")) or not 0 < header["payload_bytes"] <= MAX_PAYLOAD_BYTES:
        bad("payload_bytes", f"must be a whole number of bytes between 1 and {MAX_PAYLOAD_BYTES}")
    if not isinstance(header.get("method"), str) or not header["method"]:
        bad("method", "must be a method name")
    if not is_number(header.get("threshold")):
        bad("threshold", "must be a finite number")
    labels = header.get("labels")
    if not (isinstance(labels, dict) and isinstance(labels.get("positive"), str) and labels["positive"]
            and isinstance(labels.get("negative"), (str, type(None))) and set(labels) <= {"positive", "negative"}):
        bad("labels", 'must be {"positive": LABEL, "negative": LABEL or null}')
    fp = header.get("fingerprint")
    if not isinstance(fp, dict) or not fp:
        bad("fingerprint", "must be a feature-space fingerprint (a JSON object)")
    if header.get("fingerprint_id") != fingerprint_id(fp):
        bad("fingerprint_id", f"must be the id of the fingerprint ({fingerprint_id(fp)})")
    versions = header.get("versions")
    if not (isinstance(versions, dict) and all(isinstance(v, str) for v in versions.values())
            and isinstance(versions.get("scikit-learn"), str) and isinstance(versions.get("numpy"), str)):
        bad("versions", "must map library names (scikit-learn, numpy, ...) to version strings")
    if not is_number(header.get("created")):
        bad("created", "must be a time in seconds since 1970")
    if not isinstance(header.get("summary"), dict):
        bad("summary", "must be a JSON object")


def _schema_types(payload: bytes, path, arrays: bool = False) -> tuple[set[str], set[str]]:
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


def _check_payload(data, path) -> None:
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


def _brute_neighbors(pipeline):
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


def _check_state(pipeline, path) -> None:
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


def _check_scores(pipeline, fingerprint: dict, path) -> None:
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


def _legacy_read(path: Path) -> tuple[dict, bytes]:
    """Header and pickle bytes of a format-1 bundle, checksum verified; unpickles nothing."""
    with open(path, "rb") as fh:
        fh.read(len(LEGACY_MAGIC))
        line = fh.readline(MAX_HEADER_BYTES)
        payload = fh.read(MAX_PAYLOAD_BYTES + 1)
    header = _legacy_parse(line, path)
    if len(payload) != header["payload_bytes"] or hashlib.sha256(payload).hexdigest() != header["payload_sha256"]:
        raise BundleError(f"{path}: the pickle does not match the checksum in its header; the file is damaged or "
                          "was altered. Nothing was unpickled.")
    return header, payload


def _legacy_header(path: Path) -> dict:
    with open(path, "rb") as fh:
        fh.read(len(LEGACY_MAGIC))
        return _legacy_parse(fh.readline(MAX_HEADER_BYTES), path)


def _legacy_parse(line: bytes, path: Path) -> dict:
    try:
        header = json.loads(line)
    except (ValueError, RecursionError):
        header = None
    required = {"payload_sha256": str, "payload_bytes": int, "method": str, "threshold": (int, float),
                "labels": dict, "fingerprint": dict, "versions": dict}
    if not isinstance(header, dict):
        raise BundleError(f"{path}: the format-1 bundle header is damaged; retrain the model")
    for name, kind in required.items():
        if not isinstance(header.get(name), kind) or isinstance(header.get(name), bool):
            raise BundleError(f"{path}: format-1 bundle header field {name!r} is missing or of the wrong type; "
                              "retrain the model")
    if not isinstance(header["labels"].get("positive"), str):
        raise BundleError(f"{path}: format-1 bundle header field 'labels' has no positive label; retrain the model")
    return header


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)
