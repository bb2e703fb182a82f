"""``stylesift demo``: the whole pipeline, end to end, on images that need nothing from the user.

Steps: write the demo images (:mod:`stylesift.review.demo_data`), extract their features into a store,
compare every method on the training images, train the default model, score a held-back mix of
new uploads, and write the scores, the contact sheet and the ROC/PR plots. Everything lands under
one folder (``artifacts/demo`` by default); running it again reuses the cached features.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from stylesift.classifiers.grouping import DEFAULT_THRESHOLD as DEDUPE_THRESHOLD
from stylesift.errors import StylesiftError
from stylesift.review.demo_data import DemoSet, make_demo_set
from stylesift.review.report import ReportSummary, write_score_report

DEFAULT_ROOT = Path("artifacts/demo")
POSITIVE, NEGATIVE = "quality", "ordinary"


@dataclass
class DemoResult:
    """Where the demo wrote its outputs, what ``compare`` measured, and how long each step took (seconds)."""

    root: Path
    images: DemoSet
    store: Path
    model: Path
    scores: Path
    report: ReportSummary
    plots: list[Path]
    compare: dict
    method: str
    threshold: float
    new_counts: dict[str, int] = field(default_factory=dict)  # {"quality", "ordinary", "failed"} of the scored mix
    hits: dict[str, int] = field(default_factory=dict)  # selected quality / selected ordinary
    steps: dict[str, float] = field(default_factory=dict)

    @property
    def review_command(self) -> str:
        """The command that opens the review page on the demo's picks (near-duplicate crops grouped)."""
        import shlex

        folders = sorted({str(Path(p).parent) for p in self.images.new}) or [str(self.root / "images")]
        return " ".join(["stylesift", "review", shlex.quote(str(self.model)), *map(shlex.quote, folders),
                         "--store", shlex.quote(str(self.store))])

    def to_dict(self) -> dict:
        return {"root": str(self.root), "store": str(self.store), "model": str(self.model),
                "review_command": self.review_command,
                "scores": str(self.scores), "report": str(self.report.path), "plots": [str(p) for p in self.plots],
                "method": self.method, "threshold": self.threshold, "compare": self.compare,
                "scored": self.report.scored, "selected": self.report.selected, "failed": self.report.failed,
                "new": self.new_counts, "hits": self.hits, "seconds": {k: round(v, 2) for k, v in self.steps.items()},
                "images": {"train_quality": len(self.images.train_quality),
                           "train_ordinary": len(self.images.train_ordinary), "new": len(self.images.new),
                           "photo_sources": self.images.sources}}


def run_demo(root: str | os.PathLike = DEFAULT_ROOT, *, n_train: int = 40, n_new: int = 16, seed: int = 0,
             folds: int = 5, method: str = "two-class", weights=None, featurizer=None,
             say: Callable[[str], None] = lambda message: None,
             progress: Callable[[str], object] | None = None) -> DemoResult:
    """Run the demo pipeline under ``root`` and return where everything is.

    Parameters
    ----------
    root : path
        Output folder: ``images/``, ``features.h5``, ``model.ssmodel``, ``scores.csv``,
        ``report.html`` and ``plots/``.
    n_train, n_new : int
        Training images per class, and held-back images per class to score.
    folds : int
        Cross-validation folds for ``compare``.
    method : str
        The method ``train`` fits for scoring.
    weights, featurizer : optional
        Explicit weights file, or a ready :class:`stylesift.featurizer.extract.Featurizer` to share.
    say : callable
        Receives one line per finished step (the CLI prints them).
    progress : callable, optional
        ``progress(description)`` returns a context manager yielding a ``callback(done, total)``
        (the CLI's progress bar); None for none.
    """
    from stylesift.featurizer.extract import Featurizer

    root = Path(root)
    steps: dict[str, float] = {}
    clock = time.perf_counter()

    def step(name: str, message: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        steps[name] = now - clock
        clock = now
        say(f"{message} ({steps[name]:.1f} s)")

    images = make_demo_set(root / "images", n_train=n_train, n_new=n_new, seed=seed)
    step("images", f"wrote {len(images.train_quality)} quality photos (crops of {len(images.train_photos)} "
                   f"photos shipped with installed packages) and {len(images.train_ordinary)} rendered snapshots "
                   f"to {root / 'images'}")

    store = root / "features.h5"
    featurizer = featurizer if featurizer is not None else Featurizer(weights)
    for label, paths in ((POSITIVE, images.train_quality), (NEGATIVE, images.train_ordinary)):
        with _maybe(progress, f"extracting {label}") as bar:
            report = featurizer.extract(paths, store, label=label, progress=bar)
        if report.failed:
            raise StylesiftError(f"{store}: demo images failed to featurize: {report.failed[:3]}")
    step("extract", f"extracted features into {store}")

    from stylesift.classifiers.compare import compare
    from stylesift.classifiers.plots import save_comparison_plots
    from stylesift.classifiers.predict import Predictor
    from stylesift.classifiers.train import load_labelled, train

    data = load_labelled(store, POSITIVE, NEGATIVE)
    with _maybe(progress, "comparing (method × fold)") as bar:
        comparison = compare(data.X, data.positive, folds=folds, progress=bar)
    plots = save_comparison_plots(comparison, root / "plots",
                                  f"demo: {int(data.positive.sum())} {POSITIVE} vs {int((~data.positive).sum())} {NEGATIVE}")
    step("compare", f"compared {len(comparison.folds)} methods on identical {comparison.n_folds}-fold splits")

    bundle = train(store, POSITIVE, NEGATIVE, method)
    model = bundle.save(root / "model.ssmodel")
    params = ", ".join(f"{k.split('__')[-1]}={v}" for k, v in bundle.summary["params"].items())
    step("train", f"trained {method} ({params}) -> {model}")

    predictor = Predictor(bundle, store, featurizer=featurizer)
    with _maybe(progress, "scoring new uploads") as bar:
        # Reposts of one photo (the demo's crops) are one pick: grouped as `stylesift score` does by default.
        scored = predictor.score(images.new, progress=bar, dedupe=DEDUPE_THRESHOLD)
    scores = scored.write_csv(root / "scores.csv")
    report = write_score_report(root / "report.html", scored, bundle, store, model=model,
                                title="stylesift demo: picks among new uploads")
    step("score", f"scored {len(scored.rows)} new uploads, wrote {scores} and {report.path}")

    truth = {str(p.resolve()): "quality" for p in images.new_quality} | {str(p.resolve()): "ordinary" for p in images.new_ordinary}
    hits = {"quality": 0, "ordinary": 0}
    for row in scored.rows:
        if row["selected"] and str(row["path"]) in truth:
            hits[truth[str(row["path"])]] += 1
    return DemoResult(root=root, images=images, store=store, model=model, scores=scores, report=report, plots=plots,
                      compare=comparison.to_dict(), method=method, threshold=float(bundle.threshold),
                      new_counts={"quality": len(images.new_quality), "ordinary": len(images.new_ordinary),
                                  "failed": len(scored.failed)},
                      hits=hits, steps=steps)


def _maybe(progress, description: str):
    from contextlib import nullcontext

    return progress(description) if progress is not None else nullcontext(None)
