"""The scoring service without HTTP: admission, decoding, micro-batches, scoring, recording.

:class:`ScoringService` turns a request's :class:`~stylesift.review.serve.uploads.Upload` list into
the ``{"results": [...]}`` answer. Per image: hash the bytes; take the features of content the
store (or the recorder's pending rows) holds already, as ``score`` does; else decode it with the
project's bounded decoder (:func:`~stylesift.featurizer.images.load_image`, in the shared decode
memory budget) in a pool of decode threads and hand it to the :class:`MicroBatcher`; when the model
needs the ``detail`` set, the same thread also cuts the upload's native-resolution tiles
(:func:`~stylesift.featurizer.tiles.load_image_and_tiles`, the decode ``extract`` uses, reserving from the same
budget) and they travel with the image into the batch. Then per
request, with the model in use at that moment: :func:`~stylesift.classifiers.predict.score_rows`,
the same function ``score`` builds its rows with, so a row is what ``score --json`` prints for
that file (``path`` named ``filename``).

Bounds, each with its answer:

- requests admitted at once (being read, decoded, batched or scored): ``max_queue``; beyond, 503;
- bytes of request bodies held at once: ``body_memory``; a request waits for room (queues);
- one request: ``max_request_bytes`` and ``max_images``, else 413 (see :mod:`~stylesift.review.serve.uploads`);
- decoded images waiting for the network: the batcher's ``max_pending`` (decode threads wait);
- decode memory: the process-wide :class:`~stylesift.featurizer.images.DecodeBudget` (or the one
  given), for the 224-px decode and the tiles' full-resolution decode alike; an image that needs more
  than all of it fails alone, with the reason (413 when nothing else of the request scored).
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import logging
import os
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from stylesift.classifiers.feature_sets import bundle_set, parts
from stylesift.classifiers.grouping import DEFAULT_THRESHOLD
from stylesift.classifiers.predict import score_rows
from stylesift.review.serve.batcher import MicroBatcher
from stylesift.review.serve.errors import ServeError
from stylesift.review.serve.model_slot import serving_sets
from stylesift.review.serve.recorder import Recorder, StoreView
from stylesift.review.serve.uploads import Upload, read_path

log = logging.getLogger("stylesift.serve")

# Reasons of the decoder and the readers that are a bound of the server, not damage (413 when nothing scored).
LIMIT_REASONS = ("decode memory budget", "is more than the limit of", "limit for one image", "server's limit")


@dataclass
class ServeSettings:
    """How the service batches, bounds and selects (the ``stylesift serve`` options).

    Parameters
    ----------
    max_batch : int
        Most images per network call.
    batch_wait_ms : float
        Most milliseconds a batch waits for images still being decoded.
    max_queue : int
        Requests admitted at once; one more is answered 503.
    max_request_bytes : int
        Largest request body (and, for ``paths`` requests, largest file).
    max_images : int
        Most images per request.
    body_memory : int
        Bytes of request bodies held at once; a request waits for room.
    workers : int, optional
        Decode threads (default: the number of CPUs).
    allow_paths : path, optional
        Folder whose files ``{"paths": [...]}`` requests may name (None: no paths).
    watch_model : float, optional
        Seconds between two looks for a newer numbered model (``--watch-model``; None: no watch).
    threshold, dedupe, history, keep_seen
        Selection as ``stylesift score`` makes it: the model's threshold unless ``threshold``;
        near-duplicates of one request grouped at cosine ``dedupe`` (None: not grouped); ``history``
        (with a store) marks uploads that repeat a judged stored image, not picked unless ``keep_seen``.
    """

    max_batch: int = 16
    batch_wait_ms: float = 10.0
    max_queue: int = 256
    max_request_bytes: int = 32 * 2**20
    max_images: int = 64
    body_memory: int = 512 * 2**20
    workers: int | None = None
    allow_paths: Path | None = None
    threshold: float | None = None
    dedupe: float | None = DEFAULT_THRESHOLD
    history: bool = True
    keep_seen: bool = False
    max_pending_images: int = 256
    commit_every: float = 1.0
    watch_model: float | None = None


@dataclass
class _Prepared:
    """One image after hashing: its features now (known content), a future of them (batched), or an error."""

    sha256: str | None = None
    features: dict | None = None
    future: object = None
    error: str | None = None
    known: bool = False
    phash: int | None = None


class _ByteBudget:
    """Bytes of request bodies held at once; :meth:`reserve` waits (first come, first served). Event loop only."""

    def __init__(self, total: int):
        self.total, self.used = int(total), 0
        self._waiters: deque = deque()

    async def reserve(self, n: int) -> int:
        n = min(int(n), self.total)
        if not self._waiters and self.used + n <= self.total:
            self.used += n
            return n
        future = asyncio.get_running_loop().create_future()
        self._waiters.append((n, future))
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.release(n)
            raise
        return n

    def release(self, n: int) -> None:
        self.used -= n
        while self._waiters and self.used + self._waiters[0][0] <= self.total:
            want, future = self._waiters.popleft()
            if not future.done():
                self.used += want
                future.set_result(None)


@dataclass
class Stats:
    started: float = field(default_factory=time.time)
    requests: int = 0
    images: int = 0
    failed_images: int = 0
    refused_busy: int = 0


class ScoringService:
    """Scores uploads with the model in a :class:`~stylesift.review.serve.model_slot.ModelSlot`.

    Parameters
    ----------
    slot : ModelSlot
        The model in use and the featurizer of its feature space.
    store : path, optional
        Feature store: known content is scored from it, new uploads are recorded into it, history
        looks up its verdicts. None: nothing is read or written.
    settings : ServeSettings, optional
    budget : DecodeBudget, optional
        Decode memory budget (default: the process-wide one, ``--decode-memory``).
    """

    def __init__(self, slot, *, store=None, settings: ServeSettings | None = None, budget=None):
        self.slot = slot
        self.featurizer = slot.featurizer
        self.settings = settings or ServeSettings()
        self.store = None if store is None else Path(store)
        self.budget = budget
        s = self.settings
        self.batcher = MicroBatcher(self.featurizer.featurize_sets, max_batch=s.max_batch, wait=s.batch_wait_ms / 1000,
                                    max_pending=s.max_pending_images)
        self.view = StoreView(self.store) if self.store is not None else None
        self.recorder = (Recorder(self.store, self.featurizer, commit_every=s.commit_every,
                                  on_commit=self.view.invalidate) if self.store is not None else None)
        self._pool: ThreadPoolExecutor | None = None
        self._admit_lock = threading.Lock()
        self._admitted = 0
        self._bodies = _ByteBudget(s.body_memory)
        self.stats = Stats()
        self.stopping = False
        self.started = False

    @classmethod
    def open(cls, model, store=None, settings: ServeSettings | None = None, *, weights=None, runtime: str = "auto",
             backbone_file=None, budget=None) -> "ScoringService":
        """Load ``model`` (every check ``score`` makes, against ``store`` too) and build the service around it."""
        from stylesift.review.serve.model_slot import ModelSlot

        slot = ModelSlot.open(model, store, weights=weights, runtime=runtime, backbone_file=backbone_file)
        return cls(slot, store=store, settings=settings, budget=budget)

    # ------------------------------------------------------------------ life
    def start(self, warm: bool = True) -> None:
        """Build and warm the network (a first batch costs more), start the threads; checks the store is writable."""
        if self.recorder is not None:
            self.recorder.check()
        if warm:
            size = self.featurizer.input_size
            for n in sorted({1, self.settings.max_batch}):
                self.featurizer.featurize_sets(np.zeros((n, size, size, 3), np.uint8), self._blank_tiles(n))
        self._pool = ThreadPoolExecutor(self.settings.workers or os.cpu_count() or 1, thread_name_prefix="stylesift-decode")
        self.batcher.start()
        if self.recorder is not None:
            self.recorder.start()
        if self.settings.watch_model is not None:
            self.slot.watch(self.settings.watch_model)
        self.stopping = False
        self.started = True

    def _blank_tiles(self, n: int) -> np.ndarray | None:
        """Tiles of ``n`` blank images when the featurizer computes ``detail`` (to warm its network), else None."""
        if not self.featurizer.wants_detail:
            return None
        from stylesift.featurizer import tiles

        return np.zeros((n, tiles.TILES, tiles.TILE, tiles.TILE, 3), np.uint8)

    def stop(self) -> None:
        """Finish what is queued, commit the store, end the threads (after the server stopped taking requests)."""
        self.stopping = True
        self.slot.stop_watching()
        self.batcher.stop()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        if self.recorder is not None:
            self.recorder.stop()
        self.started = False

    def health(self) -> dict:
        """What ``GET /health`` answers (no token needed, so nothing about the model or the images)."""
        return {"status": "stopping" if self.stopping else "ok", "queued_requests": self._admitted}

    def state(self) -> dict:
        """Counters for operators (``GET /model`` adds them)."""
        out = {"requests": self.stats.requests, "images": self.stats.images, "failed_images": self.stats.failed_images,
               "refused_busy": self.stats.refused_busy, "queued_requests": self._admitted,
               "batches": self.batcher.batches, "batched_images": self.batcher.images,
               "network_seconds": round(self.batcher.busy_seconds, 3),
               "uptime_s": round(time.time() - self.stats.started, 1)}
        if self.recorder is not None:
            out["store"] = {"file": str(self.store), "recorded": self.recorder.recorded, "waiting": self.recorder.waiting,
                            "not_recorded": self.recorder.dropped, "last_error": self.recorder.last_error}
        return out

    # ------------------------------------------------------------------ admission
    @asynccontextmanager
    async def admitted(self, body_bytes: int):
        """Hold one of ``max_queue`` places and ``body_bytes`` of body memory for a request (503 when full)."""
        with self._admit_lock:
            if self.stopping or self._admitted >= self.settings.max_queue:
                self.stats.refused_busy += 1
                raise ServeError(f"the server is busy ({self._admitted} requests queued, the limit is "
                                 f"{self.settings.max_queue}, --max-queue) or stopping; try again in a moment", 503)
            self._admitted += 1
        held = 0
        try:
            held = await self._bodies.reserve(body_bytes)
            yield
        finally:
            if held:
                self._bodies.release(held)
            with self._admit_lock:
                self._admitted -= 1

    # ------------------------------------------------------------------ scoring
    async def score(self, uploads: list[Upload]) -> tuple[int, dict]:
        """``(status, {"results": [...], "model": {...}})`` for a request's uploads, in their order."""
        loop = asyncio.get_running_loop()
        group = self.settings.dedupe is not None and len(uploads) > 1
        self.batcher.expect(len(uploads))
        prepared = await asyncio.gather(*(loop.run_in_executor(self._pool, self._prepare, u, group) for u in uploads))
        for p in prepared:
            if p.future is not None:
                try:
                    p.features = await asyncio.wrap_future(p.future)
                except Exception as exc:  # noqa: BLE001 - the batch failed: this image fails, the request goes on
                    p.error = f"could not be featurized ({type(exc).__name__}); the server's log has the details"
        status, body = await asyncio.to_thread(self._finish, uploads, prepared)
        self.stats.requests += 1
        self.stats.images += len(uploads)
        self.stats.failed_images += sum("error" in r for r in body["results"])
        return status, body

    def _prepare(self, upload: Upload, phash: bool) -> _Prepared:
        """Hash, look up and decode one image (and its ``detail`` tiles) in a decode thread; never raises for a bad image."""
        from stylesift.featurizer.images import ImageError, load_image, perceptual_hash
        from stylesift.featurizer.tiles import load_image_and_tiles

        queued = False
        try:
            if upload.data is None and upload.error is None and upload.path is not None:
                read_path(upload, self.settings.allow_paths, self.settings.max_request_bytes)
            if upload.error is not None:
                return _Prepared(error=upload.error)
            data = upload.data
            out = _Prepared(sha256=hashlib.sha256(data).hexdigest())
            if phash:  # the request's near-duplicate groups compare these; computed here, in parallel
                out.phash = perceptual_hash(io.BytesIO(data))
            out.features = self._known(out.sha256)
            if out.features is not None:
                out.known = True
                return out
            try:
                # One decode after the other, each inside its own reservation: an upload never holds both.
                if self.featurizer.wants_detail:
                    image, tiles = load_image_and_tiles(data, upload.filename, self.featurizer.input_size, self.budget)
                else:
                    image = load_image(io.BytesIO(data), self.featurizer.input_size, name=upload.filename,
                                       budget=self.budget)
                    tiles = None
            except ImageError as exc:
                out.error = str(exc)
                return out
            out.future = self.batcher.submit(image, tiles)
            queued = True
            return out
        finally:
            if not queued:
                self.batcher.expect(-1)

    def _known(self, sha256: str) -> dict | None:
        """Features of content the store or the recorder holds already, with every set the featurizer computes."""
        from stylesift.featurizer.store import StoreError

        if self.recorder is None:
            return None
        pending = self.recorder.pending(sha256)
        if pending is not None:
            return pending
        with self.view.reading() as st:
            if st is None:
                return None
            row = st.row_of(sha256)
            if row is None:
                return None
            try:
                return {name: st.features([row], name)[0] for name in serving_sets(self.featurizer)}
            except (StoreError, KeyError, IndexError):  # a set this row lacks: featurized again
                return None

    def _finish(self, uploads: list[Upload], prepared: list[_Prepared]) -> tuple[int, dict]:
        """Score the request's featurized images with the model in use now; record the new ones."""
        from stylesift.featurizer.store import NONFINITE

        for upload, p in zip(uploads, prepared):
            if p.features is not None and not all(np.isfinite(X).all() for X in p.features.values()):
                p.error, p.features = f"{upload.filename}: {NONFINITE}", None  # as extract reports it
        ok = [i for i, p in enumerate(prepared) if p.features is not None]
        loaded = self.slot.current
        name = bundle_set(loaded.bundle.summary)
        names = [uploads[i].filename for i in ok]
        shas = [prepared[i].sha256 for i in ok]
        rows: list[dict] = []
        if ok:
            pooled = np.stack([prepared[i].features["pooled"] for i in ok])
            X = np.stack([np.concatenate([prepared[i].features[p] for p in parts(name)]) for i in ok])
            hashes = [prepared[i].phash for i in ok]
            s = self.settings
            kwargs = dict(threshold=s.threshold, dedupe=s.dedupe, keep_seen=s.keep_seen,
                          hash_of=(lambda i: hashes[i]) if len(ok) > 1 else None)
            if self.view is not None:
                with self.view.reading() as st:
                    rows, _ = score_rows(loaded.bundle, names, shas, pooled, X, store=st, history=s.history,
                                         thumb_of=lambda i: _thumbnail(uploads[ok[i]]), **kwargs)
            else:
                rows, _ = score_rows(loaded.bundle, names, shas, pooled, X, history=False, **kwargs)
            if self.recorder is not None:
                self.recorder.record([(prepared[i].sha256, prepared[i].features, uploads[i].store_path)
                                      for i in ok if not prepared[i].known])
        by_index = dict(zip(ok, rows))
        results = []
        for i, (upload, p) in enumerate(zip(uploads, prepared)):
            if i in by_index:
                row = by_index[i]
                results.append({"filename": row.pop("path"), **row})
            else:
                results.append({"filename": upload.filename, "error": p.error or "could not be scored"})
        if ok:
            status = 200
        elif any(any(m in (p.error or "") for m in LIMIT_REASONS) for p in prepared):
            status = 413
        else:
            status = 422
        return status, {"results": results, "model": {"file": loaded.path.name, "version": loaded.version}}


def _thumbnail(upload: Upload):
    """The upload's grey thumbnail for history's pixel check (as ``score`` does), made only when a judged
    row is a candidate; None when its bytes are gone or do not decode."""
    from stylesift.featurizer.search.reposts import thumbnail_of

    return thumbnail_of(io.BytesIO(upload.data)) if upload.data is not None else None
