"""Model bundle files written by hand: format-1 (pickle) bundles, raw headers, and hostile payloads."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import joblib
import numpy as np
import skops.io

from stylesift.classifiers.bundle import LEGACY_MAGIC, MAGIC, Bundle

FINGERPRINT = {"backbone": "test", "weights_sha256": "0" * 64, "feature_dim": 16, "dtype": "float32"}


class Marker:
    """Building one (skops calls ``__setstate__``) or unpickling one (``__reduce__``) writes its file."""

    def __init__(self, path):
        self.path = str(path)

    def __setstate__(self, state):
        Path(state["path"]).write_text("code ran")

    def __reduce__(self):
        return (open, (self.path, "w"))


def make_bundle(fitted, fingerprint=FINGERPRINT) -> Bundle:
    """A :class:`Bundle` of ``fitted = (model, X, y)``."""
    model, X, y = fitted
    sha = np.array([f"{i:064x}" for i in range(len(X))])
    return Bundle(pipeline=model.pipeline_, threshold=model.threshold_, method="head", positive_label="good",
                  negative_label="ordinary", fingerprint=fingerprint, summary={"positives": int(y.sum())},
                  train_sha256=sha, train_labels=np.where(y, "good", "ordinary"))


def write_raw(path, header, payload: bytes, magic: bytes = MAGIC) -> None:
    path.write_bytes(magic + json.dumps(header).encode() + b"\n" + payload)


def write_legacy(path, fitted, payload_obj=None) -> None:
    """A format-1 bundle as stylesift 0.2 wrote it: the JSON header, then a joblib pickle."""
    model, X, y = fitted
    buf = io.BytesIO()
    joblib.dump(payload_obj if payload_obj is not None else
                {"pipeline": model.pipeline_, "train_sha256": np.array([f"{i:064x}" for i in range(len(X))]),
                 "train_labels": np.where(y, "good", "ordinary")}, buf, compress=3)
    payload = buf.getvalue()
    header = make_bundle(fitted).header(payload)
    header.update(format_version=1, versions={**header["versions"], "joblib": joblib.__version__})
    del header["payload_format"]
    write_raw(path, header, payload, LEGACY_MAGIC)


def payload_of(pipeline, extra=None, fingerprint=FINGERPRINT) -> tuple[dict, bytes]:
    """A header and a skops payload of ``pipeline`` plus the ``extra`` entries."""
    data = {"pipeline": pipeline, "train_sha256": np.array(["0" * 64]), "train_labels": np.array(["good"])}
    if extra is not None:
        data.update(extra)
    payload = skops.io.dumps(data)
    header = Bundle(pipeline, 0.0, "head", "good", "ordinary", fingerprint).header(payload)
    return header, payload


def write(path, header: dict, payload: bytes) -> Path:
    """A bundle whose header checksum and size match ``payload``: the attacker rewrote them."""
    header = {**header, "payload_sha256": hashlib.sha256(payload).hexdigest(), "payload_bytes": len(payload)}
    path.write_bytes(MAGIC + json.dumps(header).encode() + b"\n" + payload)
    return path
