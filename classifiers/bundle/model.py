"""The :class:`Bundle`: a fitted pipeline, its threshold and training ids, saved to and loaded from one file."""

from __future__ import annotations

import hashlib
import json
import math
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from stylesift.atomic import atomic_write
from stylesift.classifiers.base import pipeline_scores
from stylesift.classifiers.bundle.audit import (
    allowed_types,
    brute_neighbors,
    check_payload,
    check_scores,
    check_state,
    schema_types,
    untrusted_types,
)
from stylesift.classifiers.bundle.header import (
    FORMAT,
    FORMAT_VERSION,
    MAGIC,
    BundleError,
    check_fingerprint,
    check_versions_match,
    current_versions,
    json_default,
    read_file,
)
from stylesift.featurizer.space import fingerprint_id

# Payloads up to this size (uncompressed) are deflated at level 1; larger ones are stored as they are.
# Why: a large payload is float arrays (stored positives, support vectors), which barely compress:
# a nearest-positives model's 5,000 positives are 41.6 MB stored and 33.3 MB deflated, for 1.2 s of
# a 7 s `train`. Smaller ones are mostly the training rows' hex ids and labels, which deflate 2-4x
# in at most 0.25 s (docs/benchmarks.md, 2026-12-07).
DEFLATE_UP_TO = 16 << 20


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
        content = {"pipeline": brute_neighbors(self.pipeline), "train_sha256": np.asarray(self.train_sha256, dtype=str),
                   "train_labels": np.asarray(self.train_labels, dtype=str)}
        payload = skops.io.dumps(content)
        if len(payload) <= DEFLATE_UP_TO:
            payload = skops.io.dumps(content, compression=zipfile.ZIP_DEFLATED, compresslevel=1)
        refused = untrusted_types(payload, path)
        if refused:
            raise BundleError(f"{path}: the model holds types outside the bundle allow-list ({', '.join(refused)}); "
                              "it could not be loaded again, so it was not written. This is a bug in stylesift.")
        if not math.isfinite(float(self.threshold)):
            raise BundleError(f"{path}: the model's threshold is {self.threshold}; a bundle needs a finite threshold")
        header = json.dumps(self.header(payload), default=json_default, separators=(",", ":"),
                            allow_nan=False).encode()
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with atomic_write(path) as fh:
                fh.write(MAGIC + header + b"\n" + payload)
        except OSError as exc:
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
        header, payload = read_file(path)
        if fingerprint is not None:
            check_fingerprint(header, fingerprint, path)
        if check_versions:
            check_versions_match(header, path)
        refused = untrusted_types(payload, path)
        if refused:
            raise BundleError(f"{path}: refused: the model would build types outside stylesift's allow-list: "
                              f"{', '.join(refused)}. Nothing was loaded. A bundle written by `stylesift train` "
                              "holds none; this file was altered or made elsewhere.")
        schema_types(payload, path, arrays=True)
        try:
            data = skops.io.loads(payload, trusted=sorted(allowed_types()))
        except Exception as exc:  # noqa: BLE001 - an untrusted file; any failure is a damaged bundle
            raise BundleError(f"{path}: the model payload cannot be read ({type(exc).__name__}: {exc}); "
                              "the file is damaged or was altered. Retrain it or copy it again.") from None
        check_payload(data, path)
        check_state(data["pipeline"], path)
        check_scores(data["pipeline"], header["fingerprint"], path)
        labels = header["labels"]
        return cls(pipeline=data["pipeline"], threshold=float(header["threshold"]), method=header["method"],
                   positive_label=labels["positive"], negative_label=labels.get("negative"),
                   fingerprint=header["fingerprint"], summary=header["summary"],
                   train_sha256=data["train_sha256"], train_labels=data["train_labels"],
                   versions=header["versions"], created=header["created"])
