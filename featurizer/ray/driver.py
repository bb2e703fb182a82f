"""Extraction on a Ray cluster, the driver's side: it lists, hashes, submits batches, collects and writes.

The driver does everything that decides *what* is in the store, exactly as local extraction does:
it lists the paths, hashes every file (:func:`featurizer.extract.prepare_file` without decoding),
skips content the store already holds and unchanged failures, groups equal content under one row,
and is the only process that opens the store for writing. Only the path and expected sha256 of new
content travel to the workers (:mod:`featurizer.ray.worker`), each of which builds the featurizer the
driver's spec names (:func:`featurizer.ray.rules.worker_spec`) and refuses all work when a feature
fingerprint of any set differs from the driver's. Where workers see the store's folder they write their
batches as segment files and the driver only attaches them. Stored rows that lack a requested set
(``--features pooled,detail`` on a pooled store) go to the workers as *refill* batches: only the
missing sets come back, and the driver adds them to the existing rows, as local extraction does.

A worker that dies is restarted by Ray (``max_restarts``) and its unfinished batches are run again
(``max_task_retries``); rows are keyed by content, so a batch delivered twice adds nothing twice.

Ray is an optional dependency (``pip install 'stylesift[ray]'``); it is imported only when used.
"""

from __future__ import annotations

import os
import socket
import sys
import time
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from stylesift.featurizer.extract import (
    DEFAULT_BATCH_SIZE,
    ExtractReport,
    Featurizer,
    PreparedFile,
    ordered_map,
    prepare_file,
    walk,
)
from stylesift.featurizer.ledger import Ledger, Outcome
from stylesift.featurizer.ray import rules
from stylesift.featurizer.ray.errors import RayEngineError, WorkerMismatch, require_ray
from stylesift.featurizer.ray.worker import Worker, versions
from stylesift.featurizer.space import INPUT_SIZE
from stylesift.featurizer.store import NONFINITE, FeatureStore, split_finite
from stylesift.featurizer.weights import Weights


@dataclass
class _Batch:
    """Content sent to one worker call: ``items[i]`` is the first file seen with ``sha256s[i]``.

    ``sets``: a refill of rows the store holds, with only these sets asked for; None: new rows.
    """

    items: list[PreparedFile]
    worker: int
    sets: list[str] | None = None
    sha256s: list[str] = field(init=False)

    def __post_init__(self):
        self.sha256s = [it.sha256 for it in self.items]


class RayEngine:
    """Featurize images into a store with Ray actors; same store, same results as :class:`Featurizer`.

    Parameters
    ----------
    weights : Weights or path, optional
        Resolved weights or an explicit weights file, resolved on the driver as in local mode.
    batch_size : int
        Images per worker call (and per network call on the worker).
    workers : int, optional
        Number of worker actors (default: as many as the cluster has CPUs for, given ``cpus_per_worker``).
    address : str, optional
        Ray cluster to join (``auto``, ``HOST:6379``, ``ray://HOST:10001``); default: ``$RAY_ADDRESS``,
        else a Ray instance started on this machine for this run.
    cpus_per_worker : int
        CPUs each worker reserves; also its TensorFlow thread count.
    ship_weights : bool
        Send the driver's weight file to the workers through Ray (default; a small holder actor keeps
        it for workers that restart). When False, each node resolves the weights itself (the same
        explicit file path, else its own cache, Keras or npm); the fingerprint check then guards
        against nodes that hold other weights.
    runtime_env : dict, optional
        Ray runtime environment for the worker actors (e.g. ``{"env_vars": {...}}``).
    max_retries : int
        How often a dead worker is restarted, and how often a batch is retried on it.
    start_timeout : float
        Seconds to wait for the workers to load the network before giving up (an autoscaling
        cluster may need minutes to add nodes).
    write_segments : bool or None
        Where a worker sees the store's folder (a shared file system), it writes each batch as a
        segment file of its own and the driver only attaches it: features never travel through Ray.
        None (default): each worker finds out by looking for a probe file the driver leaves there;
        False: features always travel to the driver, which writes them.
    feature_sets : tuple of str
        The stored sets to compute (``pooled``, ``style``, ``detail``; see :class:`Featurizer`); rows
        the store holds without one of them get it (a backfill on the workers).
    """

    def __init__(self, weights: Weights | str | os.PathLike | None = None, *, batch_size: int = DEFAULT_BATCH_SIZE,
                 workers: int | None = None, address: str | None = None, cpus_per_worker: int = 1,
                 ship_weights: bool = True, runtime_env: dict | None = None, max_retries: int = 3,
                 start_timeout: float = 600.0, input_size: int = INPUT_SIZE, write_segments: bool | None = None,
                 feature_sets: tuple[str, ...] = ("pooled",)):
        self.weights = weights
        self.batch_size = batch_size
        self.workers = workers
        self.address = address
        self.cpus_per_worker = cpus_per_worker
        self.ship_weights = ship_weights
        self.runtime_env = runtime_env
        self.max_retries = max_retries
        self.start_timeout = start_timeout
        self.input_size = input_size
        self.write_segments = write_segments
        self.feature_sets = feature_sets

    # ------------------------------------------------------------------ public
    def extract(self, paths: Iterable[str | os.PathLike], store: str | os.PathLike, *, label: str | None = None,
                progress: Callable[[int, int], None] | None = None, lock_timeout: float = -1) -> ExtractReport:
        """Featurize every image under ``paths`` that the store does not hold yet; see :meth:`Featurizer.extract`.

        Workers are started only once there is something new to featurize, and are kept for later
        calls until :meth:`close`. Raises :class:`WorkerMismatch` when a worker's fingerprint differs
        (before anything is sent to it) and :class:`RayEngineError` when batches could not be
        featurized even after retries; in both cases every finished batch is saved first.
        """
        started = time.perf_counter()
        self._resolve()
        files, skipped = walk(paths)
        report = ExtractReport(store=str(store), skipped=skipped)
        with FeatureStore(store, "a", fingerprint=self.fingerprint_, lock_timeout=lock_timeout) as st:
            for name, fp in self.fingerprints_.items():
                if name != "pooled":
                    st.declare_set(name, fp)
            run = _Run(self, st, report, label, len(files), progress)
            try:
                run.feed(self._hashed(files, run.ledger))
            except KeyboardInterrupt:
                report.interrupted = True
                self.close()  # stop the cluster's work now rather than let queued batches run on
            finally:
                run.finish()
            report.rows = len(st)
        report.seconds = time.perf_counter() - started
        if run.lost:
            n = sum(len(b.items) for b in run.lost)
            raise RayEngineError(
                f"{n} images in {len(run.lost)} batches could not be featurized ({run.lost_reason}); "
                f"everything else is saved in {store} ({report.new} new rows). Run the same command again "
                "to retry them.")
        return report

    def close(self) -> None:
        """Stop the worker actors (and the Ray instance, when this engine started it)."""
        actors, self._actors = getattr(self, "_actors", []), []
        source, self._weights_source = getattr(self, "_weights_source", None), None
        if not actors and source is None and not getattr(self, "_owns_ray", False):
            return
        ray = require_ray()
        for actor in [*actors, *([source] if source is not None else [])]:
            ray.kill(actor, no_restart=True)
        if getattr(self, "_owns_ray", False):
            ray.shutdown()
            self._owns_ray = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ---------------------------------------------------------------- internals
    def _resolve(self) -> None:
        if getattr(self, "fingerprint_", None) is None:
            rules.check_feature_sets(True, tuple(self.feature_sets))
            featurizer = Featurizer(self.weights, batch_size=self.batch_size, input_size=self.input_size,
                                    space=rules.SPACE, runtime=rules.RUNTIME, feature_sets=tuple(self.feature_sets))
            self.weights_, self.fingerprint_ = featurizer.weights, featurizer.fingerprint
            self.fingerprints_ = featurizer.fingerprints

    def _hashed(self, files: list[Path], ledger: Ledger) -> Iterator[PreparedFile]:
        """Read and hash files in threads (no decoding: that is the workers' job), in order, read-ahead bounded."""
        def hash_one(path: Path) -> PreparedFile:
            if ledger.skip(path):
                return PreparedFile(path, error="unchanged")
            return prepare_file(path, self.input_size, known=lambda sha: True)

        threads = min(8, os.cpu_count() or 1)
        yield from ordered_map(hash_one, files, threads=threads, window=4 * threads, name="stylesift-hash")

    def _start(self) -> list:
        """Start (or reuse) the worker actors and wait until each has loaded and checked its backbone."""
        if getattr(self, "_actors", None):
            return self._actors
        if not (self.address or os.environ.get("RAY_ADDRESS")) and "ray" not in sys.modules:
            # A Ray instance private to this run: keep it on loopback, as Ray does on macOS and Windows
            # (read when ray is first imported).
            os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        ray = require_ray()
        self._init_ray(ray)
        cpus = float(ray.cluster_resources().get("CPU", 0))
        n = self.workers or max(1, int(cpus // max(self.cpus_per_worker, 1)))
        if n * self.cpus_per_worker > cpus:
            raise RayEngineError(f"{n} workers × {self.cpus_per_worker} CPUs do not fit the cluster's {cpus:g} CPUs; "
                                 f"pass --workers {max(1, int(cpus // max(self.cpus_per_worker, 1)))} or add nodes")
        run_id = os.urandom(4).hex()
        source = f"stylesift-{run_id}-weights" if self.ship_weights else None
        if source:
            # A small actor holds the driver's weight file for as long as the engine lives, so that a
            # worker restarted later can still fetch it. Workers get its name, not its handle: Ray warns
            # about restartable actors whose constructor arguments hold references.
            self._weights_source = ray.remote(_WeightsSource).options(
                name=source, num_cpus=0, max_restarts=0).remote(Path(self.weights_.notop).read_bytes())
        explicit = None if self.ship_weights else self._explicit_weights()
        env = dict(self.runtime_env or {})
        env["env_vars"] = {"TF_CPP_MIN_LOG_LEVEL": "2", **env.get("env_vars", {})}
        # Named, so that operators (and tests) can find the workers with ray.get_actor.
        self.actor_names_ = [f"stylesift-{run_id}-{i}" for i in range(n)]
        worker = ray.remote(Worker)
        spec = rules.worker_spec(self.input_size, tuple(self.fingerprints_))
        self._actors = [
            worker.options(name=name, num_cpus=self.cpus_per_worker, max_restarts=self.max_retries,
                           max_task_retries=self.max_retries, runtime_env=env)
            .remote(self.fingerprints_, spec, source, explicit, self.cpus_per_worker)
            for name in self.actor_names_
        ]
        infos = [actor.info.remote() for actor in self._actors]
        ready, waiting = ray.wait(infos, num_returns=len(infos), timeout=self.start_timeout)
        if waiting:
            self.close()
            raise RayEngineError(f"only {len(ready)} of {n} workers started within {self.start_timeout:g} s "
                                 "(the cluster lacks free CPUs or memory, or nodes cannot load the network); "
                                 "ask for fewer --workers or check `ray status`")
        self.workers_ = ray.get(infos)
        for info in self.workers_:
            if info["refused"] or info["error"]:
                self.close()
                raise WorkerMismatch(info["refused"]) if info["refused"] else RayEngineError(info["error"])
        mine = versions()
        for info in self.workers_:
            differ = {k: (v, info["versions"].get(k)) for k, v in mine.items() if info["versions"].get(k) != v}
            if differ:
                warnings.warn(f"Ray worker on {info['node']} runs other package versions (driver, worker): {differ}; "
                              "install the same versions on every node", RuntimeWarning, stacklevel=2)
        return self._actors

    def _init_ray(self, ray) -> None:
        self._owns_ray = False
        if ray.is_initialized():
            return
        import logging

        options = dict(log_to_driver=False, logging_level=logging.ERROR)
        if self.address or os.environ.get("RAY_ADDRESS"):
            address = self.address or os.environ["RAY_ADDRESS"]
            try:
                _check_reachable(address)  # Ray itself retries an unreachable address for minutes
                ray.init(address=self.address, **options)
            except (OSError, RuntimeError, ValueError) as exc:
                raise RayEngineError(
                    f"cannot join the Ray cluster at {address} ({_first_line(exc)}); start it with `ray start --head` "
                    "or pass its address (--address HOST:6379). A cluster with token authentication also needs "
                    "RAY_AUTH_MODE=token and its token (RAY_AUTH_TOKEN or ~/.ray/auth_token) here.") from None
        else:
            ray.init(include_dashboard=False, **options)
            self._owns_ray = True

    def _explicit_weights(self) -> str | None:
        """The weights file the user named (argument or $STYLESIFT_WEIGHTS), for nodes to load themselves."""
        if isinstance(self.weights, (str, os.PathLike)):
            return str(Path(self.weights).expanduser().absolute())
        source = self.weights_.source
        return source.removeprefix("file:") if source.startswith("file:") else None


class _Run:
    """One extraction's bookkeeping on the driver: what is in flight, what came back, what failed."""

    def __init__(self, engine: RayEngine, st: FeatureStore, report: ExtractReport, label: str | None, total: int,
                 progress: Callable[[int, int], None] | None):
        self.engine, self.st, self.label = engine, st, label
        self.total, self.progress, self.done = total, progress, 0
        self.ledger = Ledger(st, report, label)
        self.report = report
        self.drop: tuple[str, str] | None = None  # (folder workers write segments into, run token)
        if engine.write_segments is not False:
            # Absolute: Ray workers run in a folder of their own. Only workers that see the probe write there.
            incoming = st.incoming.resolve()
            incoming.mkdir(parents=True, exist_ok=True)
            token = uuid.uuid4().hex
            (incoming / f".probe-{token}").write_text("stylesift: workers that can read this write their own segments\n")
            self.drop = (str(incoming), token)
        self.batch: list[PreparedFile] = []
        self.refill: list[PreparedFile] = []  # stored contents that lack a requested set
        self.lacking_rows, self.lacking_sets = _lacking(st, engine.feature_sets)
        self.in_flight: dict = {}  # ObjectRef → _Batch
        self.lost: list[_Batch] = []
        self.lost_reason = ""

    def feed(self, items: Iterable[PreparedFile]) -> None:
        for item in items:
            if self.lost:
                break  # a batch failed for good: stop sending, save what finishes, then report
            self._classify(item)
            self._collect(block=False)
        if not self.lost and self.batch:
            self._send()
        if not self.lost and self.refill:
            self._send(refill=True)
        while self.in_flight:
            self._collect(block=True)

    def finish(self) -> None:
        self.ledger.finish()
        if self.drop is not None:
            folder, token = Path(self.drop[0]), self.drop[1]
            for leftover in folder.glob(f"*{token}*"):  # the probe, and segments of batches lost on the way
                leftover.unlink(missing_ok=True)

    def _classify(self, item: PreparedFile) -> None:
        outcome = self.ledger.classify(item)
        if outcome is Outcome.NEW:
            self.batch.append(item)
            if len(self.batch) >= self.engine.batch_size:
                self._send()
        elif outcome is Outcome.CACHED and self.st.row_of(item.sha256) in self.lacking_rows:
            self.lacking_rows.discard(self.st.row_of(item.sha256))  # one refill per content; ticked when it is back
            self.refill.append(item)
            if len(self.refill) >= self.engine.batch_size:
                self._send(refill=True)
        elif outcome is not Outcome.DUPLICATE:  # a duplicate is counted when its content is settled
            self._tick()

    def _send(self, refill: bool = False) -> None:
        actors = self.engine._start()
        # Two batches per worker keep each busy while the last result travels back, and bound memory.
        while len(self.in_flight) >= 2 * len(actors):
            self._collect(block=True)
        if self.lost:
            return
        load = [0] * len(actors)
        for b in self.in_flight.values():
            load[b.worker] += 1
        if refill:
            batch = _Batch(self.refill, worker=int(np.argmin(load)), sets=sorted(self.lacking_sets))
            self.refill = []
        else:
            batch = _Batch(self.batch, worker=int(np.argmin(load)))
            self.batch = []
        ref = actors[batch.worker].featurize.remote([(it.sha256, str(it.path)) for it in batch.items],
                                                    drop=None if refill else self.drop, label=self.label,
                                                    sets=batch.sets)
        self.in_flight[ref] = batch

    def _collect(self, block: bool) -> None:
        if not self.in_flight:
            return
        ray = require_ray()
        ready, _ = ray.wait(list(self.in_flight), num_returns=1 if block else len(self.in_flight),
                            timeout=None if block else 0)
        for ref in ready:
            batch = self.in_flight.pop(ref)
            try:
                result = ray.get(ref)
            except WorkerMismatch:
                raise  # a restarted worker landed on a node with other weights: stop, do not mix
            except ray.exceptions.RayError as exc:
                self.lost.append(batch)
                self.lost_reason = self.lost_reason or _first_line(exc)
                continue
            self._store(batch, result)

    def _store(self, batch: _Batch, result: dict) -> None:
        if batch.sets is not None:
            self._refilled(batch, result)
            return
        if result.get("segment"):
            # Written by the worker on the shared file system (finite rows only): attach it, then record
            # the other names each content was met under.
            ok = list(result["sha256"])
            self.st.attach_segment(result["segment"])
            self.report.segments_attached += 1
            for sha in ok:
                for extra in self.ledger.paths_of(sha)[1:]:
                    self.st.update(sha, path=extra)
            self._tick(self.ledger.stored(ok))
        else:
            ok, feats, bad = split_finite(list(result["sha256"]), result["features"])
            for sha in bad:  # refused by the store: reported with the file, the run goes on
                self._tick(self.ledger.failed(sha, f"{self.ledger.paths_of(sha)[0]}: {NONFINITE}"))
            if ok:
                self.st.add(ok, feats, [self.ledger.paths_of(sha) for sha in ok], self.label)
                self._tick(self.ledger.stored(ok))
        for sha, error in result["errors"].items():
            self._tick(self.ledger.failed(sha, error))
        self.ledger.drop(batch.sha256s)  # anything the worker returned neither way
        self.st.maybe_commit()

    def _refilled(self, batch: _Batch, result: dict) -> None:
        """Add the sets a refill batch brought back to the rows that lacked them (finite rows only)."""
        shas = list(result["sha256"])
        for name, X in result["features"].items():
            good = np.isfinite(X).all(axis=1) if len(shas) else np.zeros(0, bool)
            if name != "pooled" and good.any():
                self.st.add_features(name, [sha for sha, g in zip(shas, good) if g], np.asarray(X)[good])
        path_of = {it.sha256: str(it.path) for it in batch.items}
        for sha, error in result["errors"].items():
            # The row stays as it was and lacks the set still: the next run tries the file again.
            self.report.failed.append({"path": path_of[sha], "error": error, "retried": True})
        self.report.refilled = getattr(self.report, "refilled", 0) + len(shas)
        self._tick(len(batch.items))
        self.st.maybe_commit()

    def _tick(self, files: int = 1) -> None:
        self.done += files
        if self.progress:
            self.progress(self.done, self.total)


class _WeightsSource:
    """A Ray actor body that hands out the driver's headless weight file (bytes) to workers that start."""

    def __init__(self, blob: bytes):
        self._blob = blob

    def blob(self) -> bytes:
        return self._blob


def _lacking(st: FeatureStore, feature_sets) -> tuple[set[int], set[str]]:
    """Rows of ``st`` that lack one of ``feature_sets`` besides ``pooled``, and which of those sets are lacking."""
    rows: set[int] = set()
    sets: set[str] = set()
    for name in feature_sets:
        if name != "pooled" and len(st):
            missing = np.flatnonzero(~st.has_features(name)).tolist()
            rows.update(missing)
            sets.update([name] if missing else [])
    return rows, sets


def _check_reachable(address: str, timeout: float = 10.0) -> None:
    """Raise OSError unless ``HOST:PORT`` (or ``ray://HOST:PORT``) accepts a TCP connection; other forms pass."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        return  # "auto", "local": Ray finds the cluster itself and fails fast when there is none
    with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
        pass


def _first_line(value) -> str:
    text = str(value).strip()
    return text.splitlines()[0][:300] if text else type(value).__name__
