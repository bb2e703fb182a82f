"""Options shared by several commands, defined once (typer ``Annotated`` style).

The default store path lives here and nowhere in the library: library calls always take a store.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, List, Optional

import typer

DEFAULT_STORE = Path("artifacts/features.h5")
# classifiers.grouping.DEFAULT_THRESHOLD (tests/test_similar.py checks they agree), not imported from there:
# that would load scikit-learn for every command, a `similar` on a stored sha256 included
DEDUPE_THRESHOLD = 0.90

StoreOpt = Annotated[Path, typer.Option("--store", help="HDF5 feature store.")]
StoreArg = Annotated[Path, typer.Argument(help="HDF5 feature store.")]
WeightsOpt = Annotated[Optional[Path], typer.Option(
    "--weights", help="Explicit ResNet50 weights file (else $STYLESIFT_WEIGHTS, the cache, Keras, npm).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="Say more: every skipped or failed file, runtime notices.")]
PositiveOpt = Annotated[str, typer.Option("--positive", help="Store label of the images to find (the style).")]
RecallOpt = Annotated[float, typer.Option(
    "--target-recall", min=0.01, max=0.99, help="One-class methods: share of held-out positives kept above the threshold.")]
BatchOpt = Annotated[int, typer.Option("--batch-size", min=1, help="Images per network call.")]
DecodeMemoryOpt = Annotated[Optional[str], typer.Option(
    "--decode-memory", metavar="SIZE", help="Memory all decoding threads together may hold, e.g. 1G or 1536M (default 1G); "
    "a file that needs more fails with that reason and the run goes on.")]
ModelArg = Annotated[Path, typer.Argument(help="Model bundle written by `stylesift train`.")]
PathsArg = Annotated[List[Path], typer.Argument(help="Image files and folders (searched recursively).")]


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
RuntimeOpt = Annotated[Runtime, typer.Option("--runtime", help=RUNTIME_HELP)]
