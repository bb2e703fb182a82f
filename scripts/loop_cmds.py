"""The review loop's commands: record verdicts (`label`), ask what to label next (`suggest`), review in a browser (`review`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, List, Optional

import typer

from stylesift.cli.app import EXIT_USAGE, fail, print_json, say
from stylesift.cli.options import DEFAULT_STORE, JsonOpt, StoreOpt, WeightsOpt

ReviewerOpt = Annotated[Optional[str], typer.Option("--reviewer", help="Who gives the verdicts (default: the login name).")]


def label(
    paths: Annotated[Optional[List[Path]], typer.Argument(help="Image files and folders (searched recursively).")] = None,
    store: StoreOpt = DEFAULT_STORE,
    label_: Annotated[Optional[str], typer.Option("--label", help="The verdict for every PATH (a store label).")] = None,
    from_csv: Annotated[Optional[Path], typer.Option(
        "--from-csv", help="CSV of verdicts: `path or sha256, label` lines, or a header naming label and path/sha256.")] = None,
    reviewer: ReviewerOpt = None,
    note: Annotated[str, typer.Option("--note", help="Note stored with every verdict.")] = "",
    no_extract: Annotated[bool, typer.Option(
        "--no-extract", help="Report files the store does not hold instead of featurizing them first.")] = False,
    weights_file: WeightsOpt = None,
    json_out: JsonOpt = False,
):
    """Record verdicts collected elsewhere in the store's verdict log (all of them, or none on any error)."""
    from stylesift.featurizer.extract import list_images
    from stylesift.review.labels import LabelItem, read_label_csv, record_labels

    if bool(paths) == bool(from_csv):
        raise fail("give image PATHs with --label, or --from-csv FILE (not both)", EXIT_USAGE)
    if paths and not label_:
        raise fail("--label LABEL is needed with PATHs (the verdict for all of them)", EXIT_USAGE)
    if from_csv and label_:
        raise fail("--label goes with PATHs; a --from-csv file carries its own labels", EXIT_USAGE)
    if from_csv:
        items = read_label_csv(from_csv)
        source = f"csv:{from_csv.name}"
    else:
        items = [LabelItem(str(p), label_) for p in list_images(paths)]
        source = "label"
    result = record_labels(store, items, reviewer=reviewer, note=note, source=source, featurize=not no_extract,
                           weights=weights_file)
    if json_out:
        print_json(result.to_dict())
        return
    if result.featurized:
        say(f"featurized {result.featurized} new images into {store} first")
    counts: dict[str, int] = {}
    for v in result.recorded:
        counts[v["label"]] = counts.get(v["label"], 0) + 1
    typer.echo(f"recorded {len(result.recorded)} verdicts in {store}: "
               + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))


def suggest(
    model: Annotated[Path, typer.Argument(help="Model bundle written by `stylesift train`.")],
    store: StoreOpt = DEFAULT_STORE,
    n: Annotated[int, typer.Option("--n", min=1, help="How many images to suggest.")] = 20,
    json_out: JsonOpt = False,
):
    """List unlabelled stored images whose verdict would teach the model most (near its threshold, spread out)."""
    from stylesift.review.suggest import suggest_from_store

    result = suggest_from_store(model, store, n)
    if json_out:
        print_json(result)
        return
    if not result["suggestions"]:
        say(f"{store}: no unlabelled images to suggest; extract new images into it without --label")
        return
    typer.echo(f"{len(result['suggestions'])} of {result['unlabelled']} unlabelled images (threshold {result['threshold']:.6g}):")
    for s in result["suggestions"]:
        typer.echo(f"{s['score']:+.4f}  {s['sha256'][:12]}  {s['path']}")
