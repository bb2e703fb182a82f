"""The ``model`` group: look inside a model bundle without loading it, and convert old pickle bundles."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from stylesift.cli.app import print_json, say
from stylesift.cli.options import JsonOpt

model_app = typer.Typer(help="Model bundles: show one without loading it (info), convert an old one (upgrade).",
                        no_args_is_help=True)


@model_app.command()
def info(
    model: Annotated[Path, typer.Argument(help="Model bundle (MODEL.ssmodel, or an old format-1 file).")],
    json_out: JsonOpt = False,
):
    """Show a bundle's header, checksum and the types it would build; nothing is loaded or run."""
    from stylesift.classifiers.bundle import inspect

    result = inspect(model)
    if json_out:
        print_json(result)
        return
    h = result["header"]
    fp = h.get("fingerprint", {})
    lines = [f"file:          {result['file']} ({result['bytes']:,} bytes)"]
    if result["format_version"] == 1:
        lines.append("format:        1 (a pickle: not loaded by this stylesift; convert it with "
                     f"`{result['needs_upgrade']}`)")
    else:
        lines.append(f"format:        {result['format_version']} (skops: JSON + arrays, allow-listed types)")
        ok = "ok" if result["checksum_ok"] else "MISMATCH (damaged or altered)"
        lines.append(f"checksum:      {ok} (sha256 {h['payload_sha256'][:16]}…, {h['payload_bytes']:,} bytes)")
        if result["checksum_ok"]:
            refused = ", ".join(result["refused_types"]) or "none"
            lines.append(f"types:         {len(result['types'])}; outside the allow-list: {refused}")
    labels = h.get("labels", {})
    lines += [f"method:        {h.get('method')}",
              f"labels:        positive {labels.get('positive')!r}, negative {labels.get('negative')!r}",
              f"threshold:     {h.get('threshold')}",
              f"feature space: {h.get('fingerprint_id', '')} ({fp.get('backbone')}, "
              f"precision {fp.get('precision', 'float32')}, {fp.get('feature_dim')}-d)",
              "versions:      " + ", ".join(f"{k} {v}" for k, v in h.get("versions", {}).items())]
    if isinstance(h.get("created"), (int, float)):
        lines.append(f"created:       {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(h['created']))}")
    for key, value in (h.get("summary") or {}).items():
        if isinstance(value, (str, int, float, bool)) or value is None:
            lines.append(f"  {key}: {value}")
    for line in lines:  # plain lines: labels and file names are never read as markup
        typer.echo(line)
    if result["format_version"] == 2 and (not result["checksum_ok"] or result["refused_types"]):
        raise typer.Exit(1)


@model_app.command()
def upgrade(
    old: Annotated[Path, typer.Argument(help="Format-1 bundle (a pickle) written by stylesift 0.2 or older.")],
    new: Annotated[Path, typer.Argument(help="Where to write the format-2 bundle, e.g. model.ssmodel.")],
    trust_pickle: Annotated[bool, typer.Option(
        "--trust-pickle", help="Required: unpickling OLD runs any code it holds; pass it only for a file from a source "
        "you trust.")] = False,
):
    """Convert an old pickle bundle into the current format, which loads without running code."""
    from stylesift.classifiers.bundle import upgrade as run_upgrade

    if not trust_pickle:
        raise typer.BadParameter("required: converting unpickles OLD, which runs any code it holds; pass "
                                 "--trust-pickle only for a file from a source you trust", param_hint="--trust-pickle")
    path = run_upgrade(old, new, trust_pickle=True)
    say(f"wrote {path}: format 2, loads without unpickling; {old} is unchanged (delete it when you no longer need it)")
