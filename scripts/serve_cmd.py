"""The ``serve`` command: the HTTP scoring service (``POST /score``), the model kept warm."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from stylesift.cli.app import EXIT_USAGE, fail, say, use_decode_memory
from stylesift.cli.options import (
    BACKBONE_HELP,
    DEDUPE_THRESHOLD,
    DecodeMemoryOpt,
    ModelArg,
    Runtime,
    RuntimeOpt,
    WeightsOpt,
)


def _size(text: str, option: str) -> int:
    from stylesift.featurizer.images import parse_bytes

    try:
        value = parse_bytes(text)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint=option) from None
    if value < 1024:
        raise typer.BadParameter(f"{text} is less than 1K", param_hint=option)
    return value


def serve(
    model: ModelArg,
    store: Annotated[Optional[Path], typer.Option(
        "--store", help="Feature store: known images are scored from it, new uploads recorded into it (rows for review, "
                        "rank and history), verdicts mark repeats (seen_before). Without it nothing is written.")] = None,
    host: Annotated[str, typer.Option("--host", help="Address to listen on (default loopback: this machine only).")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="Port (0: any free one; printed).")] = 8780,
    token_file: Annotated[Optional[Path], typer.Option(
        "--token-file", help="Read the bearer token from the first line of FILE (it survives restarts); "
                             "default: a new token, printed once as `token: TOKEN`.")] = None,
    allow_paths: Annotated[Optional[Path], typer.Option(
        "--allow-paths", metavar="DIR", help="Also take {\"paths\": [...]} bodies naming files inside DIR on this machine.")] = None,
    batch_wait_ms: Annotated[float, typer.Option(
        "--batch-wait-ms", min=0.0, max=1000.0, help="Most milliseconds a network batch waits for images still "
                                                     "being decoded.")] = 10.0,
    max_batch: Annotated[int, typer.Option("--max-batch", min=1, max=256, help="Most images per network call.")] = 16,
    max_queue: Annotated[int, typer.Option(
        "--max-queue", min=1, help="Requests taken at once (reading, decoding, batching, scoring); more get 503.")] = 256,
    max_images: Annotated[int, typer.Option("--max-images", min=1, max=10000, help="Most images per request (413 beyond).")] = 64,
    max_request_size: Annotated[str, typer.Option(
        "--max-request-size", metavar="SIZE", help="Largest request body, e.g. 32M (413 beyond); also the largest "
                                                   "file a paths request may name.")] = "32M",
    workers: Annotated[Optional[int], typer.Option("--workers", min=1, help="Decode threads (default: CPU count).")] = None,
    watch_model: Annotated[bool, typer.Option(
        "--watch-model", help="Follow the numbered models the review loop writes beside MODEL (MODEL-002.ssmodel, ...): "
                              "the newest is put in use when it appears (one of another feature space is refused).")] = False,
    watch_interval: Annotated[float, typer.Option(
        "--watch-interval", min=0.1, help="Seconds between two looks for a newer model (--watch-model).")] = 2.0,
    threshold: Annotated[Optional[float], typer.Option(
        "--threshold", help="Select scores ≥ T (default: the model's threshold).")] = None,
    dedupe: Annotated[float, typer.Option(
        "--dedupe", min=0.01, max=1.0, metavar="THRESHOLD",
        help="Group near-duplicates within a request (as score does); a group is one pick.")] = DEDUPE_THRESHOLD,
    no_dedupe: Annotated[bool, typer.Option("--no-dedupe", help="Do not group near-duplicates.")] = False,
    no_history: Annotated[bool, typer.Option(
        "--no-history", help="Do not look for earlier stored images with a verdict that an upload repeats.")] = False,
    keep_seen: Annotated[bool, typer.Option("--keep-seen", help="Let uploads seen before be picked too.")] = False,
    access_log: Annotated[bool, typer.Option("--access-log", help="Log one line per request on stderr (no headers).")] = False,
    runtime: RuntimeOpt = Runtime.auto,
    backbone: Annotated[Optional[Path], typer.Option(
        "--backbone", help=BACKBONE_HELP + " Default: the file the model recorded.")] = None,
    weights_file: WeightsOpt = None,
    decode_memory: DecodeMemoryOpt = None,
):
    """Serve POST /score over HTTP: upload images, get their scores (the rows `score --json` prints); token required."""
    from stylesift.extras import require
    from stylesift.review.serve import ScoringService, ServeSettings, bind, generate_token, read_token
    from stylesift.review.serve import serve as run_server
    from stylesift.review.serve.server import is_loopback, url_of

    use_decode_memory(decode_memory)
    if allow_paths is not None and not allow_paths.is_dir():
        raise fail(f"--allow-paths {allow_paths}: not a folder; give the folder whose files requests may name", EXIT_USAGE)
    require("fastapi", "review", "the scoring service")
    require("uvicorn", "review", "the scoring service")
    require("python_multipart", "review", "the scoring service")
    token = read_token(token_file) if token_file is not None else None
    settings = ServeSettings(max_batch=max_batch, batch_wait_ms=batch_wait_ms, max_queue=max_queue, max_images=max_images,
                             max_request_bytes=_size(max_request_size, "--max-request-size"), workers=workers,
                             allow_paths=allow_paths.resolve() if allow_paths else None, threshold=threshold,
                             dedupe=None if no_dedupe else dedupe, history=not no_history, keep_seen=keep_seen,
                             watch_model=watch_interval if watch_model else None)
    sock = bind(host, port)  # a port in use fails here, before the model loads
    try:
        service = ScoringService.open(model, store, settings, weights=weights_file, runtime=runtime.value,
                                      backbone_file=backbone)
        service.start()  # the network built and warmed, the store checked: the first request is not slow
    except BaseException:
        sock.close()
        raise
    loaded = service.slot.current
    bound = sock.getsockname()[1]
    if not is_loopback(host):
        say(f"note: listening on {host}: anyone who can reach this machine and has the token can score images"
            + (" and read files inside --allow-paths" if allow_paths else ""))
    say(f"model {loaded.path} ({loaded.header['method']}, threshold {loaded.header['threshold']:.6g}); "
        + (f"recording new uploads into {store}" if store else "no store: nothing is written")
        + "; API docs at /docs; SIGTERM or Ctrl-C stops the server")
    if token is None:
        token = generate_token()
        sys.stdout.write(f"token: {token}\n")
    else:
        say(f"token: the first line of {token_file}")
    sys.stdout.write(f"serving: {url_of(host, bound)}\n")
    sys.stdout.flush()  # before the socket listens: a client that read these lines can connect at once
    run_server(service, token, sock, access_log=access_log)
    say("server stopped: the requests in flight were answered" + (f"; the store {store} is committed" if store else ""))
