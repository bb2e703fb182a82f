"""Commands over images and the feature store: weights, extract, info."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import List, Optional

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
from stylesift.cli.options import DEFAULT_STORE, BatchOpt, DecodeMemoryOpt, JsonOpt, StoreArg, VerboseOpt, WeightsOpt


class Engine(str, Enum):
    local = "local"
    ray = "ray"


class Precision(str, Enum):
    float32 = "float32"
    int8 = "int8"


class Runtime(str, Enum):
    auto = "auto"
    keras = "keras"
    openvino = "openvino"
    onnxruntime = "onnxruntime"


RUNTIME_HELP = ("What computes the features: auto (the fastest measured on this machine among the runtimes proven to "
                "give this precision's features; measured once, cached), keras, openvino, or onnxruntime (int8 of the "
                "first recipe, for stores and models made with it).")
BACKBONE_HELP = ("Bring your own backbone instead of ResNet50: an ONNX or OpenVINO IR (.xml) image-embedding network "
                 "with a JSON sidecar beside it (NAME.json: input_size, layout, channels, scale, mean, std, output).")


def weights(
    check: bool = typer.Option(False, "--check", help="Prove they are ImageNet weights by classifying two known photos."),
    weights_file: WeightsOpt = None,
    json_out: JsonOpt = False,
):
    """Find (or fetch and convert) the ImageNet ResNet50 weights and print where they are."""
    from stylesift.featurizer.imagenet_check import check_imagenet
    from stylesift.featurizer.weights import resolve

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
    paths: List[Path] = typer.Argument(..., help="Image files and folders (searched recursively)."),
    store: Path = typer.Option(DEFAULT_STORE, "--store", help="HDF5 feature store to add to (created if missing)."),
    label: Optional[str] = typer.Option(None, "--label", help="Label for these images, e.g. good / ordinary."),
    batch_size: BatchOpt = 32,
    workers: Optional[int] = typer.Option(None, "--workers", min=1, help="local: decoding threads (default: CPU count); ray: worker actors (default: one per cluster CPU)."),
    engine: Engine = typer.Option(Engine.local, "--engine", help="local: this machine; ray: Ray worker actors, the store written here (pip install 'stylesift\\[ray]')."),
    address: Optional[str] = typer.Option(None, "--address", help="Ray cluster for --engine ray: auto, HOST:6379 or ray://HOST:10001 (default: $RAY_ADDRESS, else a Ray instance on this machine)."),
    precision: Precision = typer.Option(Precision.float32, "--precision", help="float32, or int8: NNCF-quantized on OpenVINO, several times faster, its own feature space (pip install 'stylesift\\[fast]')."),
    runtime: Runtime = typer.Option(Runtime.auto, "--runtime", help=RUNTIME_HELP),
    backbone: Optional[Path] = typer.Option(None, "--backbone", help=BACKBONE_HELP),
    features: str = typer.Option("pooled", "--features", help="Feature sets each forward pass computes and the store "
                                 "keeps side by side: pooled (objects, 2048-d), style (the look: early-stage statistics); "
                                 "e.g. pooled,style. See README, Choosing features."),
    weights_file: WeightsOpt = None,
    verbose: VerboseOpt = False,
    decode_memory: DecodeMemoryOpt = None,
    json_out: JsonOpt = False,
):
    """Featurize images into the store; content already there is not featurized again."""
    from stylesift.featurizer.extract import Featurizer
    from stylesift.featurizer.ray_engine import RayEngine

    use_decode_memory(decode_memory)

    if address and engine is not Engine.ray:
        raise typer.BadParameter("only means something with --engine ray", param_hint="--address")
    if precision is not Precision.float32 and engine is Engine.ray:
        raise typer.BadParameter("the ray engine runs float32 only", param_hint="--precision")
    if backbone is not None and engine is Engine.ray:
        raise typer.BadParameter("the ray engine runs ResNet50 only", param_hint="--backbone")
    if runtime not in (Runtime.auto, Runtime.keras) and engine is Engine.ray:
        raise typer.BadParameter("the ray engine runs Keras only", param_hint="--runtime")
    from stylesift.classifiers.feature_sets import parse_sets, stored_parts

    feature_sets = stored_parts(parse_sets(features))
    if feature_sets != ("pooled",) and engine is Engine.ray:
        raise typer.BadParameter("the ray engine computes the pooled set only", param_hint="--features")
    try:
        if engine is Engine.ray:
            featurizer = RayEngine(weights_file, batch_size=batch_size, workers=workers, address=address)
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
    verify: bool = typer.Option(True, "--verify/--no-verify",
                                help="Read every feature chunk, so a damaged one is reported (--no-verify: counts only, "
                                     "instant on big stores; `stylesift store check` verifies everything)."),
    json_out: JsonOpt = False,
):
    """Rows, feature sets, counts per label and verdict, failures and fingerprint of a store."""
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
              "fingerprint": fp, "fingerprint_id": fingerprint_id(fp) if fp else None}
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
    typer.echo(f"fingerprint {result['fingerprint_id']}: " + ", ".join(f"{k}={v}" for k, v in fp.items()))
