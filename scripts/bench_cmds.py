"""The ``bench`` group: where extraction time goes, against a naive loop, in one run; and every other benchmark.

``stylesift bench --images DIR`` (no subcommand) times extraction as it always did; other
measurements are subcommands of the group: ``stylesift bench store`` (feature store operations on
synthetic stores) and ``stylesift bench loop`` (the review loop simulated on labelled stores).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated, List, Optional, Tuple

import typer

from stylesift.cli.app import EXIT_USAGE, err, fail, print_json, progress_bar, say
from stylesift.cli.options import BatchOpt, JsonOpt

bench_app = typer.Typer(help="Benchmarks that print numbers: extraction (no subcommand), and the subcommands below.",
                        invoke_without_command=True, no_args_is_help=False)


@bench_app.callback()
def bench(
    ctx: typer.Context,
    images: Annotated[List[Path], typer.Option(
        "--images", help="Image files and folders to time on (repeatable; needed without a subcommand).")] = [],  # noqa: B006
    limit: Annotated[int, typer.Option(
        "--limit", min=1, help="At most this many files, spread evenly over the sorted list.")] = 256,
    phone_size: Annotated[bool, typer.Option(
        "--phone-size", help="Time on 12-megapixel JPEG copies (4032×3024) made from the images, --limit of them, in a "
        "temporary folder.")] = False,
    precision: Annotated[List[str], typer.Option(
        "--precision", help="Precisions to time (int8 is skipped when its extra is missing).")] = ["float32", "int8"],  # noqa: B006
    runtime: Annotated[List[str], typer.Option(
        "--runtime", help="Runtimes to time each precision on, where valid (auto: the one extract would pick here); the "
        "first backbone is the baseline.")] = ["keras", "auto"],  # noqa: B006
    batch_size: BatchOpt = 32,
    workers: Annotated[Optional[int], typer.Option("--workers", min=1, help="Decoding threads (default: CPU count).")] = None,
    naive: Annotated[bool, typer.Option("--naive/--no-naive", help="Also time the naive article-style loop.")] = True,
    repeat: Annotated[int, typer.Option(
        "--repeat", min=1, help="Rounds of all stages, interleaved; each stage keeps its fastest (least disturbed) "
        "round.")] = 1,
    features: Annotated[List[str], typer.Option(
        "--features", help="Feature sets to time (repeatable, comma-separated each, e.g. --features pooled --features "
        "pooled,detail): the first in every stage, each other as a whole extract with its ratio to the first.")] = ["pooled"],  # noqa: B006
    soak: Annotated[int, typer.Option(
        "--soak", min=0, help="Instead: extract this many distinct copies of the images into a fresh store and report "
        "resident memory along the way.")] = 0,
    compare: Annotated[Optional[Tuple[Path, Path]], typer.Option(
        "--compare", help="Instead: REFERENCE OTHER stores of the same labelled images (positive/negative): per-image "
        "cosine agreement and cross-validated accuracy/AUC of each.")] = None,
    json_out: JsonOpt = False,
):
    """Time decode, backbone, full extract and a naive loop on the same images; print rates and ratios."""
    if ctx.invoked_subcommand is not None:
        return
    from stylesift.featurizer import bench as b
    from stylesift.featurizer.backbones import FastBackboneUnavailable, runtimes
    from stylesift.featurizer.space import PRECISIONS

    for p in precision:
        if p not in PRECISIONS:
            raise typer.BadParameter(f"{p!r} is not one of {', '.join(PRECISIONS)}", param_hint="--precision")
    for r in runtime:
        if r not in runtimes.RUNTIMES:
            raise typer.BadParameter(f"{r!r} is not one of {', '.join(runtimes.RUNTIMES)}", param_hint="--runtime")
    try:
        runtimes.require_runtime("int8", "auto")
    except FastBackboneUnavailable as exc:
        if "int8" in precision:
            say(f"skipping int8: {exc}")
            precision = [p for p in precision if p != "int8"]
    if compare:
        result = b.compare_stores(*compare)
        if json_out:
            print_json(result)
        else:
            a = result["agreement"]
            typer.echo(f"{result['images']} images: cosine min {a['cosine_min']:.4f}, mean {a['cosine_mean']:.4f}, "
                       f"{a['below_0_99']} below 0.99; accuracy {result['reference_accuracy']:.2f} → {result['other_accuracy']:.2f} "
                       f"({result['accuracy_difference']:+.2f} points), ROC AUC {result['reference_roc_auc']:.2f} → "
                       f"{result['other_roc_auc']:.2f} ({result['roc_auc_difference']:+.2f})")
        return
    if not images:
        raise typer.BadParameter("give the images to time on, e.g. --images ../shared/data", param_hint="--images")
    missing = [str(p) for p in images if not p.exists()]
    if missing:
        raise fail(f"no such image folder or file: {', '.join(missing)}")
    with tempfile.TemporaryDirectory(prefix="stylesift-phone-") as tmp:
        if soak:
            with progress_bar(f"soak ({precision[-1]})", not json_out) as bar:
                result = b.soak(b.list_images(images), soak, precision=precision[-1], batch_size=batch_size,
                                workers=workers, progress=bar, runtime=runtime[-1])
            _show_soak(result, json_out)
            return
        files = b.sample_files(images, None if phone_size else limit)
        if phone_size:
            with progress_bar("writing phone-size JPEGs", not json_out) as bar:
                files = b.make_phone_jpegs(files, Path(tmp), limit, progress=bar)
        with err.status("timing") as status:
            result = b.run_bench(files, precisions=precision, runtimes=runtime, batch_size=batch_size, workers=workers,
                                 naive=naive, repeat=repeat, feature_sets=features,
                                 log=lambda message: status.update(f"timing: {message}"))
    result["images"] = [str(p) for p in images]
    result["phone_size"] = phone_size
    if json_out:
        print_json(result)
        return
    _show(result)


def _show(result: dict) -> None:
    m = result["machine"]
    typer.echo(f"machine: {m['cpu']}, {m['cpus']} CPUs, flags {' '.join(m['flags']) or '-'}; "
               f"load {m['load_average']} → {m['load_average_end']}; ONEDNN_MAX_CPU_ISA {m.get('onednn_max_cpu_isa')}")
    typer.echo(f"files: {result['files']}{' (phone-size copies)' if result['phone_size'] else ''}, "
               f"batch {result['batch_size']}, {result['workers']} decode threads, best of {result['repeat']} rounds")
    for s in result["stages"]:
        typer.echo(f"  {s['name']:<20} {s['images_per_second']:8.2f} images/s  ({s['images']} in {s['seconds']:.1f} s)")
    for name, value in result["ratios"].items():
        typer.echo(f"  {name:<36} {value:6.2f}×")
    if "peak_rss_mib" in m:
        typer.echo(f"  peak resident memory of the process: {m['peak_rss_mib']:.0f} MiB")
    for name, a in result["agreement"].items():
        typer.echo(f"  agreement {name}: cosine min {a['cosine_min']:.4f}, mean {a['cosine_mean']:.4f}, "
                   f"{a['below_0_99']} of {a['images']} below 0.99")


def _show_soak(result: dict, json_out: bool) -> None:
    if json_out:
        print_json(result)
        return
    samples = result["rss_mib_samples"]
    picks = [samples[int(i)] for i in sorted({0, len(samples) // 4, len(samples) // 2, 3 * len(samples) // 4, len(samples) - 1})] if samples else []
    typer.echo(f"soak ({result['precision']}): {result['images']} images in {result['seconds']} s; resident memory "
               + ", ".join(f"{rss:.0f} MiB after {done}" for done, rss in picks)
               + f"; growth over the second half {result['rss_mib_growth_second_half']} MiB")


def bench_store(
    rows: Annotated[list[int], typer.Option("--rows", min=1, help="Store sizes to build and time (repeatable).")] = [20000, 200000, 1000000],  # noqa: B006
    folder: Annotated[Path | None, typer.Option("--dir", help="Where to build the stores (default: a temporary folder).")] = None,
    keep: Annotated[bool, typer.Option("--keep", help="Keep the built stores.")] = False,
    json_out: JsonOpt = False,
):
    """Build synthetic stores (2048-d rows) and time open, stream, load, look-ups, add + close, relabel, verdict."""
    from stylesift.featurizer.store import bench as store_bench

    results = store_bench.run(sorted(rows), folder, keep=keep, log=say)
    if json_out:
        print_json(results)
    else:
        typer.echo(store_bench.table(results))


def bench_index(
    rows: Annotated[list[int], typer.Option("--rows", min=3000, help="Synthetic store sizes (repeatable).")] = [20000, 100000],  # noqa: B006
    mode: Annotated[str, typer.Option("--mode", help="store: a real HDF5 store is written (up to ~100k rows); arrays: "
                                      "the rows in a float16 memory map (1M rows without 8 GB of store).")] = "store",
    store: Annotated[Optional[Path], typer.Option("--store", help="Measure a real store instead (its last 2,000 rows "
                                                   "are the update; the index goes to a temporary folder).")] = None,
    queries: Annotated[int, typer.Option("--queries", min=1, help="Queries timed per size.")] = 100,
    folder: Annotated[Optional[Path], typer.Option("--dir", help="Where to build (default: a temporary folder).")] = None,
    json_out: JsonOpt = False,
):
    """Time the similarity index: build, update per 2,000-row run, warm query p50/p99, recall@10 against exact, memory."""
    from stylesift.featurizer.search import bench as index_bench

    if mode not in ("store", "arrays"):
        raise fail(f"--mode is store or arrays, not {mode!r}", EXIT_USAGE)
    results = index_bench.run(sorted(rows), mode=mode, store_path=store, queries=queries, folder=folder, log=say)
    if json_out:
        print_json(results)
    else:
        typer.echo(index_bench.table(results))


def bench_loop(
    stores: Annotated[List[Path], typer.Option("--store", help="A store of one task, labelled with --positive and "
                                                               "--negative (repeatable; the task is the file's name).")],
    positive: Annotated[str, typer.Option("--positive", help="Ground-truth label of the positives.")] = "positive",
    negative: Annotated[str, typer.Option("--negative", help="Ground-truth label of the negatives.")] = "negative",
    method: Annotated[str, typer.Option("--method", help="Method trained each round.")] = "two-class",
    seeds: Annotated[int, typer.Option("--seeds", min=1, help="Repetitions with other starting labels.")] = 3,
    rounds: Annotated[int, typer.Option("--rounds", min=1, help="Rounds of labelling.")] = 5,
    n: Annotated[int, typer.Option("--n", min=1, help="Labels added per round.")] = 20,
    start: Annotated[int, typer.Option("--start", min=2, help="Starting labels per class.")] = 10,
    features: Annotated[str, typer.Option("--features", help="Feature set the model learns from (pooled, style, "
                                                             "pooled+style).")] = "pooled",
    json_out: JsonOpt = False,
):
    """Simulate the review loop on labelled stores: suggestions against random picks, accuracy and ROC AUC per round."""
    from stylesift.review.loop_bench import bench_loop as run

    result = run({p.stem: p for p in stores}, positive=positive, negative=negative, method=method, seeds=seeds,
                 rounds=rounds, per_round=n, start=start, feature_set=features,
                 progress=None if json_out else (lambda task, strategy, seed: say(f"  {task}: {strategy}, seed {seed} done")))
    if json_out:
        print_json(result)
        return
    for task, t in result["tasks"].items():
        typer.echo(f"{task} ({t['rows']} images, {t['positives']} positive); mean of {seeds} seeds; "
                   "accuracy / ROC AUC on the unlabelled rest | on a fixed held-out 30 %")
        typer.echo(f"  {'labels':>6}  {'suggest: rest':>15}  {'held-out':>15}  {'random: rest':>15}  {'held-out':>15}")
        for s, r in zip(t["suggest"], t["random"]):
            cells = [f"{x[part]['accuracy']:.3f} / {x[part]['roc_auc']:.3f}" for x in (s, r) for part in ("rest", "held_out")]
            typer.echo(f"  {s['labels']:>6}  " + "  ".join(f"{c:>15}" for c in cells))


def bench_serve(
    images: Annotated[List[Path], typer.Option("--images", help="Image files and folders (repeatable).")],
    limit: Annotated[int, typer.Option("--limit", min=2, help="At most this many images, spread over the sorted list.")] = 256,
    size: Annotated[int, typer.Option("--size", min=32, max=4096, help="Longest side of the JPEG copies sent.")] = 384,
    requests: Annotated[int, typer.Option(
        "--requests", min=1, max=100000, help="Images scored per configuration (16 per request: a sixteenth as many "
                                              "requests).")] = 2000,
    clients: Annotated[List[int], typer.Option("--clients", min=1, max=256, help="Concurrent clients (repeatable).")] = [1, 8, 32],  # noqa: B006
    per_request: Annotated[List[int], typer.Option(
        "--per-request", min=1, max=64, help="Images per request (repeatable).")] = [1, 16],  # noqa: B006
    max_seconds: Annotated[float, typer.Option(
        "--max-seconds", min=1.0, help="Most seconds per configuration.")] = 120.0,
    precision: Annotated[str, typer.Option("--precision", help="Feature space of the baseline and the model.")] = "int8",
    runtime: Annotated[str, typer.Option("--runtime", help="Runtime of both (auto: the one extract picks).")] = "auto",
    model: Annotated[Optional[Path], typer.Option(
        "--model", help="Serve this model (its feature space must be --precision's) instead of one trained here.")] = None,
    max_batch: Annotated[int, typer.Option("--max-batch", min=1, help="The server's --max-batch.")] = 16,
    batch_wait_ms: Annotated[float, typer.Option("--batch-wait-ms", min=0.0, help="The server's --batch-wait-ms.")] = 10.0,
    json_out: JsonOpt = False,
):
    """Load the scoring service on loopback: images/s and p50/p99 latency per client count, against extract on the same images."""
    from stylesift.review.serve import bench as serve_bench

    missing = [str(p) for p in images if not p.exists()]
    if missing:
        raise fail(f"no such image folder or file: {', '.join(missing)}")
    result = serve_bench.run_bench(images, limit=limit, size=size, requests=requests, clients=clients,
                                   per_request=per_request, max_seconds=max_seconds, precision=precision,
                                   runtime=runtime, model=model, max_batch=max_batch, batch_wait_ms=batch_wait_ms,
                                   log=None if json_out else say)
    if json_out:
        print_json(result)
    else:
        typer.echo(serve_bench.table(result))
