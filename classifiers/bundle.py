"""The model bundle: one file holding a fitted pipeline, its threshold and everything needed to trust it.

Layout (one file, conventionally ``MODEL.joblib``)::

    stylesift-bundle 1\\n           magic line
    {...}\\n                        header: one line of JSON, readable without unpickling anything
    <joblib bytes>                 payload: {"pipeline", "train_sha256", "train_labels"}

The payload is a pickle, and unpickling runs code. So the header records the payload's size and
sha256, and :meth:`Bundle.load` checks them, the feature-space fingerprint and the library versions
*before* it unpickles. The checksum catches corrupted, truncated or spliced files; it is not a
signature (whoever can write the file can rewrite the header), so bundles must come from a trusted
place, like any pickle.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from stylesift.errors import StylesiftError
from stylesift.featurizer.space import differences, fingerprint_id, same_space

MAGIC = b"stylesift-bundle 1\n"
FORMAT = "stylesift-bundle"
FORMAT_VERSION = 1
MAX_HEADER_BYTES = 64 << 20


class BundleError(StylesiftError, RuntimeError):
    """A bundle cannot be used; the message names the file, what is wrong and what to do."""


def current_versions() -> dict:
    """Versions of the libraries whose pickles a bundle holds."""
    from importlib.metadata import PackageNotFoundError, version

    import joblib
    import sklearn

    try:
        own = version("stylesift")
    except PackageNotFoundError:
        own = "unknown"
    return {"stylesift": own, "scikit-learn": sklearn.__version__, "numpy": np.__version__,
            "joblib": joblib.__version__, "python": platform.python_version()}


@dataclass
class Bundle:
    """A fitted model ready to score feature vectors.

    Parameters
    ----------
    pipeline : sklearn Pipeline
        Fitted; ``pipeline.decision_function(X)`` gives scores, higher = more like the positives.
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
        return np.asarray(self.pipeline.decision_function(X), dtype=float)

    def header(self, payload: bytes) -> dict:
        return {"format": FORMAT, "format_version": FORMAT_VERSION,
                "payload_sha256": hashlib.sha256(payload).hexdigest(), "payload_bytes": len(payload),
                "method": self.method, "threshold": float(self.threshold),
                "labels": {"positive": self.positive_label, "negative": self.negative_label},
                "fingerprint": self.fingerprint, "fingerprint_id": self.fingerprint_id,
                "versions": self.versions, "created": self.created, "summary": self.summary}

    def save(self, path) -> Path:
        """Write the bundle to ``path`` atomically (temp file, fsync, rename); returns the path."""
        import joblib

        path = Path(path)
        buf = io.BytesIO()
        joblib.dump({"pipeline": self.pipeline, "train_sha256": np.asarray(self.train_sha256, dtype=str),
                     "train_labels": np.asarray(self.train_labels, dtype=str)}, buf, compress=3)
        payload = buf.getvalue()
        header = json.dumps(self.header(payload), default=_json_default, separators=(",", ":")).encode()
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
            raise BundleError(f"{path}: cannot write the model bundle ({exc})") from exc
        return path

    @classmethod
    def load(cls, path, *, fingerprint: dict | None = None, check_versions: bool = True) -> "Bundle":
        """Read, verify and only then unpickle a bundle.

        Parameters
        ----------
        path : path
        fingerprint : dict, optional
            Feature-space fingerprint the bundle will score (a store's or a featurizer's); a
            different one is a :class:`BundleError`, raised before unpickling.
        check_versions : bool
            Refuse a bundle pickled by another scikit-learn version or numpy major version
            (pickles do not travel between them reliably).
        """
        import joblib

        path = Path(path)
        header, payload = _read(path)
        if fingerprint is not None:
            check_fingerprint(header, fingerprint, path)
        if check_versions:
            check_versions_match(header, path)
        data = joblib.load(io.BytesIO(payload))
        labels = header["labels"]
        return cls(pipeline=data["pipeline"], threshold=float(header["threshold"]), method=header["method"],
                   positive_label=labels["positive"], negative_label=labels.get("negative"),
                   fingerprint=header["fingerprint"], summary=header.get("summary", {}),
                   train_sha256=data["train_sha256"], train_labels=data["train_labels"],
                   versions=header["versions"], created=header.get("created", 0.0))


def read_header(path) -> dict:
    """The bundle's JSON header (method, threshold, labels, fingerprint, versions, summary), unpickling nothing."""
    return _read(Path(path), verify=False)[0]


def check_fingerprint(header: dict, fingerprint: dict, path) -> None:
    """Raise :class:`BundleError` unless ``fingerprint`` is the feature space the bundle was trained in."""
    if same_space(header["fingerprint"], fingerprint):
        return
    diff = differences(header["fingerprint"], fingerprint)
    raise BundleError(f"{path}: trained on features of another feature space than the one scoring now; "
                      f"differences (bundle, now): {diff}. Score with the weights and store the model was "
                      "trained with, or retrain it from a store built by this featurizer (`stylesift train`).")


def check_versions_match(header: dict, path) -> None:
    """Raise :class:`BundleError` if the pickle's scikit-learn version or numpy major version differs from ours."""
    saved, now = header.get("versions", {}), current_versions()
    problems = []
    if saved.get("scikit-learn") != now["scikit-learn"]:
        problems.append(f"scikit-learn {saved.get('scikit-learn')} (now {now['scikit-learn']})")
    if str(saved.get("numpy", "")).split(".")[0] != now["numpy"].split(".")[0]:
        problems.append(f"numpy {saved.get('numpy')} (now {now['numpy']})")
    if problems:
        raise BundleError(f"{path}: pickled with {', '.join(problems)}; such pickles may load wrongly. "
                          "Retrain it here with `stylesift train`, or install the versions it was made with.")


def _read(path: Path, verify: bool = True) -> tuple[dict, bytes]:
    try:
        with open(path, "rb") as fh:
            magic = fh.read(len(MAGIC))
            if magic != MAGIC:
                raise BundleError(f"{path}: not a stylesift model bundle (it does not start with {MAGIC.strip().decode()!r}); "
                                  "make one with `stylesift train`")
            line = fh.readline(MAX_HEADER_BYTES)
            payload = fh.read() if verify else b""
    except OSError as exc:
        raise BundleError(f"{path}: cannot read the model bundle ({exc.strerror or exc})") from None
    try:
        header = json.loads(line)
        if header.get("format") != FORMAT or not line.endswith(b"\n"):
            raise ValueError
    except ValueError:
        raise BundleError(f"{path}: the bundle header is damaged; retrain the model or copy the file again") from None
    if int(header.get("format_version", 0)) > FORMAT_VERSION:
        raise BundleError(f"{path}: bundle format {header['format_version']} is newer than this stylesift; upgrade stylesift")
    if verify:
        if len(payload) != header["payload_bytes"] or hashlib.sha256(payload).hexdigest() != header["payload_sha256"]:
            raise BundleError(f"{path}: the model payload does not match the checksum in its header "
                              f"(expected {header['payload_bytes']} bytes with sha256 {header['payload_sha256'][:16]}…, "
                              f"found {len(payload)} bytes); the file is damaged or was altered. Nothing was unpickled; "
                              "copy it again from a trusted place or retrain it.")
    return header, payload


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)
