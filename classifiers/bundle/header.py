"""A bundle's first two lines: the magic line and the JSON header, read and validated without the model.

The header records the payload's size and sha256; they are checked, with the feature-space
fingerprint and the library versions, before anything is built. The checksum catches corrupted,
truncated or spliced files; it is not a signature (whoever can write the file can rewrite the
header), which is why the payload itself must be inert (:mod:`~stylesift.classifiers.bundle.audit`).
"""

from __future__ import annotations

import hashlib
import json
import math
import platform
from pathlib import Path

import numpy as np

from stylesift.errors import StylesiftError
from stylesift.featurizer.backbones.byo import byo_fingerprint_problem, is_byo
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
LAST_CREATED = 253402300799  # 9999-12-31 23:59:59 UTC: what time.localtime can show


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


def read_header(path) -> dict:
    """The bundle's JSON header (method, threshold, labels, fingerprint, versions, summary), loading no model.

    Every field is validated; a format-1 (pickle) bundle is refused with the upgrade command.
    """
    return read_file(Path(path), verify=False)[0]


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


def magic_of(path: Path) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read(len(MAGIC))
    except OSError as exc:
        raise BundleError(f"{path}: cannot read the model bundle ({exc.strerror or exc})") from None


def read_file(path: Path, verify: bool = True) -> tuple[dict, bytes]:
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
    if is_byo(fp) and byo_fingerprint_problem(fp):
        bad("fingerprint", byo_fingerprint_problem(fp))
    if header.get("fingerprint_id") != fingerprint_id(fp):
        bad("fingerprint_id", f"must be the id of the fingerprint ({fingerprint_id(fp)})")
    versions = header.get("versions")
    if not (isinstance(versions, dict) and all(isinstance(v, str) for v in versions.values())
            and isinstance(versions.get("scikit-learn"), str) and isinstance(versions.get("numpy"), str)):
        bad("versions", "must map library names (scikit-learn, numpy, ...) to version strings")
    if not is_number(header.get("created")) or not 0 <= header["created"] <= LAST_CREATED:
        bad("created", "must be a time in seconds since 1970 (before the year 10000)")
    summary = header.get("summary")
    if not isinstance(summary, dict):
        bad("summary", "must be a JSON object")
    feature_set = summary.get("feature_set", "pooled")
    if not isinstance(feature_set, str) or not feature_set:
        bad("summary", "must name its 'feature_set' with a string")
    set_fp = summary.get("feature_set_fingerprint")
    # Only the pooled set may go without its own fingerprint (bundles from before feature sets):
    # any other set's width and recipe come from it.
    if feature_set != "pooled" and not (isinstance(set_fp, dict) and set_fp):
        bad("summary", f"must give the fingerprint of its feature set {feature_set!r} ('feature_set_fingerprint')")
    if set_fp is not None and not isinstance(set_fp, dict):
        bad("summary", "'feature_set_fingerprint' must be a fingerprint (a JSON object) or null")


def json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)
