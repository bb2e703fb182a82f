"""The ``score`` command: score images with a model, select the picks, write the CSV and the contact sheet."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from stylesift.cli.app import (
    EXIT_INTERRUPTED,
    EXIT_SOME_FAILED,
    EXIT_USAGE,
    err,
    fail,
    print_json,
    printable,
    progress_bar,
    say,
    use_decode_memory,
)
from stylesift.cli.options import (
    BACKBONE_HELP,
    DEDUPE_THRESHOLD,
    DEFAULT_STORE,
    DecodeMemoryOpt,
    ModelArg,
    PathsArg,
    Runtime,
    RuntimeOpt,
    VerboseOpt,
    WeightsOpt,
)


def score(
    model: ModelArg,
    paths: PathsArg,
    store: Annotated[Path, typer.Option("--store", help="Feature store new images are featurized into (cache).")] = DEFAULT_STORE,
    threshold: Annotated[Optional[float], typer.Option(
        "--threshold", help="Select scores ≥ T (default: the model's threshold).")] = None,
    top_k: Annotated[Optional[int], typer.Option("--top-k", min=0, help="Select the K highest scores.")] = None,
    top_fraction: Annotated[Optional[float], typer.Option(
        "--top-fraction", min=0.0, max=1.0, help="Select the highest fraction F.")] = None,
    dedupe: Annotated[float, typer.Option(
        "--dedupe", min=0.01, max=1.0, metavar="THRESHOLD",
        help="Group near-duplicates (crops, recompressions, resizes of one photo): feature cosine similarity ≥ THRESHOLD, "
             "or perceptual hashes at most 8 bits apart; a group is one pick and counts once toward --top-k.")] = DEDUPE_THRESHOLD,
    no_dedupe: Annotated[bool, typer.Option(
        "--no-dedupe", help="Do not group near-duplicates: every image is its own pick.")] = False,
    no_history: Annotated[bool, typer.Option(
        "--no-history", help="Do not look for earlier stored images with a verdict that an upload repeats.")] = False,
    keep_seen: Annotated[bool, typer.Option(
        "--keep-seen", help="Let uploads seen before (near-duplicates of a judged stored image) be picked too.")] = False,
    out: Annotated[Optional[Path], typer.Option(
        "--out", help="CSV: path, sha256, score, selected, error, path_b64, group, group_size, seen_label, "
                      "seen_sha256.")] = None,
    report: Annotated[Optional[Path], typer.Option(
        "--report", help="HTML contact sheet: picks with thumbnails, borderline band, failures.")] = None,
    runtime: RuntimeOpt = Runtime.auto,
    backbone: Annotated[Optional[Path], typer.Option(
        "--backbone", help=BACKBONE_HELP + " Default: the file the model recorded.")] = None,
    weights_file: WeightsOpt = None,
    verbose: VerboseOpt = False,
    decode_memory: DecodeMemoryOpt = None,
    json_out: Annotated[bool, typer.Option(
        "--json", help="Print a JSON list of {path, sha256, score, selected, group, group_size, seen_before} on "
                       "stdout.")] = False,
):
    """Score images with a model: one row per image (higher score = more like the positives)."""
    from stylesift.classifiers.predict import Predictor

    use_decode_memory(decode_memory)

    if sum(x is not None for x in (threshold, top_k, top_fraction)) > 1:
        raise fail("choose one of --threshold, --top-k and --top-fraction", EXIT_USAGE)
    predictor = Predictor.load(model, store, weights=weights_file, runtime=runtime.value, backbone_file=backbone)
    with progress_bar("scoring", enabled=not json_out) as bar:
        result = predictor.score(paths, threshold=threshold, top_k=top_k, top_fraction=top_fraction, progress=bar,
                                 dedupe=None if no_dedupe else dedupe, history=not no_history, keep_seen=keep_seen)
    if out:
        result.write_csv(out)
    if report:
        from stylesift.review.report import write_score_report

        sheet = write_score_report(report, result, predictor.bundle, store, model=model)
        say(f"report: {sheet.path} ({sheet.selected} selected, {sheet.borderline} borderline, {sheet.failed} failed)")
    if json_out:
        print_json(result.rows)
    else:
        for r in sorted(result.rows, key=lambda r: -r["score"]):
            seen = r.get("seen_before")
            note = (f"  (seen before: {seen['label']} on {seen['date']}, {printable(seen['path'] or seen['sha256'])}, "
                    f"similarity {seen['similarity']:.3f})") if seen else ""
            typer.echo(f"{r['score']:+.4f}  {'selected' if r['selected'] else '        '}  {printable(r['path'])}{note}")
        rule = result.selection
        how = f"score ≥ {rule['threshold']:.6g}" if rule["rule"] == "threshold" else f"top {rule['k']}"
        groups = f" in {rule['dedupe_groups']} near-duplicate groups" if "dedupe_groups" in rule else ""
        seen = rule.get("history", {}).get("seen", 0)
        seen = f"; {seen} seen before{' (kept)' if keep_seen else ', not picked'}" if seen else ""
        typer.echo(f"{sum(r['selected'] for r in result.rows)} of {len(result.rows)}{groups} selected ({how}){seen}"
                   + (f"; {len(result.failed)} failed" if result.failed else "") + (f"; written to {out}" if out else ""))
    for f in result.failed:
        say(f"  failed: {f['error']}")
    if verbose:
        for s in result.skipped:
            say(f"  skipped: {s['path']}: {s['reason']}")
    elif result.skipped and not json_out:
        say(f"  {len(result.skipped)} files skipped by the folder walk (not images by name, hidden, or a symlinked "
            "folder); --verbose names them")
    if result.interrupted:
        err.print("interrupted: the images featurized so far are cached in the store; run again to finish.")
        raise typer.Exit(EXIT_INTERRUPTED)
    if result.failed:
        raise typer.Exit(EXIT_SOME_FAILED)
