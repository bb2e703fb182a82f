"""Commands that ask a store full of feed: ``similar`` (nearest stored images) and ``rank`` (a model over stored rows)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Annotated, List, Optional

import typer

from stylesift.cli.app import EXIT_USAGE, fail, print_json, printable, say
from stylesift.cli.options import DEFAULT_STORE, JsonOpt, ModelArg, Runtime, RuntimeOpt, StoreOpt, WeightsOpt

SinceOpt = Annotated[Optional[float], typer.Option(
    "--since", min=0.0, metavar="DAYS", help="Only rows extracted in the last DAYS days.")]
UnlabelledOpt = Annotated[bool, typer.Option("--unlabelled", help="Only rows without a label.")]


def similar(
    queries: Annotated[List[str], typer.Argument(
        metavar="QUERY...", help="Stored sha256s or image files (a file the store lacks is featurized into it).")],
    store: StoreOpt = DEFAULT_STORE,
    k: Annotated[int, typer.Option("--k", min=1, help="Results per query.")] = 10,
    features: Annotated[str, typer.Option("--features", help="Stored feature set compared: pooled, style or detail.")] = "pooled",
    label: Annotated[Optional[str], typer.Option("--label", help="Only rows with this label.")] = None,
    unlabelled: UnlabelledOpt = False,
    since: SinceOpt = None,
    exact: Annotated[bool, typer.Option("--exact", help="Search every row exactly (no index; slower).")] = False,
    report: Annotated[Optional[Path], typer.Option(
        "--report", help="HTML contact sheet of each query's results (thumbnails).")] = None,
    runtime: RuntimeOpt = Runtime.auto,
    weights_file: WeightsOpt = None,
    json_out: JsonOpt = False,
):
    """Find the stored images most like each QUERY (cosine similarity of features; never the query itself)."""
    from stylesift.featurizer.search import similar as search

    if label is not None and unlabelled:
        raise fail("choose one of --label and --unlabelled", EXIT_USAGE)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RuntimeWarning)
        found = search(store, queries, k, feature_set=features, label=label, unlabelled=unlabelled, since_days=since,
                       weights=weights_file, runtime=runtime.value, use_index=not exact)
    for w in caught:
        say(f"note: {w.message}")
    if json_out:
        for q in found:
            print_json({"query": {"sha256": q.sha256, "stored": q.stored},
                        "results": [{k_: r[k_] for k_ in ("sha256", "path", "label", "similarity")} for r in q.results]})
    else:
        for q in found:
            typer.echo(f"{printable(q.text)}  ({q.sha256[:12]}{'' if q.stored else ', featurized now'})")
            for r in q.results:
                typer.echo(f"  {r['similarity']:.4f}  {r['label'] or '-':<12}  {printable(r['path'] or r['sha256'])}")
    if report:
        from stylesift.review.report import write_report

        rows = [{"path": r["path"], "sha256": r["sha256"], "score": r["similarity"], "selected": True}
                for q in found for r in q.results if r["path"]]
        sheet = write_report(report, rows, method="similar", title="stylesift similar",
                             extra={"queries": ", ".join(q.text for q in found), "store": str(store)})
        say(f"report: {sheet.path} ({sheet.selected} images)")


def rank(
    model: ModelArg,
    store: StoreOpt = DEFAULT_STORE,
    since: SinceOpt = None,
    unlabelled: UnlabelledOpt = False,
    top_k: Annotated[Optional[int], typer.Option("--top-k", min=1, help="Keep the K highest scores.")] = None,
    out: Annotated[Optional[Path], typer.Option(
        "--out", help="CSV: rank, sha256, score, selected, label, path, path_b64.")] = None,
    json_out: JsonOpt = False,
):
    """Score stored rows with a model from their stored features (no image is read), best first."""
    from stylesift.classifiers.rank import rank as rank_rows

    result = rank_rows(model, store, since_days=since, unlabelled=unlabelled, top_k=top_k)
    if out:
        result.write_csv(out)
    if json_out:
        print_json(result.rows)
        return
    for r in result.rows:
        typer.echo(f"{r['score']:+.4f}  {'selected' if r['selected'] else '        '}  "
                   f"{printable(r['path'] or r['sha256'])}")
    selected = sum(r["selected"] for r in result.rows)
    typer.echo(f"{len(result.rows)} of {result.scored} stored rows shown, {selected} at or above the model's threshold "
               f"{result.threshold:.6g}" + (f"; written to {out}" if out else ""))
