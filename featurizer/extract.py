"""Featurize image files into a feature store: hash, skip what is known, decode ahead, run the network."""

from __future__ import annotations

import hashlib
import io
import os
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from stylesift.featurizer import tiles as tiling
from stylesift.featurizer.backbones import runtimes
from stylesift.featurizer.images import IMAGE_EXTENSIONS, ImageError, load_image, read_image_bytes
from stylesift.featurizer.ledger import ExtractReport, Ledger, Outcome, PreparedFile
from stylesift.featurizer.space import INPUT_SIZE
from stylesift.featurizer.store import NONFINITE, FeatureStore, split_finite
from stylesift.featurizer.weights import Weights, resolve

DEFAULT_BATCH_SIZE = 32


def list_images(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Expand files and folders (recursively, image extensions only) into a sorted, de-duplicated list.

    A path named explicitly is always kept, even without an image extension or when it does not
    exist, so that it is reported rather than silently dropped. :func:`walk` also says what was skipped.
    """
    return walk(paths)[0]


def walk(paths: Iterable[str | os.PathLike]) -> tuple[list[Path], list[dict]]:
    """:func:`list_images`, plus ``{"path", "reason"}`` for everything a folder walk passed over, sorted by path.

    Skipped: files without an image extension, hidden files and folders (name starting with a
    dot; a hidden folder is listed once, not searched), and symlinks to folders (not followed, so
    no loops).
    """
    found: dict[str, Path] = {}
    skipped: dict[str, str] = {}
    for raw in paths:
        path = Path(os.path.abspath(raw))
        if path.is_dir():
            for root, dirs, files in os.walk(path):  # does not follow symlinked folders: no loops
                for d in dirs:
                    if d.startswith("."):
                        skipped[os.path.join(root, d)] = "hidden folder, not searched"
                    elif os.path.islink(os.path.join(root, d)):
                        skipped[os.path.join(root, d)] = "symlink to a folder, not followed (name the folder itself to include it)"
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for name in files:
                    p = Path(root) / name
                    suffix = p.suffix.lower()
                    if name.startswith("."):
                        skipped[str(p)] = "hidden file"
                    elif suffix not in IMAGE_EXTENSIONS:
                        skipped[str(p)] = (f"no image extension ({suffix} is not one of the image types)" if suffix
                                           else "no image extension") + "; name the file itself to try it"
                    else:
                        found.setdefault(str(p), p)
        else:
            found.setdefault(str(path), path)
    return [found[k] for k in sorted(found)], [{"path": k, "reason": skipped[k]} for k in sorted(skipped) if k not in found]


class Featurizer:
    """Images → 2048-d features, with the network built only when something new must be featurized.

    Parameters
    ----------
    weights : Weights or path, optional
        Resolved weights or an explicit weights file; resolved by :func:`featurizer.weights.resolve` when None.
    batch_size : int
        Images per network call.
    workers : int, optional
        Decoding threads (default: number of CPUs).
    precision : {"float32", "int8"}
        The feature space: float32, or INT8 (NNCF on OpenVINO, its own feature space, needs
        ``pip install 'stylesift[fast]'``).
    runtime : {"auto", "keras", "openvino", "onnxruntime"}
        What computes it (see :mod:`stylesift.featurizer.backbones.runtimes`): ``auto`` is the fastest measured on this
        machine among the runtimes proven to give that space's features. ``int8`` on ``onnxruntime``
        is the first int8 recipe, which stores and bundles made before keep.
    feature_sets : tuple of str
        The sets each forward pass computes and the store receives (``pooled``, ``style``, ``detail``;
        ``detail`` is computed from native-resolution tiles by its own network, see
        :mod:`stylesift.featurizer.backbones.detail`).
    space : str, optional
        A space name from :func:`stylesift.featurizer.backbones.runtimes.space_of_fingerprint` (overrides ``precision``).
    backbone_file : path, optional
        Bring your own backbone: an ONNX or OpenVINO IR network with its JSON sidecar (see
        :mod:`stylesift.featurizer.backbones.byo`) instead of ResNet50; ``weights`` is then unused.
    recorded : dict, optional
        With ``backbone_file``: the fingerprint a store or bundle recorded; the file must be that one.
    """

    def __init__(self, weights: Weights | str | os.PathLike | None = None, *, batch_size: int = DEFAULT_BATCH_SIZE,
                 workers: int | None = None, input_size: int = INPUT_SIZE, precision: str = "float32",
                 runtime: str = "auto", feature_sets: tuple[str, ...] = ("pooled",), space: str | None = None,
                 backbone_file: str | os.PathLike | None = None, recorded: dict | None = None):
        self.batch_size = int(batch_size)
        self.workers = int(workers or os.cpu_count() or 1)
        self.backbone_file = Path(backbone_file) if backbone_file else None
        self._backbone = self._detail = None
        if self.backbone_file is not None:
            from stylesift.featurizer.backbones.byo import BackboneFileError, resolve_fingerprint

            if tuple(feature_sets) != ("pooled",) or runtime not in ("auto", "openvino") or precision != "float32":
                raise BackboneFileError(f"{self.backbone_file}: a bring-your-own backbone runs float32 on OpenVINO and "
                                        "gives one feature set (pooled); leave --precision, --runtime and --features at "
                                        "their defaults")
            self.weights, self.space, self.precision, self.runtime = None, "byo", "float32", "openvino"
            self.fingerprint = resolve_fingerprint(self.backbone_file, recorded)
            self.fingerprints, self.feature_sets = {"pooled": self.fingerprint}, ("pooled",)
            self.input_size = int(self.fingerprint["input_size"])
            return
        self.weights = weights if isinstance(weights, Weights) else resolve(weights)
        self.input_size = input_size
        self.space = space or runtimes.space_of(precision, runtime)
        self.precision = runtimes.precision_of(self.space)
        self.runtime = runtime
        self.feature_sets = tuple(feature_sets)
        self.fingerprints = runtimes.fingerprints(self.weights, self.space, self.feature_sets, input_size=input_size)
        self.fingerprint = runtimes.pooled_fingerprint(self.weights, self.space, input_size=input_size)
        runtimes.require_runtime(self.space, runtime)  # fail before any file is read, not at the first batch
        self._check_detail()

    @property
    def network_sets(self) -> tuple[str, ...]:
        """The sets the whole-image network computes (every set but ``detail``; ``pooled`` always)."""
        return tuple(s for s in self.feature_sets if s != "detail") or ("pooled",)

    @property
    def wants_detail(self) -> bool:
        return "detail" in self.feature_sets

    def _check_detail(self) -> None:
        if self.wants_detail and self.space == runtimes.LEGACY_INT8:
            raise runtimes.RuntimeUnavailable("the first int8 recipe (--runtime onnxruntime) does not compute the "
                                              "detail set; use --runtime openvino or auto for int8 detail features")

    @property
    def detail_net(self):
        """The ``detail`` network (built on first use), on the runtime and precision of this space."""
        if self._detail is None:
            from stylesift.featurizer.backbones.detail_net import DetailNet

            runtime = self.runtime
            if runtime == "auto":
                runtime = "openvino" if self.precision == "int8" or runtimes.installed("openvino") else "keras"
            self._detail = DetailNet(self.weights, self.precision, runtime, self.fingerprint)
        return self._detail

    @classmethod
    def for_fingerprint(cls, fingerprint: dict | None, weights=None, *, runtime: str = "auto",
                        backbone_file: str | os.PathLike | None = None, **kwargs) -> "Featurizer":
        """The featurizer of the space a store's or bundle's pooled ``fingerprint`` names (float32 when None).

        A bring-your-own backbone is loaded from ``backbone_file``, else from the path the fingerprint recorded.
        """
        from stylesift.featurizer.backbones import BackboneFileError, is_byo
        from stylesift.featurizer.backbones.byo import byo_fingerprint_problem

        if is_byo(fingerprint):
            problem = byo_fingerprint_problem(fingerprint)
            if problem:
                raise BackboneFileError(f"the recorded feature space cannot be rebuilt: {problem}; the store or model "
                                        "file was edited or damaged")
            return cls(backbone_file=backbone_file or fingerprint["file"], recorded=fingerprint, **kwargs)
        return cls(weights, runtime=runtime, space=runtimes.space_of_fingerprint(fingerprint), **kwargs)

    @property
    def backbone(self):
        """The network (built on first use), on the runtime chosen for this space (see :mod:`stylesift.featurizer.backbones.runtimes`)."""
        if self._backbone is None and self.backbone_file is not None:
            from stylesift.featurizer.backbones import ByoBackbone

            self._backbone = ByoBackbone(self.backbone_file, self.fingerprint)
        if self._backbone is None:
            self._backbone = runtimes.make_backbone(self.weights, runtime=self.runtime, feature_sets=self.network_sets,
                                                    input_size=self.input_size, space=self.space)
        return self._backbone

    @property
    def runtime_used(self) -> str | None:
        """The runtime that computes the features (None until the network is built)."""
        return getattr(self._backbone, "runtime", None)

    def featurize(self, images: np.ndarray) -> np.ndarray:
        """uint8 RGB ``(n, size, size, 3)`` → float32 ``(n, 2048)`` (the pooled set)."""
        return self.backbone(images)

    def featurize_sets(self, images: np.ndarray, tiles: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Every feature set of a batch: ``{set: float32 (n, d)}``.

        ``images``: uint8 ``(n, size, size, 3)``, the whole pictures resized (one forward pass gives every
        set but ``detail``); ``tiles``: uint8 ``(n, TILES, TILE, TILE, 3)`` from
        :func:`stylesift.featurizer.tiles.load_tiles`, needed when the sets include ``detail``.
        """
        out = self.backbone.run(images)
        if self.wants_detail:
            if tiles is None:
                raise ValueError("the detail set needs the images' tiles (stylesift.featurizer.tiles.load_tiles)")
            out["detail"] = self.detail_net(tiles)
        return out

    def _batch_sets(self, items: list[PreparedFile]) -> dict[str, np.ndarray] | np.ndarray:
        images = np.stack([it.image for it in items])
        if self.feature_sets == ("pooled",):
            return self.featurize(images)
        return self.featurize_sets(images, np.stack([it.tiles for it in items]) if self.wants_detail else None)

    def extract(self, paths: Iterable[str | os.PathLike], store: str | os.PathLike, *, label: str | None = None,
                progress: Callable[[int, int], None] | None = None, lock_timeout: float = -1) -> ExtractReport:
        """Featurize every image under ``paths`` that the store does not hold yet.

        Content already in the store (same sha256) is not featurized again; its paths and, when
        ``label`` is given, its label are updated. Files that fail are recorded in the store and retried
        only once their size or mtime changes. ``progress(done, total)`` is called as files finish.
        Ctrl-C stops cleanly: finished batches are kept and the report says ``interrupted``.
        """
        started = time.perf_counter()
        self._follow_first_int8_recipe(store)
        files, skipped = walk(paths)
        report = ExtractReport(store=str(store), skipped=skipped)
        with FeatureStore(store, "a", fingerprint=self.fingerprint, lock_timeout=lock_timeout) as st:
            for name, fp in self.fingerprints.items():
                if name != "pooled":
                    st.declare_set(name, fp)
            rows_before = len(st)
            ledger = Ledger(st, report, label)
            batch: list[PreparedFile] = []
            refill: list[PreparedFile] = []  # rows already stored that lack a requested set
            lacking = self._rows_lacking_sets(st)
            done = 0

            def flush_refill():
                # Only the sets a row lacks are added (the store skips rows that hold a set already).
                if not refill:
                    return
                if self._lacking_sets == {"detail"}:  # a detail backfill needs no whole-image network
                    feats = {"detail": self.detail_net(np.stack([it.tiles for it in refill]))}
                else:
                    feats = self._batch_sets(refill)
                for name, X in feats.items():
                    ok = np.isfinite(X).all(axis=1)
                    if name != "pooled" and ok.any():
                        st.add_features(name, [it.sha256 for it, good in zip(refill, ok) if good], X[ok])
                report.refilled = getattr(report, "refilled", 0) + len(refill)
                refill.clear()
                st.maybe_commit()

            def flush_batch():
                if not batch:
                    return
                feats = self._batch_sets(batch)
                shas, feats, bad = split_finite([it.sha256 for it in batch], feats)
                for sha in bad:  # refused by the store: reported with the file, the run goes on
                    ledger.failed(sha, f"{ledger.paths_of(sha)[0]}: {NONFINITE}")
                if shas:
                    st.add(shas, feats, [ledger.paths_of(s) for s in shas], label)
                ledger.stored(shas)
                batch.clear()
                st.maybe_commit()

            try:
                for item in self._prepared(files, st, ledger.skip, lacking):
                    done += 1
                    outcome = ledger.classify(item)
                    if outcome is Outcome.NEW:
                        batch.append(item)
                        if len(batch) >= self.batch_size:
                            flush_batch()
                    elif outcome is Outcome.CACHED and item.image is not None and lacking:
                        refill.append(item)
                        if len(refill) >= self.batch_size:
                            flush_refill()
                    if progress:
                        progress(done, len(files))
                flush_batch()
                flush_refill()
            except KeyboardInterrupt:
                report.interrupted = True
            finally:
                ledger.finish()
        # Counted after the commit on leaving the store, which rereads the journal: a Ctrl-C that lands
        # between a batch reaching the journal and the count above must not under-report what was saved.
        report.rows = len(st)
        report.new = report.rows - rows_before
        report.runtime, report.precision = self.runtime_used, self.precision
        report.seconds = time.perf_counter() - started
        return report

    def _follow_first_int8_recipe(self, store) -> None:
        """``--precision int8`` with ``--runtime auto`` into a store of the first int8 recipe keeps that recipe."""
        if self.space != "int8" or self.runtime != "auto" or not Path(store).is_file():
            return
        try:
            fp = FeatureStore(store).fingerprint
        except Exception:  # noqa: BLE001 - an unreadable store is reported by the real open below
            return
        if runtimes.space_of_fingerprint(fp) == runtimes.LEGACY_INT8:
            self.space, self._backbone = runtimes.LEGACY_INT8, None
            self.fingerprints = runtimes.fingerprints(self.weights, self.space, self.feature_sets, input_size=self.input_size)
            self.fingerprint = self.fingerprints.get("pooled", fp)
            runtimes.require_runtime(self.space, "auto")
            self._check_detail()

    def _rows_lacking_sets(self, st: FeatureStore) -> set[int]:
        """Rows of ``st`` that lack one of this featurizer's sets besides ``pooled``: decoded again if met."""
        out: set[int] = set()
        self._lacking_sets = set()
        for name in self.feature_sets:
            if name != "pooled" and len(st):
                rows = np.flatnonzero(~st.has_features(name)).tolist()
                out.update(rows)
                self._lacking_sets.update([name] if rows else [])
        return out

    def _prepared(self, files: list[Path], st: FeatureStore, skip, lacking: set[int] = frozenset()) -> Iterator[PreparedFile]:
        """Hash and decode files in worker threads, yielding in order with a bounded read-ahead.

        Content already stored is not decoded, unless its row is in ``lacking`` (a requested set is missing).
        """
        def known(sha: str):
            row = st.row_of(sha)
            return None if row is not None and row in lacking else row

        yield from ordered_map(lambda path: self._prepare(path, known if lacking else st.row_of, skip), files,
                               threads=self.workers,
                               window=max(2 * self.batch_size, 4 * self.workers), name="stylesift-decode")

    def _prepare(self, path: Path, known: Callable[[str], int | None], skip) -> PreparedFile:
        if skip(path):
            return PreparedFile(path, error="unchanged")
        return prepare_file(path, self.input_size, known, detail=self.wants_detail)


def ordered_map(fn: Callable, items: Iterable, *, threads: int, window: int, name: str = "stylesift") -> Iterator:
    """``map(fn, items)`` run in ``threads`` worker threads, yielded in order, at most ``window`` in flight.

    The window bounds memory (decoded images wait in it) while keeping the threads ahead of the consumer.
    """
    pending: deque = deque()
    with ThreadPoolExecutor(threads, thread_name_prefix=name) as pool:
        try:
            for item in items:
                pending.append(pool.submit(fn, item))
                if len(pending) >= window:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for fut in pending:
                fut.cancel()


def prepare_file(path: Path, input_size: int = INPUT_SIZE,
                 known: Callable[[str], object | None] = lambda sha: None, *, detail: bool = False) -> PreparedFile:
    """Read ``path``, hash its bytes and, unless ``known(sha256)`` is not None, decode it.

    With ``detail`` the ``detail`` set's native-resolution tiles are decoded too (``.tiles``).

    Never raises for a bad file: the failure reason (naming the file) is in ``.error``.
    """
    item = PreparedFile(path)
    try:
        stat = path.stat()
        item.size, item.mtime = stat.st_size, stat.st_mtime
        if not path.is_file():
            raise ImageError(path, "is a directory, not an image file" if path.is_dir() else "not a regular file")
        data = read_image_bytes(path, stat)  # bounded, and refused if the file changes meanwhile
    except ImageError as exc:
        item.error = str(exc)
        return item
    except OSError as exc:
        item.error = f"{path}: {_os_reason(path, exc)}"
        return item
    item.sha256 = hashlib.sha256(data).hexdigest()
    if known(item.sha256) is None:
        try:
            # Decode the very bytes that were hashed, so a file changing meanwhile cannot mismatch.
            if detail:  # one draft decode serves the whole-image input and the tiles' ranking
                item.image, item.tiles = tiling.load_image_and_tiles(data, path, input_size)
            else:
                item.image = load_image(io.BytesIO(data), input_size, name=path)
        except ImageError as exc:
            item.image = item.tiles = None
            item.error = str(exc)
    return item


def extract(paths: Iterable[str | os.PathLike], store: str | os.PathLike, *, label: str | None = None,
            weights: Weights | str | os.PathLike | None = None, batch_size: int = DEFAULT_BATCH_SIZE,
            workers: int | None = None, progress: Callable[[int, int], None] | None = None,
            precision: str = "float32", runtime: str = "auto") -> ExtractReport:
    """Featurize images into ``store``; see :meth:`Featurizer.extract`."""
    return Featurizer(weights, batch_size=batch_size, workers=workers, precision=precision, runtime=runtime).extract(
        paths, store, label=label, progress=progress)


def _os_reason(path: Path, exc: OSError) -> str:
    if isinstance(exc, FileNotFoundError):
        return "broken symlink" if path.is_symlink() else "no such file"
    if isinstance(exc, PermissionError):
        return "permission denied"
    if exc.errno == 40:  # ELOOP
        return "symlink loop"
    return f"cannot read ({exc.strerror or exc})"
