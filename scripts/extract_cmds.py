"""Commands over images and the feature store: weights, extract, info."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from stylesift.cli.app import (
    EXIT_INTERRUPTED,
    EXIT_SOME_FAILED,
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
    DEFAULT_STORE,
    BatchOpt,
    DecodeMemoryOpt,
    JsonOpt,
    PathsArg,
    Runtime,
    RuntimeOpt,
    StoreArg,
    VerboseOpt,
    WeightsOpt,
)


class Engine(str, Enum):
    local = "local"
    ray = "ray"


class Precision(str, Enum):
    float32 = "float32"
    int8 = "int8"


def weights(
    check: Annotated[bool, typer.Option("--check", help="Prove they are ImageNet weights by classifying two known photos.")] = False,
    weights_file: WeightsOpt = None,
    json_out: JsonOpt = False,
):
    """Find (or fetch and convert) the ImageNet ResNet50 weights and print where they are."""
    from stylesift.featurizer.weights import resolve
    from stylesift.featurizer.weights.imagenet_check import check_imagenet

    with err.status("resolving ResNet50 ImageNet weights (first time: fetch and convert, ~1 min)"):
        w = resolve(weights_file)
    result = w.to_dict()
    if check:
        result["check"] = check_imagenet(w)
    if json_out:
        print_json(result)
        return
    typer.echo(f"source:      {w.source}\nheadless:    {w.notop}\nwith top:    {w.top}\nfingerprint: sha256:{w.fingerprint}")
    for name, outcome in result.get("check", {}).items():
        top = ", ".join(f"{label} {p:.2f}" for label, p in outcome["top3"])
        typer.echo(f"check {name}: {'ok' if outcome['ok'] else 'FAILED'} (top 3: {top})")
    if check and not all(o["ok"] for o in result["check"].values()):
        raise typer.Exit(1)


def extract(
    paths: PathsArg,
    store: Annotated[Path, typer.Option("--store", help="HDF5 feature store to add to (created if missing).")] = DEFAULT_STORE,
    label: Annotated[Optional[str], typer.Option("--label", help="Label for these images, e.g. good / ordinary.")] = None,
    batch_size: BatchOpt = 32,
    workers: Annotated[Optional[int], typer.Option(
        "--workers", min=1, help="local: decoding threads (default: CPU count); ray: worker actors (default: one per "
        "cluster CPU).")] = None,
    engine: Annotated[Engine, typer.Option(
        "--engine", help="local: this machine; ray: Ray worker actors, the store written here (pip install "
        "'stylesift\\[ray]').")] = Engine.local,
    address: Annotated[Optional[str], typer.Option(
        "--address", help="Ray cluster for --engine ray: auto, HOST:6379 or ray://HOST:10001 (default: $RAY_ADDRESS, "
        "else a Ray instance on this machine).")] = None,
    precision: Annotated[Precision, typer.Option(
        "--precision", help="float32, or int8: NNCF-quantized on OpenVINO, several times faster, its own feature space "
        "(pip install 'stylesift\\[fast]').")] = Precision.float32,
    runtime: RuntimeOpt = Runtime.auto,
    backbone: Annotated[Optional[Path], typer.Option("--backbone", help=BACKBONE_HELP)] = None,
    features: Annotated[str, typer.Option(
        "--features", help="Feature sets each forward pass computes and the store keeps side by side: pooled (objects, "
        "2048-d), style (the look: early-stage statistics), detail (noise, focus, compression: early-stage statistics of "
        "tiles at native resolution); e.g. pooled,style,detail. See README, Choosing features.")] = "pooled",
    weights_file: WeightsOpt = None,
    verbose: VerboseOpt = False,
    decode_memory: DecodeMemoryOpt = None,
    json_out: JsonOpt = False,
):
    """Featurize images into the store; content already there is not featurized again."""
    from stylesift.featurizer.extract import Featurizer
    from stylesift.featurizer.ray import RayEngine, RayOptionError, check_feature_sets, check_options

    use_decode_memory(decode_memory)

    on_ray = engine is Engine.ray
    try:  # the engine's rules, shown as usage errors on the option concerned
        check_options(on_ray, address=address, precision=precision.value, backbone=backbone, runtime=runtime.value)
        from stylesift.classifiers.feature_sets import parse_sets, stored_parts

        feature_sets = stored_parts(parse_sets(features))
        check_feature_sets(on_ray, feature_sets)
    except RayOptionError as exc:
        raise typer.BadParameter(str(exc), param_hint=exc.option) from None
    try:
        if engine is Engine.ray:
            featurizer = RayEngine(weights_file, batch_size=batch_size, workers=workers, address=address,
                                   feature_sets=feature_sets)
        else:
            featurizer = Featurizer(weights_file, batch_size=batch_size, workers=workers, precision=precision.value,
                                    runtime=runtime.value, backbone_file=backbone, feature_sets=feature_sets)
            if precision is Precision.int8:
                with err.status("preparing the INT8 network (first time on this machine: quantized once, 1-2 min)"):
                    featurizer.backbone  # noqa: B018 - built (and cached) before the progress bar starts
        with progress_bar("extracting") as bar:
            report = featurizer.extract(paths, store, label=label, progress=bar)
    except KeyboardInterrupt:  # before the first file, or a second Ctrl-C while saving
        raise fail(f"interrupted; every batch that was finished is kept in {store}; "
                   "run the same command again to resume", EXIT_INTERRUPTED)
    if json_out:
        print_json(report.to_dict())
    else:
        typer.echo(f"{store}: {report.new} new, {report.cached} cached, {len(report.failed)} failed; "
                   f"{report.rows} rows ({report.images_per_second:.1f} new images/s)")
        for failure in report.failed if verbose else report.failed[:20]:
            say(f"  failed: {failure['error']}")
        if len(report.failed) > 20 and not verbose:
            say(f"  … and {len(report.failed) - 20} more (see `stylesift info {store}`)")
        if verbose:
            for s in report.skipped:
                say(f"  skipped: {s['path']}: {s['reason']}")
        elif report.skipped:
            say(f"  {len(report.skipped)} files skipped by the folder walk (no image extension, hidden, or a "
                "symlinked folder); --verbose names them")
    if report.interrupted:
        say(f"interrupted: {report.new} new images were saved to {store}; run the same command again to resume.")
        raise typer.Exit(EXIT_INTERRUPTED)
    if report.failed:
        raise typer.Exit(EXIT_SOME_FAILED)


def info(
    store: StoreArg = DEFAULT_STORE,
    verify: Annotated[bool, typer.Option(
        "--verify/--no-verify", help="Read every feature chunk, so a damaged one is reported (--no-verify: counts only, "
        "instant on big stores; `stylesift store check` verifies everything).")] = True,
    json_out: JsonOpt = False,
):
    """Rows, feature sets, counts per label and verdict, failures and fingerprint of a store."""
    from stylesift.featurizer.search import check_indexes, describe
    from stylesift.featurizer.space import fingerprint_id
    from stylesift.featurizer.store import FeatureStore

    st = FeatureStore(store)
    fp = st.fingerprint or {}
    sets = {name: {"rows": int(st.has_features(name).sum()), "feature_dim": sfp.get("feature_dim"),
                   "fingerprint_id": fingerprint_id(sfp)} for name, sfp in st.feature_sets.items()}
    if verify:
        # Fletcher32 checks every chunk as it is read: a flipped bit is a StoreError naming the file and rows.
        with progress_bar("verifying feature checksums", enabled=not json_out and len(st) > 50_000, unit="rows") as bar:
            done = 0
            for name in sets:
                for block in st.iter_features(feature_set=name):
                    done += len(block)
                    if bar:
                        bar(done, len(st) * len(sets))
    result = {"store": str(store), "rows": len(st), "feature_dim": fp.get("feature_dim"), "feature_sets": sets,
              "labels": st.label_counts(), "verdicts": st.verdict_counts(), "verdicts_total": len(st.verdicts()),
              "failures": [f.__dict__ for f in st.failures], "checksums_verified": verify,
              "fingerprint": fp, "fingerprint_id": fingerprint_id(fp) if fp else None,
              "indexes": check_indexes(st, deep=False) if st.format_version != 1 else {}}
    if json_out:
        print_json(result)
        return
    typer.echo(f"{store}: {result['rows']} rows × {result['feature_dim']} features"
               + ("; every feature checksum verified" if verify else ""))
    if len(sets) > 1:
        typer.echo("feature sets: " + ", ".join(f"{k} ({v['feature_dim']}-d, {v['rows']} rows)" for k, v in sets.items()))
    for name, count in sorted(result["labels"].items()):
        typer.echo(f"  {name or '(unlabelled)'}: {count}")
    if result["verdicts_total"]:
        typer.echo(f"verdicts: {result['verdicts_total']} in the log; latest per image: "
                   + ", ".join(f"{k} {v}" for k, v in sorted(result["verdicts"].items())))
    typer.echo(f"failures: {len(result['failures'])}")
    for f in result["failures"][:20]:
        typer.echo(f"  {printable(f['reason'])}")  # plain echo: never read as markup
    for name, ist in result["indexes"].items():
        if ist["built"]:
            typer.echo(describe(name, ist))
    typer.echo(f"fingerprint {result['fingerprint_id']}: " + ", ".join(f"{k}={v}" for k, v in fp.items()))
