"""Format 1 (``stylesift-bundle 1``, stylesift 0.1): a joblib pickle, read only to convert it.

It is refused everywhere except :func:`upgrade` (``stylesift model upgrade OLD NEW --trust-pickle``),
which the user runs knowingly on a file from a source they trust.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from pathlib import Path

from stylesift.classifiers.bundle.header import (
    FORMAT_VERSION,
    LEGACY_MAGIC,
    MAX_HEADER_BYTES,
    MAX_PAYLOAD_BYTES,
    BundleError,
    check_versions_match,
    current_versions,
    magic_of,
    read_file,
)
from stylesift.classifiers.bundle.model import Bundle


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
    if magic_of(old) != LEGACY_MAGIC:
        read_file(old, verify=False)  # a damaged file or a non-bundle gets its own message
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


def legacy_header(path: Path) -> dict:
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
