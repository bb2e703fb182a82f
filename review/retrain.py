"""Background retraining for a review round: one retrain at a time, written to a new numbered model file.

**Retraining never replaces a file.** A retrained model is written next to the old one with the next
free number (``model-002.ssmodel``, :func:`numbered_model_path`), loaded back through the bundle checks
(:func:`train_next`), and only then put in use by the round; :class:`Retrainer` runs that in a
thread and keeps the status the review page shows.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from pathlib import Path

from stylesift.atomic import remove_stale_temps


def numbered_model_path(model: Path) -> Path:
    """The next free ``STEM-NNN.SUFFIX`` beside ``model`` (``model.ssmodel`` -> ``model-002.ssmodel``).

    A model already numbered (``model-002``) continues its own series (``model-003``).
    """
    model = Path(model)
    stem, suffix = model.stem, model.suffix
    base, _, num = stem.rpartition("-")
    if base and num.isdigit() and len(num) == 3:
        stem, n = base, int(num) + 1
    else:
        n = 2
    while (model.parent / f"{stem}-{n:03d}{suffix}").exists():
        n += 1
    return model.parent / f"{stem}-{n:03d}{suffix}"


def numbered_models(model: Path) -> list[tuple[int, Path]]:
    """The files of ``model``'s numbered series beside it, as ``(number, path)`` in number order.

    The series of ``model.ssmodel`` (or of ``model-002.ssmodel``) is ``model-NNN.ssmodel``, the names
    :func:`numbered_model_path` gives; the unnumbered ``model.ssmodel`` counts as number 1 when it
    exists. ``stylesift serve --watch-model`` follows it to the newest.
    """
    model = Path(model)
    stem, suffix = model.stem, model.suffix
    base, _, num = stem.rpartition("-")
    if base and num.isdigit() and len(num) == 3:
        stem = base
    pattern = re.compile(re.escape(stem) + r"-(\d{3,})" + re.escape(suffix))
    found = [(1, model.parent / f"{stem}{suffix}")] if (model.parent / f"{stem}{suffix}").is_file() else []
    try:
        entries = list(model.parent.iterdir())
    except OSError:
        entries = []
    found += [(int(m.group(1)), e) for e in entries if (m := pattern.fullmatch(e.name)) and e.is_file()]
    return sorted(found)


def series_number(model: Path) -> int:
    """``model``'s number in its series (:func:`numbered_models`): NNN of ``STEM-NNN.SUFFIX``, else 1."""
    _, _, num = Path(model).stem.rpartition("-")
    return int(num) if num.isdigit() and len(num) >= 3 else 1


def retrain_method(method: str, label_counts: dict[str, int], negative_label: str) -> str:
    """The method a review retrain uses: ``pu`` while the team has given only positive verdicts.

    With no rejection yet (no row of ``negative_label``) a positives-only or two-class model learns
    best from the positives against the unlabelled feed (``pu``, measured in docs/classifiers.md);
    once rejections exist, the method asked for. ``pu`` needs unlabelled rows: without any the method
    asked for stays (a one-class model still trains; a two-class one says what it needs).
    """
    if label_counts.get(negative_label, 0) == 0 and label_counts.get("", 0) > 0 and method != "pu":
        return "pu"
    return method


def needs_negative(method: str) -> bool:
    """Whether ``method`` cannot train without counter-examples."""
    from stylesift.classifiers.methods import get_method

    return get_method(method).needs_negatives


def train_next(store: Path, old_model: Path, old_bundle, *, positive: str, negative: str | None, method: str,
               fingerprint: dict | None):
    """Train ``method`` on ``store``'s labels (the old model's feature set) and write it to the next numbered file.

    Returns ``(path, bundle)``: the file written and the bundle loaded back from it through the bundle
    checks against ``fingerprint`` (the store's).
    """
    from stylesift.classifiers.bundle import Bundle
    from stylesift.classifiers.feature_sets import bundle_set
    from stylesift.classifiers.train import train

    bundle = train(store, positive, negative, method, n_jobs=1, feature_set=bundle_set(old_bundle.summary))
    remove_stale_temps(Path(old_model).parent, ".ssmodel")  # left by a retrain killed mid-write
    path = numbered_model_path(old_model)
    bundle.save(path)
    return path, Bundle.load(path, fingerprint=fingerprint)


class Retrainer:
    """Runs retrains in a background thread, one at a time.

    Parameters
    ----------
    lock : threading lock
        The owner's lock; ``status`` changes under it.

    ``status`` is None before the first retrain, then ``{"started"}`` while one runs, with ``"done"``
    and ``"file"`` added when it succeeded, or ``{"started", "error"}`` when it failed (the old model
    stays in use). ``verdicts_at_last_train`` is the owner's verdict count when the last one started.
    """

    def __init__(self, lock):
        self._lock = lock
        self.status: dict | None = None
        self.verdicts_at_last_train = 0

    @property
    def running(self) -> bool:
        return bool(self.status) and "error" not in self.status and "done" not in self.status

    def due(self, verdicts: int, every: int) -> bool:
        """Whether ``every`` (> 0) new verdicts arrived since the last retrain started."""
        return every > 0 and verdicts - self.verdicts_at_last_train >= every

    def start(self, job: Callable[[], str], verdicts: int) -> bool:
        """Run ``job`` (returns the new model's file name) in the background; False when one is running already."""
        with self._lock:
            if self.running:
                return False
            self.status = {"started": time.time()}
            self.verdicts_at_last_train = verdicts
        threading.Thread(target=self._run, args=(job,), name="stylesift-retrain", daemon=True).start()
        return True

    def _run(self, job: Callable[[], str]) -> None:
        try:
            file = job()
            with self._lock:
                self.status = {"started": self.status["started"], "done": time.time(), "file": file}
        except Exception as exc:  # noqa: BLE001 - shown on the page; the old model stays in use
            with self._lock:
                self.status = {"started": (self.status or {}).get("started"), "error": str(exc)}
