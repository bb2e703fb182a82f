"""The review loop's commands: record verdicts (`label`), ask what to label next (`suggest`), review in a browser (`review`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, List, Optional

import typer

from stylesift.cli.app import EXIT_USAGE, fail, print_json, say, use_decode_memory
from stylesift.cli.options import DEFAULT_STORE, DecodeMemoryOpt, JsonOpt, ModelArg, StoreOpt, WeightsOpt

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
    model: ModelArg,
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


def review(
    model: ModelArg,
    paths: Annotated[List[Path], typer.Argument(help="Image files and folders to review (searched recursively).")],
    store: StoreOpt = DEFAULT_STORE,
    threshold: Annotated[Optional[float], typer.Option("--threshold", help="Pick scores ≥ T (default: the model's threshold).")] = None,
    top_k: Annotated[Optional[int], typer.Option("--top-k", min=0, help="Pick the K best groups.")] = None,
    top_fraction: Annotated[Optional[float], typer.Option("--top-fraction", min=0.0, max=1.0, help="Pick the best fraction F.")] = None,
    dedupe: Annotated[Optional[float], typer.Option("--dedupe", min=0.01, max=1.0, metavar="THRESHOLD",
                                                    help="Near-duplicate threshold (feature cosine; default "
                                                         "the measured one): one card per group.")] = None,
    no_dedupe: Annotated[bool, typer.Option("--no-dedupe", help="Every image its own card.")] = False,
    reviewer: ReviewerOpt = None,
    no_history: Annotated[bool, typer.Option(
        "--no-history", help="Do not mark images that repeat an earlier stored image with a verdict.")] = False,
    keep_seen: Annotated[bool, typer.Option(
        "--keep-seen", help="Let images seen before be picked too (they are marked either way).")] = False,
    host: Annotated[str, typer.Option("--host", help="Address to listen on (default loopback: this machine only).")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="Port (0: any free one).")] = 8765,
    retrain_every: Annotated[int, typer.Option("--retrain-every", min=0,
                                               help="Retrain in the background after this many new verdicts (0: only on request).")] = 20,
    negative_label: Annotated[Optional[str], typer.Option(
        "--negative-label", help="Label of a rejection when the model has no negative label (default: not-POSITIVE).")] = None,
    decode_memory: DecodeMemoryOpt = None,
    weights_file: WeightsOpt = None,
):
    """Serve a review page for the model's picks among PATHs: verdicts saved at once into the store, retraining in the background."""
    from stylesift.classifiers.grouping import DEFAULT_THRESHOLD
    from stylesift.classifiers.predict import Predictor
    from stylesift.review.labels import default_reviewer
    from stylesift.review.round import ReviewRound
    from stylesift.review.server import bind, is_loopback, serve, url_of

    if sum(x is not None for x in (threshold, top_k, top_fraction)) > 1:
        raise fail("choose one of --threshold, --top-k and --top-fraction", EXIT_USAGE)
    use_decode_memory(decode_memory)  # scoring and the page's thumbnails share it
    from stylesift.extras import require

    require("fastapi", "review", "the review page")
    require("uvicorn", "review", "the review page")
    sock = bind(host, port)  # a port in use fails here, before any scoring
    try:
        predictor = Predictor.load(model, store, weights=weights_file)
        result = predictor.score(paths, history=not no_history, keep_seen=keep_seen)
        for f in result.failed:
            say(f"  not reviewable: {f['error']}")
        if not result.rows:
            raise fail("no image could be scored; nothing to review")
        rnd = ReviewRound(model, predictor.bundle, store, result.rows, reviewer=reviewer or default_reviewer(),
                          selection={"threshold": threshold, "top_k": top_k, "top_fraction": top_fraction},
                          dedupe=None if no_dedupe else (dedupe or DEFAULT_THRESHOLD), negative_label=negative_label,
                          retrain_every=retrain_every, keep_seen=keep_seen)
    except BaseException:
        sock.close()
        raise
    bound = sock.getsockname()[1]
    if not is_loopback(host):
        say(f"note: listening on {host}: anyone who can reach this machine and has the URL (with its token) can give verdicts")
    say(f"{len(rnd.sections['picks'])} picks, {len(rnd.sections['borderline'])} borderline, "
        f"{len(rnd.sections['suggestions'])} suggestions among {len(rnd.items)} images; Ctrl-C stops the server")
    typer.echo(f"review page: {url_of(host if host not in ('0.0.0.0', '::') else socket_name(), bound, rnd.token)}")
    try:
        serve(rnd, sock)
    except KeyboardInterrupt:
        pass
    say("review server stopped; every verdict the page showed as saved is in the store")


def socket_name() -> str:
    import socket

    return socket.gethostname()
