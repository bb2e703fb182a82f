"""Commands over stored features and model bundles: compare, train, tune, score."""

from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional

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
from stylesift.cli.featurizer_cmds import BACKBONE_HELP, RUNTIME_HELP, Runtime
from stylesift.cli.options import (
    DEFAULT_STORE,
    DecodeMemoryOpt,
    JsonOpt,
    PositiveOpt,
    RecallOpt,
    StoreOpt,
    VerboseOpt,
    WeightsOpt,
)
from stylesift.review.dedupe import DEFAULT_THRESHOLD as DEDUPE_THRESHOLD

FEATURES_HELP = ("Comma-separated feature sets to compare on identical folds (pooled, style, or sets joined by '+'); "
                 "with several, their concatenation is compared too and the winner named.")


def _table(title: str, columns: list[str], rows: list[list[str]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for i, c in enumerate(columns):
        table.add_column(c, justify="left" if i == 0 else "right")
    for r in rows:
        table.add_row(*r)
    Console(width=max(100, os.get_terminal_size(0).columns if os.isatty(0) else 120)).print(table)


def compare(
    positive: PositiveOpt,
    store: StoreOpt = DEFAULT_STORE,
    negative: str = typer.Option(..., "--negative", help="Store label of the images to leave out."),
    folds: int = typer.Option(5, "--folds", min=2, help="Stratified folds, identical for every method."),
    methods: Optional[str] = typer.Option(None, "--methods", help="Comma-separated subset of methods (default: all)."),
    target_recall: RecallOpt = 0.9,
    plots: Optional[Path] = typer.Option(None, "--plots", help="Folder for roc.png and precision-recall.png."),
    features: Optional[str] = typer.Option(None, "--features", help=FEATURES_HELP),
    json_out: JsonOpt = False,
):
    """Run every method on the same folds: accuracy, ROC AUC, average precision, precision@5%, fit time."""
    from stylesift.classifiers.compare import compare as run_compare
    from stylesift.classifiers.train import load_labelled

    if features is not None:
        return _compare_sets(positive, store, negative, folds, methods, target_recall, plots, features, json_out)
    data = load_labelled(store, positive, negative)
    with progress_bar("comparing (method × fold)", enabled=not json_out, unit="fits") as bar:
        result = run_compare(data.X, data.positive, folds=folds, target_recall=target_recall, progress=bar,
                             methods=[m.strip() for m in methods.split(",")] if methods else None)
    out = result.to_dict()
    out.update(store=str(store), positive=positive, negative=negative)
    if plots:
        from stylesift.classifiers.plots import save_comparison_plots

        out["plots"] = [str(p) for p in save_comparison_plots(result, plots, f"{store.name}: {positive} vs {negative}")]
    if json_out:
        print_json(out)
        return
    rows = _method_rows(out)
    _table(f"{store}: {out['positives']} {positive} vs {out['negatives']} {negative}, {out['folds']} folds "
           f"(mean ± std; accuracy, recall, specificity at each method's own threshold)",
           ["method", "accuracy", "ROC AUC", "avg precision", "precision@5%", "recall", "specificity", "fit s"], rows)
    for p in out.get("plots", []):
        typer.echo(f"plot: {p}")


def train(
    positive: PositiveOpt,
    store: StoreOpt = DEFAULT_STORE,
    negative: Optional[str] = typer.Option(None, "--negative", help="Store label of counter-examples (needed by two-class and head)."),
    method: str = typer.Option("two-class", "--method",
                               help="two-class | one-class | head | nearest-positives | two-class-default | one-class-default"),
    out: Path = typer.Option(..., "--out", help="Model bundle to write, e.g. artifacts/model.ssmodel."),
    target_recall: RecallOpt = 0.9,
    features: str = typer.Option("pooled", "--features", help="The one feature set to learn from: pooled, style, or "
                                 "sets joined by '+' (pooled+style); the model records it and `score` computes it."),
    json_out: JsonOpt = False,
):
    """Train a model from the store's labelled features and save it as one bundle file."""
    from stylesift.classifiers.train import train as run_train

    with err.status(f"training {method} on {features}"):
        bundle = run_train(store, positive, negative, method, target_recall=target_recall, feature_set=features)
    bundle.save(out)
    s = bundle.summary
    if json_out:
        print_json({"model": str(out), "threshold": bundle.threshold, "fingerprint_id": bundle.fingerprint_id, **s})
        return
    typer.echo(f"{out}: {method} on {s['positives']} {positive}" + (f" / {s['negatives']} {negative}" if negative else "")
               + f" ({s['fit_on']}), fit in {s['fit_seconds']:.2f} s")
    typer.echo("parameters: " + ", ".join(f"{k.split('__')[-1]}={v}" for k, v in s["params"].items()))
    if "cv" in s:
        typer.echo("search: " + ", ".join(f"{k} {v}" for k, v in s["cv"].items()) + f" ({s['search']['folds']}-fold CV)")
    if "validation" in s:
        v = s["validation"]
        auc = f"ROC AUC {v['roc_auc']:.4f}, " if v["roc_auc"] is not None else ""
        typer.echo(f"held-out validation: {auc}recall {v['recall']:.3f} at the threshold (target {v['target_recall']})")
    typer.echo(f"threshold: {bundle.threshold:.6g}")
    for note in s["notes"]:
        say(f"note: {note}")


def tune(
    positive: PositiveOpt,
    store: StoreOpt = DEFAULT_STORE,
    negative: Optional[str] = typer.Option(None, "--negative", help="Store label of counter-examples, used only to validate."),
    target_recall: RecallOpt = 0.9,
    plot: Optional[Path] = typer.Option(None, "--plot", help="PNG with validation ROC and precision-recall curves and the grid."),
    json_out: JsonOpt = False,
):
    """The one-class SVM search alone: gamma × nu × preprocessing, ranked by validation ROC AUC."""
    from stylesift.classifiers.train import tune as run_tune

    with err.status("searching gamma × nu (fits on positives only)"):
        result = run_tune(store, positive, negative, target_recall=target_recall)
    out = result.to_dict()
    if plot:
        from stylesift.classifiers.plots import save_tune_plot

        out["plot"] = str(save_tune_plot(result, plot, f"{store.name}: {positive}" + (f" vs {negative}" if negative else "")))
    if json_out:
        print_json(out)
        return
    if out["candidates"]:
        best = result.tuned.search_["best"]
        rows = [[("★ " if i == best else "") + str(i), c["params"]["normalize"], c["params"]["pca"], f"{c['params']['gamma']:g}",
                 f"{c['params']['nu']:g}", f"{c['roc_auc']:.4f} ± {c['roc_auc_std']:.4f}"]
                for i, c in enumerate(out["candidates"])]
        _table(f"one-class grid ({out['folds']} folds; row 0 = article default)",
               ["#", "normalize", "pca", "gamma", "nu", "ROC AUC"], rows)
    b, v, d = out["best"], out["validation"], out["article_default"]
    typer.echo("winner: " + ", ".join(f"{k.split('__')[-1]}={val}" for k, val in b.items())
               + (f"; validation ROC AUC {v['roc_auc']:.4f}" if v["roc_auc"] is not None else ""))
    typer.echo(f"threshold {out['threshold']:.6g}: recall {v['recall']:.3f} on held-out positives (target {target_recall})")
    if d["roc_auc"] is not None:
        typer.echo(f"article default (PCA 512 whitened, gamma 0.011, nu 0.08): validation ROC AUC {d['roc_auc']:.4f}")
    for note in out["notes"]:
        say(f"note: {note}")
    if plot:
        typer.echo(f"plot: {out['plot']}")


def score(
    model: Path = typer.Argument(..., help="Model bundle written by `stylesift train`."),
    paths: List[Path] = typer.Argument(..., help="Image files and folders (searched recursively)."),
    store: Path = typer.Option(DEFAULT_STORE, "--store", help="Feature store new images are featurized into (cache)."),
    threshold: Optional[float] = typer.Option(None, "--threshold", help="Select scores ≥ T (default: the model's threshold)."),
    top_k: Optional[int] = typer.Option(None, "--top-k", min=0, help="Select the K highest scores."),
    top_fraction: Optional[float] = typer.Option(None, "--top-fraction", min=0.0, max=1.0, help="Select the highest fraction F."),
    dedupe: float = typer.Option(DEDUPE_THRESHOLD, "--dedupe", min=0.01, max=1.0, metavar="THRESHOLD",
                                 help="Group near-duplicates (crops, recompressions, resizes of one photo): feature cosine "
                                      "similarity ≥ THRESHOLD, or perceptual hashes at most 8 bits apart; a group is one "
                                      "pick and counts once toward --top-k."),
    no_dedupe: bool = typer.Option(False, "--no-dedupe", help="Do not group near-duplicates: every image is its own pick."),
    out: Optional[Path] = typer.Option(None, "--out", help="CSV: path, sha256, score, selected, error, path_b64, group, group_size."),
    report: Optional[Path] = typer.Option(None, "--report", help="HTML contact sheet: picks with thumbnails, borderline band, failures."),
    runtime: Runtime = typer.Option(Runtime.auto, "--runtime", help=RUNTIME_HELP),
    backbone: Optional[Path] = typer.Option(None, "--backbone", help=BACKBONE_HELP + " Default: the file the model recorded."),
    weights_file: WeightsOpt = None,
    verbose: VerboseOpt = False,
    decode_memory: DecodeMemoryOpt = None,
    json_out: bool = typer.Option(False, "--json", help="Print a JSON list of {path, sha256, score, selected, group, group_size} on stdout."),
):
    """Score images with a model: one row per image (higher score = more like the positives)."""
    from stylesift.classifiers.predict import Predictor

    use_decode_memory(decode_memory)

    if sum(x is not None for x in (threshold, top_k, top_fraction)) > 1:
        raise fail("choose one of --threshold, --top-k and --top-fraction", EXIT_USAGE)
    predictor = Predictor.load(model, store, weights=weights_file, runtime=runtime.value, backbone_file=backbone)
    with progress_bar("scoring", enabled=not json_out) as bar:
        result = predictor.score(paths, threshold=threshold, top_k=top_k, top_fraction=top_fraction, progress=bar,
                                 dedupe=None if no_dedupe else dedupe)
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
            typer.echo(f"{r['score']:+.4f}  {'selected' if r['selected'] else '        '}  {printable(r['path'])}")
        rule = result.selection
        how = f"score ≥ {rule['threshold']:.6g}" if rule["rule"] == "threshold" else f"top {rule['k']}"
        groups = f" in {rule['dedupe_groups']} near-duplicate groups" if "dedupe_groups" in rule else ""
        typer.echo(f"{sum(r['selected'] for r in result.rows)} of {len(result.rows)}{groups} selected ({how})"
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


def _method_rows(out: dict) -> list[list[str]]:
    rows = []
    for name, s in out["methods"].items():
        sd = s["std"]
        rows.append([name, f"{s['accuracy']:.4f} ± {sd['accuracy']:.4f}", f"{s['roc_auc']:.4f} ± {sd['roc_auc']:.4f}",
                     f"{s['average_precision']:.4f}", f"{s['precision_at_5pct']:.3f}", f"{s['recall']:.3f}",
                     f"{s['specificity']:.3f}", f"{s['fit_seconds']:.2f}"])
    return rows


def _compare_sets(positive, store, negative, folds, methods, target_recall, plots, features, json_out) -> None:
    """`compare --features`: every method on every set (and the concatenation of several) on identical folds."""
    import numpy as np

    from stylesift.classifiers.compare import best_of, compare_sets
    from stylesift.classifiers.feature_sets import parse_sets, parts
    from stylesift.classifiers.train import load_labelled

    names = parse_sets(features)
    stored = list(dict.fromkeys(p for n in names for p in parts(n)))
    if len(names) > 1 and "+".join(stored) not in names and len(stored) > 1:
        names.append("+".join(stored))
    blocks = {p: load_labelled(store, positive, negative, p) for p in stored}
    first = blocks[stored[0]]
    for p, d in blocks.items():  # every set must describe the same rows in the same order: identical folds
        if not np.array_equal(d.sha256, first.sha256):
            raise RuntimeError(f"{store}: feature sets {stored[0]} and {p} returned different rows")
    X = {n: np.concatenate([blocks[p].X for p in parts(n)], axis=1) if "+" in n else blocks[n].X for n in names}
    with progress_bar("comparing (set × method × fold)", enabled=not json_out, unit="fits") as bar:
        results = compare_sets(X, first.positive, folds=folds, target_recall=target_recall, progress=bar,
                               methods=[m.strip() for m in methods.split(",")] if methods else None)
    out = {"store": str(store), "positive": positive, "negative": negative,
           "feature_sets": {n: {**r.to_dict(), "feature_dim": int(X[n].shape[1])} for n, r in results.items()},
           "winner": best_of(results)}
    if plots:
        from stylesift.classifiers.plots import save_comparison_plots

        out["plots"] = [str(p) for n, r in results.items()
                        for p in save_comparison_plots(r, plots / n, f"{store.name} [{n}]: {positive} vs {negative}")]
    if json_out:
        print_json(out)
        return
    for n, r in out["feature_sets"].items():
        _table(f"{store}, feature set {n} ({r['feature_dim']}-d): {r['positives']} {positive} vs {r['negatives']} {negative}, "
               f"{r['folds']} folds (mean ± std)",
               ["method", "accuracy", "ROC AUC", "avg precision", "precision@5%", "recall", "specificity", "fit s"],
               _method_rows(r))
    w = out["winner"]
    typer.echo(f"winner: {w['method']} on {w['feature_set']} (accuracy {w['accuracy']:.4f}, ROC AUC {w['roc_auc']:.4f}; "
               f"by mean accuracy, then ROC AUC, same folds for every set); train it with "
               f"`stylesift train --store {store} --positive {positive} --negative {negative} --method {w['method']} "
               f"--features {w['feature_set']} --out MODEL.ssmodel`")
    for p in out.get("plots", []):
        typer.echo(f"plot: {p}")
