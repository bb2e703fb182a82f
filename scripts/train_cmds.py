"""Commands that learn from stored features: compare, train, tune."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from stylesift.cli.app import err, print_json, progress_bar, say
from stylesift.cli.options import DEFAULT_STORE, JsonOpt, PositiveOpt, RecallOpt, StoreOpt

FEATURES_HELP = ("Comma-separated feature sets to compare on identical folds (pooled, style, detail, or sets joined by '+'); "
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
    negative: Annotated[str, typer.Option("--negative", help="Store label of the images to leave out.")] = ...,
    folds: Annotated[int, typer.Option("--folds", min=2, help="Stratified folds, identical for every method.")] = 5,
    methods: Annotated[Optional[str], typer.Option("--methods", help="Comma-separated subset of methods (default: all).")] = None,
    target_recall: RecallOpt = 0.9,
    plots: Annotated[Optional[Path], typer.Option("--plots", help="Folder for roc.png and precision-recall.png.")] = None,
    features: Annotated[Optional[str], typer.Option("--features", help=FEATURES_HELP)] = None,
    pu_hidden: Annotated[float, typer.Option(
        "--pu-hidden", min=0.0, max=0.99, help="pu: share of each training fold's positives hidden, unlabelled, "
        "among its negatives (0.67: a third hand-picked).")] = 0.67,
    json_out: JsonOpt = False,
):
    """Run every method on the same folds: accuracy, ROC AUC, average precision, precision@5%, fit time."""
    from stylesift.classifiers.compare import compare as run_compare
    from stylesift.classifiers.train import load_labelled

    if features is not None:
        return _compare_sets(positive, store, negative, folds, methods, target_recall, plots, features, json_out, pu_hidden)
    data = load_labelled(store, positive, negative)
    with progress_bar("comparing (method × fold)", enabled=not json_out, unit="fits") as bar:
        result = run_compare(data.X, data.positive, folds=folds, target_recall=target_recall, progress=bar, pu_hidden=pu_hidden,
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
    if out.get("best_positives_only"):
        typer.echo(f"best without negatives: {out['best_positives_only']} (pu hid {pu_hidden:g} of each fold's positives)")


def train(
    positive: PositiveOpt,
    store: StoreOpt = DEFAULT_STORE,
    negative: Annotated[Optional[str], typer.Option(
        "--negative", help="Store label of counter-examples (needed by two-class and head).")] = None,
    method: Annotated[str, typer.Option(
        "--method", help="two-class | pu | one-class | head | nearest-positives | two-class-default | one-class-default "
        "(pu: the positives against the store's unlabelled rows)")] = "two-class",
    out: Annotated[Path, typer.Option("--out", help="Model bundle to write, e.g. artifacts/model.ssmodel.")] = ...,
    target_recall: Annotated[Optional[float], typer.Option(
        "--target-recall", min=0.01, max=0.99, help="One-class methods: share of held-out positives kept above the "
        "threshold (default 0.9); pu: given, it replaces the threshold from the estimated class prior.")] = None,
    features: Annotated[str, typer.Option(
        "--features", help="The one feature set to learn from: pooled, style, detail, or sets joined by '+' (style+detail); "
        "the model records it and `score` computes it.")] = "pooled",
    background: Annotated[Optional[str], typer.Option(
        "--background", help="pu: learn against the rows of this label instead of the unlabelled rows.")] = None,
    unlabelled_since: Annotated[Optional[float], typer.Option(
        "--unlabelled-since", min=0.0, help="pu: only the unlabelled rows extracted in the last DAYS days.")] = None,
    json_out: JsonOpt = False,
):
    """Train a model from the store's labelled features and save it as one bundle file."""
    from stylesift.classifiers.train import train as run_train

    with err.status(f"training {method} on {features}"):
        bundle = run_train(store, positive, negative, method, target_recall=target_recall, feature_set=features,
                           background=background, unlabelled_since=unlabelled_since)
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
    if "class_prior" in s:
        typer.echo(f"class prior: {s['class_prior']:.3f} of {s['background_rows']} {s['background']} look like {positive}")
    for note in s["notes"]:
        say(f"note: {note}")


def tune(
    positive: PositiveOpt,
    store: StoreOpt = DEFAULT_STORE,
    negative: Annotated[Optional[str], typer.Option(
        "--negative", help="Store label of counter-examples, used only to validate.")] = None,
    target_recall: RecallOpt = 0.9,
    plot: Annotated[Optional[Path], typer.Option(
        "--plot", help="PNG with validation ROC and precision-recall curves and the grid.")] = None,
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


def _method_rows(out: dict) -> list[list[str]]:
    rows = []
    for name, s in out["methods"].items():
        sd = s["std"]
        rows.append([name, f"{s['accuracy']:.4f} ± {sd['accuracy']:.4f}", f"{s['roc_auc']:.4f} ± {sd['roc_auc']:.4f}",
                     f"{s['average_precision']:.4f}", f"{s['precision_at_5pct']:.3f}", f"{s['recall']:.3f}",
                     f"{s['specificity']:.3f}", f"{s['fit_seconds']:.2f}"])
    return rows


def _compare_sets(positive, store, negative, folds, methods, target_recall, plots, features, json_out,
                  pu_hidden: float = 0.67) -> None:
    """`compare --features`: every method on every set (and the concatenation of several) on identical folds."""
    import numpy as np

    from stylesift.classifiers.compare import best_of, compare_sets
    from stylesift.classifiers.feature_sets import parse_sets, parts
    from stylesift.classifiers.train import load_labelled

    names = parse_sets(features)
    stored = list(dict.fromkeys(p for n in names for p in parts(n)))
    # The concatenation of every stored set, unless one of the names already is it (in any order).
    if len(names) > 1 and len(stored) > 1 and set(stored) not in [set(parts(n)) for n in names]:
        names.append("+".join(stored))
    blocks = {p: load_labelled(store, positive, negative, p) for p in stored}
    first = blocks[stored[0]]
    for p, d in blocks.items():  # every set must describe the same rows in the same order: identical folds
        if not np.array_equal(d.sha256, first.sha256):
            raise RuntimeError(f"{store}: feature sets {stored[0]} and {p} returned different rows")
    X = {n: np.concatenate([blocks[p].X for p in parts(n)], axis=1) if "+" in n else blocks[n].X for n in names}
    with progress_bar("comparing (set × method × fold)", enabled=not json_out, unit="fits") as bar:
        results = compare_sets(X, first.positive, folds=folds, target_recall=target_recall, progress=bar, pu_hidden=pu_hidden,
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

