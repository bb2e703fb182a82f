"""The ``bench`` group: where extraction time goes, against a naive loop, in one run.

``stylesift bench --images DIR`` (no subcommand) times extraction as it always did; other
measurements are subcommands of the group (``stylesift bench store``, ``stylesift bench loop``).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import List, Optional, Tuple

import typer

from stylesift.cli.app import err, fail, print_json, progress_bar, say
from stylesift.cli.options import BatchOpt, JsonOpt

bench_app = typer.Typer(help="Benchmarks that print numbers: extraction (no subcommand), and the subcommands below.",
                        invoke_without_command=True, no_args_is_help=False)


@bench_app.callback()
def bench(
    ctx: typer.Context,
    images: List[Path] = typer.Option([], "--images", help="Image files and folders to time on (repeatable; needed without a subcommand)."),
    limit: int = typer.Option(256, "--limit", min=1, help="At most this many files, spread evenly over the sorted list."),
    phone_size: bool = typer.Option(False, "--phone-size", help="Time on 12-megapixel JPEG copies (4032×3024) made from the images, --limit of them, in a temporary folder."),
    precision: List[str] = typer.Option(["float32", "int8"], "--precision", help="Precisions to time (int8 is skipped when its extra is missing)."),
    runtime: List[str] = typer.Option(["keras", "auto"], "--runtime", help="Runtimes to time each precision on, where valid (auto: the one extract would pick here); the first backbone is the baseline."),
    batch_size: BatchOpt = 32,
    workers: Optional[int] = typer.Option(None, "--workers", min=1, help="Decoding threads (default: CPU count)."),
    naive: bool = typer.Option(True, "--naive/--no-naive", help="Also time the naive article-style loop."),
    repeat: int = typer.Option(1, "--repeat", min=1, help="Rounds of all stages, interleaved; each stage keeps its fastest (least disturbed) round."),
    soak: int = typer.Option(0, "--soak", min=0, help="Instead: extract this many distinct copies of the images into a fresh store and report resident memory along the way."),
    compare: Optional[Tuple[Path, Path]] = typer.Option(None, "--compare", help="Instead: REFERENCE OTHER stores of the same labelled images (positive/negative): per-image cosine agreement and cross-validated accuracy/AUC of each."),
    json_out: JsonOpt = False,
):
    """Time decode, backbone, full extract and a naive loop on the same images; print rates and ratios."""
    if ctx.invoked_subcommand is not None:
        return
    from stylesift.featurizer import bench as b
    from stylesift.featurizer import runtimes
    from stylesift.featurizer.fast_backbone import FastBackboneUnavailable
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
                                 naive=naive, repeat=repeat,
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
