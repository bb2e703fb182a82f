"""The ``demo`` command: the whole pipeline on built-in images."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from stylesift.cli.app import EXIT_INTERRUPTED, err, print_json, progress_bar, say
from stylesift.cli.options import JsonOpt, WeightsOpt


def demo(
    out: Annotated[Path, typer.Option(
        "--out", help="Folder for the demo's images, store, model, scores, report and plots.")] = Path("artifacts/demo"),
    per_class: Annotated[int, typer.Option("--per-class", min=8, help="Training images per class.")] = 40,
    new: Annotated[int, typer.Option("--new", min=2, help="Held-back images per class to score.")] = 16,
    seed: Annotated[int, typer.Option("--seed", help="Random seed of the crops and renders.")] = 0,
    folds: Annotated[int, typer.Option("--folds", min=2, help="Stratified folds of the comparison.")] = 5,
    weights_file: WeightsOpt = None,
    json_out: JsonOpt = False,
):
    """Run the whole pipeline on built-in images: extract, compare, train, score new uploads, write the report."""
    from stylesift.review.demo import run_demo

    tell = say if json_out else typer.echo

    @contextmanager
    def bar(description):
        with progress_bar(description, unit="fits" if description.startswith("comparing") else "files") as update:
            yield update

    try:
        result = run_demo(out, n_train=per_class, n_new=new, seed=seed, folds=folds, weights=weights_file, say=tell,
                          progress=bar)
    except KeyboardInterrupt:
        err.print(f"interrupted; run `stylesift demo` again to resume (features already extracted are kept in {out})")
        raise typer.Exit(EXIT_INTERRUPTED)
    if json_out:
        print_json(result.to_dict())
        return
    typer.echo("")
    typer.echo(_compare_table(result.compare))
    typer.echo("")
    hits = result.hits
    typer.echo(f"scored {result.report.scored} new uploads ({result.new_counts.get('quality', 0)} quality, "
               f"{result.new_counts.get('ordinary', 0)} ordinary, from photos and renders never trained on): "
               f"{result.method} selected {result.report.selected} "
               f"({hits.get('quality', 0)} quality, {hits.get('ordinary', 0)} ordinary) at threshold {result.threshold:.3g}; "
               f"{result.report.failed} unreadable")
    typer.echo(f"report:  {result.report.path}   <- open this in a browser")
    typer.echo(f"plots:   {', '.join(str(p) for p in result.plots) or '(none)'}")
    typer.echo(f"scores:  {result.scores}")
    typer.echo(f"model:   {result.model}")
    typer.echo(f"store:   {result.store}")
    typer.echo(f"total:   {sum(result.steps.values()):.1f} s")
    typer.echo(f"review the picks and record verdicts:  {result.review_command}")


def _compare_table(compare: dict) -> str:
    """The per-method metrics of a compare result as an aligned text table."""
    methods = compare.get("methods", {})
    columns = [("accuracy", "accuracy"), ("roc_auc", "ROC AUC"), ("average_precision", "avg prec"),
               ("fit_seconds", "fit s")]
    lines = [f"{'method':<22}" + "".join(f"{title:>12}" for _, title in columns)]
    for name, metrics in methods.items():
        cells = []
        for key, _ in columns:
            value = metrics.get(key)
            mean = value.get("mean") if isinstance(value, dict) else value
            cells.append(f"{mean:>12.3f}" if isinstance(mean, (int, float)) else f"{'—':>12}")
        lines.append(f"{name:<22}" + "".join(cells))
    return "\n".join(lines)
