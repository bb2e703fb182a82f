"""The model in use, swapped without downtime: reloads and the watch of the review loop's numbered models.

A request takes :attr:`ModelSlot.current` once and scores all its images with that model, so a swap
happens between requests and never inside one. The features do not depend on the model: a model is
only ever swapped for one of the same feature space (the featurizer's fingerprint, and the feature
set it computes), so the network, the batches in flight and the store stay as they are. A model of
another space is refused (409, the reason names the differences) and the old one stays in use; so
does a model file that cannot be loaded (422).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from stylesift.classifiers.bundle import Bundle, BundleError, check_fingerprint, read_header
from stylesift.classifiers.feature_sets import FeatureSetError, bundle_set, check_set, stored_parts
from stylesift.classifiers.predict import Predictor
from stylesift.featurizer.space import same_space
from stylesift.review.retrain import numbered_models, series_number
from stylesift.review.serve.errors import ServeError

log = logging.getLogger("stylesift.serve")


def serving_sets(featurizer) -> tuple[str, ...]:
    """The feature sets the service computes with ``featurizer``: all of its sets, ``detail`` included (from each
    upload's native-resolution tiles, see :mod:`stylesift.review.serve.service`)."""
    return tuple(featurizer.feature_sets)


@dataclass(frozen=True)
class LoadedModel:
    """One loaded model: the bundle, its file and header, and its place in the slot's history."""

    bundle: Bundle
    path: Path
    header: dict
    version: int  # 1 for the model the server started with, one more for each swap
    loaded_at: float

    def info(self) -> dict:
        """What ``GET /model`` answers: ``{"file", "version", "loaded_at", "header"}`` (the header as ``model info`` shows it)."""
        return {"file": str(self.path), "version": self.version, "loaded_at": self.loaded_at, "header": self.header}


class ModelSlot:
    """The model a scoring service uses now, and the checks a replacement must pass.

    Parameters
    ----------
    model : path
        The model file the server was started with (``POST /reload`` without a path loads it again;
        ``--watch-model`` follows its numbered series).
    featurizer : Featurizer
        What computes the features; every model must be of its feature space.
    store : path, optional
        The service's feature store; a model must be of its feature space too.
    bundle : Bundle, optional
        ``model`` already loaded and checked (else it is loaded here).
    """

    def __init__(self, model, featurizer, store=None, *, bundle: Bundle | None = None):
        self.model = Path(model)
        self.featurizer = featurizer
        self.store = None if store is None else Path(store)
        self._lock = threading.Lock()
        self._refused: dict[Path, tuple] = {}  # watched files refused, with the stat they had then
        self._watching: threading.Event | None = None
        self._thread: threading.Thread | None = None
        if bundle is None:
            self.current = self._with_version(self.load(self.model), 1)
        else:  # loaded and checked already (by :meth:`open`)
            header = read_header(self.model)
            self.check_sets(header, self.model)
            self.current = LoadedModel(bundle, self.model, header, 1, time.time())
        self._series = series_number(self.model)

    @classmethod
    def open(cls, model, store=None, *, weights=None, runtime: str = "auto", backbone_file=None) -> "ModelSlot":
        """Load ``model`` and build the featurizer of its feature space (:meth:`Predictor.load`'s checks)."""
        predictor = Predictor.load(model, store, weights=weights, runtime=runtime, backbone_file=backbone_file)
        return cls(model, predictor.featurizer, store, bundle=predictor.bundle)

    # ------------------------------------------------------------------ loading and swapping
    def load(self, path) -> LoadedModel:
        """The model at ``path`` if it may replace the current one; :class:`ServeError` (409 or 422) if not."""
        path = Path(path)
        stays = f"; the model in use stays {self.current.path.name}" if hasattr(self, "current") else ""
        try:
            header = read_header(path)
        except BundleError as exc:
            raise ServeError(f"{exc}{stays}", 422) from None
        fz = self.featurizer
        if not same_space(header["fingerprint"], fz.fingerprint):
            try:
                check_fingerprint(header, fz.fingerprint, path)
            except BundleError as exc:
                raise ServeError(f"{exc}{stays}", 409) from None
        self.check_sets(header, path, stays)
        try:
            check_set(header.get("summary") or {}, fz.fingerprints, path)
            bundle = Predictor.load(path, self.store, featurizer=fz).bundle
        except FeatureSetError as exc:
            raise ServeError(f"{exc}{stays}", 409) from None
        except BundleError as exc:
            raise ServeError(f"{exc}{stays}", 409 if "another feature space" in str(exc) else 422) from None
        return LoadedModel(bundle, path, header, 0, time.time())

    def check_sets(self, header: dict, path, stays: str = "") -> None:
        """:class:`ServeError` (409) unless the server computes every stored set the model's feature set is made of.

        The server computes the sets of the model it started with (:func:`serving_sets`): a reload may
        bring a model of those sets or of fewer, not one that needs another network (a ``pooled`` server
        asked for a ``style+detail`` model is told to restart with it).
        """
        fz = self.featurizer
        name = bundle_set(header.get("summary"))
        computed = serving_sets(fz)
        missing = [p for p in stored_parts([name]) if p not in computed]
        if missing:
            raise ServeError(f"{path}: trained on feature set {name!r}, which this server does not compute (it computes "
                             f"{', '.join(computed)}); serve a model of {' or '.join(computed)} features, or restart "
                             f"`stylesift serve` with this model if it is one{stays}", 409)

    def _with_version(self, loaded: LoadedModel, version: int) -> LoadedModel:
        return LoadedModel(loaded.bundle, loaded.path, loaded.header, version, loaded.loaded_at)

    def reload(self, path=None) -> dict:
        """Load ``path`` (default: the model file the server started with) and put it in use.

        Returns ``{"file", "version", "previous"}``; raises :class:`ServeError` and keeps the current
        model when the new one is refused.
        """
        with self._lock:
            loaded = self.load(self.model if path is None else path)
            previous = self.current
            self.current = self._with_version(loaded, previous.version + 1)
        log.info("model %s is in use (version %d, was %s)", loaded.path.name, self.current.version, previous.path.name)
        return {"file": str(loaded.path), "version": self.current.version, "previous": str(previous.path)}

    def allowed_path(self, raw: str) -> Path:
        """A model path given in a ``/reload`` body: relative to the model's folder, and it must stay inside it.

        The server reads models only from where its own model lives (where the review loop writes), so a
        token holder cannot make it open any file of the machine.
        """
        folder = Path(os.path.realpath(self.model.parent))
        path = Path(os.path.realpath(folder / raw))
        if not path.is_relative_to(folder):
            raise ServeError(f"{raw}: outside the model's folder {folder}; copy the model there and reload it by name", 403)
        return path

    # ------------------------------------------------------------------ the watch
    def poll(self) -> dict | None:
        """One look at the numbered series: put the newest model in use if it is newer than the one in use.

        Returns what :meth:`reload` returns, or None when nothing changed. A refused file is logged once
        and tried again only when it changes.
        """
        newer = [(n, p) for n, p in numbered_models(self.model) if n > self._series]
        if not newer:
            return None
        number, path = newer[-1]
        try:
            stat = path.stat()
        except OSError:
            return None
        key = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        if self._refused.get(path) == key:
            return None
        try:
            done = self.reload(path)
        except ServeError as exc:
            self._refused[path] = key
            log.warning("watch: %s refused: %s", path.name, exc)
            return None
        self._series = number
        return done

    def watch(self, interval: float = 2.0) -> None:
        """Call :meth:`poll` every ``interval`` seconds in a background thread, until :meth:`stop_watching`."""
        if self._thread is not None:
            return
        stop = self._watching = threading.Event()

        def loop():
            while not stop.wait(interval):
                try:
                    self.poll()
                except Exception as exc:  # noqa: BLE001 - the watch must outlive a folder that vanished for a moment
                    log.warning("watch: %s: %s", type(exc).__name__, exc)

        self._thread = threading.Thread(target=loop, name="stylesift-watch-model", daemon=True)
        self._thread.start()

    def stop_watching(self) -> None:
        if self._watching is not None:
            self._watching.set()
            self._thread.join(10)
            self._watching = self._thread = None
