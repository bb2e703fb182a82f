"""The service's feature store: a read handle kept fresh, and the one writer that records scored uploads.

With ``--store``, every upload the store does not hold becomes a row (its features, and the name it
was uploaded as, ``upload:NAME``, or its path for ``{"paths": [...]}`` requests), unlabelled, so that
the review page, ``rank`` and the history of later uploads see it. Without a store nothing is
written anywhere.

Writing: one thread (:class:`Recorder`) collects rows and writes them as one segment per commit,
at most every ``commit_every`` seconds or ``commit_rows`` rows, taking the store's writer lock
only for the commit so that ``review``, ``label`` and ``extract`` can write between two commits.
A kill at any moment loses at most the rows not yet committed (the store's own protocol keeps it
healthy); a graceful stop commits them. Rows wait in memory for at most ``max_pending`` uploads; while
the store stays locked by another writer longer than that, the newest uploads are scored but not
recorded (counted in ``/health``).

Reading: :class:`StoreView` keeps one read-only :class:`~stylesift.featurizer.store.FeatureStore`
and opens it again when the store changed on disk (rows, verdicts), looking at most every
``refresh`` seconds; it is used by one thread at a time.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from stylesift.errors import StylesiftError
from stylesift.review.serve.threads import LoopThread

log = logging.getLogger("stylesift.serve")


class StoreView:
    """A read-only handle on a store, reopened when its manifest or records changed.

    Parameters
    ----------
    path : path
    refresh : float
        Seconds between two looks at the store's files.
    """

    def __init__(self, path, refresh: float = 1.0):
        from stylesift.featurizer.store.files import Layout

        self.path = Path(path)
        self.refresh = float(refresh)
        self._layout = Layout(self.path)
        self._lock = threading.RLock()
        self._store = None
        self._stamp = None
        self._looked = 0.0

    def _files_stamp(self):
        stamp = []
        for p in (self._layout.manifest, self._layout.log_dir):
            try:
                s = os.stat(p)
                stamp.append((s.st_mtime_ns, s.st_size, s.st_ino))
            except OSError:
                stamp.append(None)
        return tuple(stamp)

    def invalidate(self) -> None:
        """Look at the files at the next :meth:`reading` (after this process wrote to the store)."""
        self._looked = 0.0

    @contextmanager
    def reading(self):
        """Yield the open store (None while it does not exist yet), holding the view's lock."""
        from stylesift.featurizer.store import FeatureStore

        with self._lock:
            now = time.monotonic()
            if now - self._looked >= self.refresh:
                self._looked = now
                stamp = self._files_stamp()
                if stamp != self._stamp:
                    try:
                        self._store = FeatureStore(self.path) if stamp[0] is not None else None
                    except StylesiftError as exc:
                        log.warning("%s", exc)
                        self._store = None
                    self._stamp = stamp
            yield self._store


class Recorder:
    """The one writer of the service's store: rows collected from requests, committed in batches.

    Parameters
    ----------
    store : path
    featurizer : Featurizer
        Its fingerprints name the sets every row carries.
    commit_every : float
        Most seconds a row waits before its commit.
    commit_rows : int
        Rows that start a commit at once.
    max_pending : int
        Most rows waiting for a commit; beyond, uploads are not recorded (counted in :attr:`dropped`).
    lock_timeout : float
        Seconds a commit waits for another writer of the store before trying again later.
    on_commit : callable, optional
        Called after each commit (the service refreshes its :class:`StoreView`).
    """

    def __init__(self, store, featurizer, *, commit_every: float = 1.0, commit_rows: int = 256,
                 max_pending: int = 4096, lock_timeout: float = 10.0, on_commit=None):
        self.store = Path(store)
        self.fingerprint = featurizer.fingerprint
        self.fingerprints = dict(featurizer.fingerprints)
        self.commit_every = float(commit_every)
        self.commit_rows = int(commit_rows)
        self.max_pending = int(max_pending)
        self.lock_timeout = float(lock_timeout)
        self.on_commit = on_commit
        self._pending: dict[str, tuple[dict, str]] = {}  # sha256 → ({set: (d,)}, path), in arrival order
        self._first = 0.0
        self._cond = threading.Condition()
        self._worker = LoopThread(self._loop, self._cond, "stylesift-recorder")
        self.recorded = 0
        self.dropped = 0
        self.commits = 0
        self.last_error: str | None = None

    def check(self) -> None:
        """Open the store for writing once, before the server listens: a locked, read-only or foreign store fails
        here with the store's own message (and leftovers of a killed writer are cleared)."""
        from stylesift.featurizer.store import FeatureStore

        with FeatureStore(self.store, "a", fingerprint=self.fingerprint, lock_timeout=self.lock_timeout) as st:
            for name, fp in self.fingerprints.items():
                if name != "pooled" and len(st):
                    st.declare_set(name, fp)

    def pending(self, sha256: str) -> dict | None:
        """The features of an upload recorded but not committed yet (None when there is none)."""
        with self._cond:
            entry = self._pending.get(sha256)
        return None if entry is None else entry[0]

    def record(self, items) -> int:
        """Queue ``(sha256, {set: float32 (d,)}, path)`` rows for the next commit; returns how many were taken."""
        taken = 0
        with self._cond:
            for sha, sets, path in items:
                if sha in self._pending:
                    continue
                if len(self._pending) >= self.max_pending:
                    self.dropped += 1
                    continue
                if not self._pending:
                    self._first = time.monotonic()
                self._pending[sha] = (sets, path)
                taken += 1
            self._cond.notify()
        return taken

    @property
    def waiting(self) -> int:
        return len(self._pending)

    def start(self) -> None:
        self._worker.start()

    def stop(self, timeout: float | None = 120.0) -> None:
        """Commit what waits, then end the writer thread."""
        self._worker.stop(timeout)

    def _due(self) -> bool:
        return bool(self._pending) and (self._worker.stopping or len(self._pending) >= self.commit_rows
                                        or time.monotonic() - self._first >= self.commit_every)

    def _loop(self) -> None:
        backoff = 0.0
        while True:
            with self._cond:
                while not self._due() and not (self._worker.stopping and not self._pending):
                    wait = self.commit_every - (time.monotonic() - self._first) if self._pending else None
                    self._cond.wait(None if wait is None else max(wait, 0.001))
                if not self._pending:
                    return
                batch = list(self._pending.items())
            try:
                self._commit(batch)
            except (StylesiftError, OSError) as exc:
                self.last_error = str(exc)
                log.warning("could not record %d uploads in %s yet: %s", len(batch), self.store, exc)
                if self._worker.stopping:
                    log.error("%d scored uploads were not recorded in %s", len(batch), self.store)
                    return
                backoff = min(max(2 * backoff, 1.0), 30.0)
                with self._cond:
                    self._cond.wait(backoff)
                continue
            backoff = 0.0
            with self._cond:
                for sha, _ in batch:
                    self._pending.pop(sha, None)
                if self._pending:
                    self._first = time.monotonic()
            self.recorded += len(batch)
            self.commits += 1
            self.last_error = None
            if self.on_commit is not None:
                self.on_commit()

    def _commit(self, batch) -> None:
        from stylesift.featurizer.store import FeatureStore

        shas = [sha for sha, _ in batch]
        names = list(batch[0][1][0])
        sets = {name: np.stack([sets[name] for _, (sets, _) in batch]).astype(np.float32, copy=False) for name in names}
        with FeatureStore(self.store, "a", fingerprint=self.fingerprint, lock_timeout=self.lock_timeout) as st:
            for name, fp in self.fingerprints.items():
                if name != "pooled":
                    st.declare_set(name, fp)
            # Content stored without a set the model needs (e.g. extracted before `detail` was asked for) was
            # featurized again; its row gets the missing sets, as `extract --features` would add them.
            stored = np.flatnonzero(st.rows_of(shas) >= 0) if len(st) else np.zeros(0, np.int64)
            st.add(shas, sets if len(sets) > 1 else sets["pooled"], [[path] for _, (_, path) in batch])
            for name in (n for n in names if n != "pooled" and len(stored)):
                st.add_features(name, [shas[i] for i in stored], sets[name][stored])
