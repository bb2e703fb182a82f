"""Micro-batching: images of concurrent requests pooled into network batches, one network call at a time.

Requests arrive one or a few images at a time; the network is several times faster per image on a
batch (measured in docs/serve.md). :class:`MicroBatcher` owns the network: decode threads
:meth:`~MicroBatcher.submit` decoded images (with their ``detail`` tiles when the model needs that
set), and one thread takes them in arrival order, up to ``max_batch`` at once, runs the featurizer
on the batch and hands each image its features through a :class:`concurrent.futures.Future`.

How long a batch waits for company: at most ``wait`` seconds after its first image, and only
while more images are on their way (announced with :meth:`~MicroBatcher.expect` when a request's
body has been read, not yet decoded). A lone request is therefore never delayed by the wait, and
a burst of requests fills one batch instead of many small ones.

Memory: at most ``max_pending`` decoded images wait for the network (150 KB each at 224 px, 590 KB
with nine 128-px ``detail`` tiles); a decode thread that would exceed it waits
(:meth:`~MicroBatcher.submit` blocks), so a burst queues as encoded bytes, which are bounded by the
service, not as decoded tensors.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from concurrent.futures import Future
from typing import Callable

import numpy as np

from stylesift.review.serve.threads import LoopThread

log = logging.getLogger("stylesift.serve")


class MicroBatcher:
    """One network thread fed by many decode threads.

    Parameters
    ----------
    run : callable
        ``uint8 (n, size, size, 3) → {set: float32 (n, d)}``, called as ``run(images, tiles)`` when the
        images came with tiles (uint8 ``(n, TILES, TILE, TILE, 3)``): the featurizer's
        :meth:`~stylesift.featurizer.extract.Featurizer.featurize_sets`.
    max_batch : int
        Most images in one network call.
    wait : float
        Seconds a batch may wait for more images after its first one (only while more are expected).
    max_pending : int
        Most decoded images waiting for the network at once.
    """

    def __init__(self, run: Callable[[np.ndarray], dict], *, max_batch: int = 16, wait: float = 0.010,
                 max_pending: int = 256):
        self.run = run
        self.max_batch = int(max_batch)
        self.wait = float(wait)
        self.max_pending = int(max_pending)
        self._queue: deque = deque()
        self._cond = threading.Condition()
        self._room = threading.Semaphore(self.max_pending)
        self._expected = 0
        self._closed = False  # the network thread has ended: nothing queued from now on would be taken
        self._worker = LoopThread(self._loop, self._cond, "stylesift-batcher")
        self.batches = 0  # network calls made
        self.images = 0  # images featurized
        self.busy_seconds = 0.0  # time spent in the network

    # ------------------------------------------------------------------ the producers' side
    def expect(self, n: int) -> None:
        """``n`` images (negative: fewer) are on their way: a batch waits for them, up to ``wait``."""
        with self._cond:
            self._expected = max(0, self._expected + n)
            self._cond.notify()

    def submit(self, image: np.ndarray, tiles: np.ndarray | None = None) -> Future:
        """Queue one decoded image (and count it as no longer expected); its future gets ``{set: float32 (d,)}``.

        ``tiles``: the image's ``detail`` tiles, uint8 ``(TILES, TILE, TILE, 3)``, when the featurizer
        computes that set (every image of a service then has them). Blocks while ``max_pending``
        images wait already.
        """
        self._room.acquire()
        future: Future = Future()
        with self._cond:
            if self._closed:
                self._room.release()
                future.set_exception(RuntimeError("the scoring service is stopped"))
                return future
            self._queue.append((image, tiles, future))
            self._expected = max(0, self._expected - 1)
            self._cond.notify()
        return future

    @property
    def queued(self) -> int:
        """Decoded images waiting for the network."""
        return len(self._queue)

    # ------------------------------------------------------------------ the network thread
    def start(self) -> None:
        if not self._worker.running:
            self._closed = False
            self._worker.start()

    def stop(self, timeout: float | None = 60.0) -> None:
        """Featurize what is queued, then end the network thread."""
        self._worker.stop(timeout)

    def _take(self) -> list:
        """The next batch: waits for a first image, then for company (see the module docstring)."""
        with self._cond:
            while not self._queue and not self._worker.stopping:
                self._cond.wait()
            if not self._queue:
                self._closed = True
                return []
            deadline = time.monotonic() + self.wait
            while len(self._queue) < self.max_batch and self._expected > 0 and not self._worker.stopping:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            n = min(self.max_batch, len(self._queue))
            return [self._queue.popleft() for _ in range(n)]

    def _loop(self) -> None:
        while True:
            batch = self._take()
            if not batch:
                return
            started = time.perf_counter()
            out, error = None, None
            try:
                images = np.stack([image for image, _, _ in batch])
                if batch[0][1] is None:
                    out = self.run(images)
                else:
                    out = self.run(images, np.stack([tiles for _, tiles, _ in batch]))
            except BaseException as exc:  # noqa: BLE001 - every waiting request is told, the thread goes on
                error = exc
            # Counted before any request is answered: a client holding its answer sees its batch counted.
            self.busy_seconds += time.perf_counter() - started
            self.batches += 1
            self.images += len(batch)
            try:
                if error is not None:
                    log.error("the network failed on a batch of %d images: %s: %s", len(batch),
                              type(error).__name__, error)
                    for _, _, future in batch:
                        future.set_exception(error)
                else:
                    for i, (_, _, future) in enumerate(batch):
                        # Copies, so one image's answer does not keep its whole batch's arrays alive.
                        future.set_result({name: np.array(X[i]) for name, X in out.items()})
            finally:
                for _ in batch:
                    self._room.release()
