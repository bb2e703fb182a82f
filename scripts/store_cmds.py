"""The ``store`` group: verify a feature store (check), merge its segments (compact), forget old rows (prune)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from stylesift.cli.app import print_json
from stylesift.cli.options import JsonOpt

store_app = typer.Typer(help="Feature store upkeep: verify every checksum (check), merge segments (compact), "
                             "forget old rows (prune).", no_args_is_help=True)
StorePath = Annotated[Path, typer.Argument(help="The store's .h5 file.")]


@store_app.command()
def check(
    store: StorePath,
    repair: Annotated[bool, typer.Option("--repair", help="Rebuild indexes and the top file; move damaged parts "
                                         "aside (their images are featurized again by the next extract).")] = False,
    json_out: JsonOpt = False,
):
    """Read every part of the store and verify its checksums, and each similarity index; exit 0 healthy, 1 damaged.

    A damaged index or a top file older than the manifest is reported but does not make the store damaged
    (derived data; --repair rebuilds it).
    """
    from stylesift.featurizer.search import check_indexes, describe
    from stylesift.featurizer.store import FeatureStore
    from stylesift.featurizer.store.check import check as run_check

    result = run_check(store, repair=repair)
    if result.get("format_version") != 1:
        # After the store's own repair, which may renumber rows (a stale index is then rebuilt too).
        result["indexes"] = check_indexes(FeatureStore(store), repair=repair)
    if json_out:
        print_json(result)
    else:
        state = "healthy" if result["healthy"] else ("repaired" if result.get("repaired") else "DAMAGED")
        typer.echo(f"{store}: {state}; {result['rows']} rows in {result.get('segments', 1)} segment(s)")
        for p in result["problems"]:
            moved = f" (moved to {p['moved_to']})" if p.get("moved_to") else ""
            typer.echo(f"  {p['file']}: {p['problem']}{moved}; {p['fix']}")
        if result.get("note"):
            typer.echo(f"  {result['note']}")
        for name, st in result.get("indexes", {}).items():
            typer.echo(f"  {describe(name, st)}")
    if not result["healthy"] and not result.get("repaired"):
        raise typer.Exit(1)


@store_app.command()
def compact(
    store: StorePath,
    max_rows: Annotated[int, typer.Option("--max-rows", min=1, help="Largest merged segment, in rows.")] = 131072,
    json_out: JsonOpt = False,
):
    """Merge neighbouring segments and fold small records (reads and rewrites the rows it merges)."""
    from stylesift.featurizer.store.check import compact as run_compact

    result = run_compact(store, max_rows)
    if json_out:
        print_json(result)
    else:
        typer.echo(f"{store}: {result['rows']} rows; segments {result['segments_before']} -> {result['segments']}")


@store_app.command()
def prune(
    store: StorePath,
    older_than: Annotated[float, typer.Option("--older-than", min=0, help="Remove rows extracted more than DAYS ago.",
                                              metavar="DAYS")] = ...,
    include_labelled: Annotated[bool, typer.Option("--include-labelled", help="Remove old labelled rows too.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only count what would go.")] = False,
    json_out: JsonOpt = False,
):
    """Forget rows older than DAYS (labelled rows are kept unless --include-labelled); renumbers rows."""
    import math

    from stylesift.featurizer.store.check import prune as run_prune

    if not math.isfinite(older_than):
        raise typer.BadParameter("must be a finite number of days", param_hint="--older-than")
    result = run_prune(store, older_than, include_labelled=include_labelled, dry_run=dry_run)
    if json_out:
        print_json(result)
    else:
        verb = "would remove" if dry_run else "removed"
        typer.echo(f"{store}: {verb} {result['removed']} of {result['rows']} rows"
                   + (f"; kept {result['kept_labelled']} old labelled rows" if result["kept_labelled"] else ""))
