"""The per-file rules of one extraction, shared by the local and the Ray engine.

Every file an extraction meets ends in exactly one :class:`Outcome`. The engines differ only in
where pixels become features (threads here, actors on a cluster); what a file *means* for the
store and the report is decided here, once.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np

from stylesift.featurizer.store import Failure, FeatureStore


@dataclass
class ExtractReport:
    """What one extraction run did. ``failed`` holds ``{"path", "error"}`` dicts."""

    new: int = 0
    cached: int = 0
    failed: list[dict] = field(default_factory=list)
    unchanged_failures: int = 0  # failed before, file unchanged since, so not retried
    rows: int = 0
    seconds: float = 0.0
    interrupted: bool = False
    store: str = ""
    sha256_by_path: dict[str, str] = field(default_factory=dict)  # every path that has a row now
    skipped: list[dict] = field(default_factory=list)  # {"path", "reason"}: seen by a folder walk, not tried
    runtime: str | None = None  # what computed the new features (None when no network ran)
    precision: str = "float32"
    segments_attached: int = 0  # Ray: batches that workers wrote as segments on the shared file system

    @property
    def images_per_second(self) -> float:
        return self.new / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict:
        return {"new": self.new, "cached": self.cached, "failed": self.failed,
                "unchanged_failures": self.unchanged_failures, "skipped": len(self.skipped), "rows": self.rows,
                "seconds": round(self.seconds, 3), "images_per_second": round(self.images_per_second, 2),
                "interrupted": self.interrupted, "store": self.store, "precision": self.precision,
                "runtime": self.runtime, "segments_attached": self.segments_attached}


@dataclass
class PreparedFile:
    """One file read, hashed and (unless its content is already known) decoded; or the reason it failed."""

    path: Path
    size: int = -1
    mtime: float = 0.0
    sha256: str | None = None
    image: np.ndarray | None = None
    tiles: np.ndarray | None = None  # the ``detail`` set's native-resolution tiles, when asked for
    error: str | None = None


class Outcome(enum.Enum):
    """What one file came to in an extraction."""

    NEW = "new"              # its content goes to the network; the first file of that content
    CACHED = "cached"        # the store already holds its content: only its path (and label) recorded
    DUPLICATE = "duplicate"  # same bytes as a file met earlier in this run: one row for both
    FAILED = "failed"        # could not be read or decoded: recorded as a failure, retried once changed
    UNCHANGED = "unchanged"  # failed before and unchanged since: not retried


class Ledger:
    """Bookkeeping of one extraction: classifies files, then settles them when their features are stored.

    Parameters
    ----------
    store : FeatureStore
        Open for writing; receives path/label updates, new rows (through the engine) and failures.
    report : ExtractReport
        Filled in as files are classified and settled.
    label : str or None
        Label given to the files of this run.
    """

    def __init__(self, store: FeatureStore, report: ExtractReport, label: str | None):
        self.store, self.report, self.label = store, report, label
        self.known_failures = {f.path: f for f in store.failures}
        self.pending: dict[str, list[PreparedFile]] = {}  # content waiting for features → every file holding it
        self._failures: list[Failure] = []
        self._cleared: list[str] = []

    def skip(self, path: Path) -> bool:
        """Whether ``path`` failed before and is unchanged since (so is neither read nor decoded)."""
        return failure_unchanged(path, self.known_failures.get(str(path)))

    def classify(self, item: PreparedFile) -> Outcome:
        """Decide what ``item`` is; for ``NEW`` the caller sends it to the network, then calls :meth:`stored`."""
        key = str(item.path)
        if item.error == "unchanged":
            self.report.unchanged_failures += 1
            self.report.failed.append({"path": key, "error": self.known_failures[key].reason, "retried": False})
            return Outcome.UNCHANGED
        if item.error is not None:
            self._fail(item, item.error)
            return Outcome.FAILED
        if self.store.row_of(item.sha256) is not None:
            self.store.update(item.sha256, path=key, label=self.label)
            self.report.cached += 1
            self._succeed(item)
            return Outcome.CACHED
        if item.sha256 in self.pending:
            # Settled with the first file of this content; kept without its pixels, which that file's row
            # already has (10,000 copies of one new image would otherwise all stay decoded until settled).
            item.image = item.tiles = None
            self.pending[item.sha256].append(item)
            return Outcome.DUPLICATE
        self.pending[item.sha256] = [item]
        return Outcome.NEW

    def paths_of(self, sha256: str) -> list[str]:
        """Every path met so far holding this pending content (the new row's path list)."""
        return [str(it.path) for it in self.pending[sha256]]

    def stored(self, sha256s: Iterable[str]) -> int:
        """Settle contents whose rows were just added; returns how many files that settles."""
        settled = 0
        for sha in sha256s:
            group = self.pending.pop(sha)
            self.report.new += 1
            self.report.cached += len(group) - 1
            for item in group:
                self._succeed(item)
            settled += len(group)
        return settled

    def failed(self, sha256: str, error: str) -> int:
        """Settle a pending content that the network could not featurize; returns how many files failed."""
        group = self.pending.pop(sha256)
        first = str(group[0].path)
        for item in group:
            # Equal bytes fail equally; the reason is reworded for each name, as if each were read alone.
            self._fail(item, error if str(item.path) == first else error.replace(first, str(item.path), 1))
        return len(group)

    def drop(self, sha256s: Iterable[str]) -> None:
        """Forget pending contents that will not be settled (their batch was lost)."""
        for sha in sha256s:
            self.pending.pop(sha, None)

    def finish(self) -> None:
        """Write staged path/label updates and this run's failures (and forget files that now succeeded)."""
        self.store.flush()
        self.store.set_failures(self._failures, clear=self._cleared)

    def _succeed(self, item: PreparedFile) -> None:
        self._cleared.append(str(item.path))
        self.report.sha256_by_path[str(item.path)] = item.sha256

    def _fail(self, item: PreparedFile, reason: str) -> None:
        self._failures.append(Failure(str(item.path), item.size, item.mtime, reason))
        self.report.failed.append({"path": str(item.path), "error": reason, "retried": True})


def failure_unchanged(path: Path, failure: Failure | None) -> bool:
    """Whether ``path`` failed before (``failure``) and is unchanged since, so trying it again is pointless."""
    if failure is None:
        return False
    try:
        stat = path.stat()
    except OSError:
        return failure.size == -1
    return stat.st_size == failure.size and stat.st_mtime == failure.mtime
