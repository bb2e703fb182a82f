"""What the Ray engine computes, and the options it refuses: the rules the command line checks first.

The workers run one feature space on one runtime: float32 ResNet50 on Keras, with any of the
feature sets local extraction computes (``pooled``, ``style``, and ``detail`` from native-resolution
tiles, which each worker decodes from the file itself). :func:`worker_spec` is what the driver sends
each worker to build its networks from; the checks below say, option by option, why anything else is
refused (the command line shows the message as a usage error on that option).
"""

from __future__ import annotations

import os

from stylesift.featurizer.ray.errors import RayOptionError
from stylesift.featurizer.space import INPUT_SIZE

SPACE = "float32"
RUNTIME = "keras"
RUNTIMES = ("auto", RUNTIME)  # what --runtime may say with --engine ray
FEATURE_SETS = ("pooled", "style", "detail")  # every stored set the workers can compute


def worker_spec(input_size: int = INPUT_SIZE, feature_sets: tuple[str, ...] = ("pooled",)) -> dict:
    """What every worker builds: the :class:`~stylesift.featurizer.extract.Featurizer` of these settings."""
    return {"space": SPACE, "runtime": RUNTIME, "feature_sets": list(feature_sets), "input_size": int(input_size)}


def check_options(ray: bool, *, address: str | None = None, precision: str = SPACE,
                  backbone: str | os.PathLike | None = None, runtime: str = "auto") -> None:
    """Raise :class:`RayOptionError` for an option the engine chosen (Ray when ``ray``, else local) cannot take."""
    if address and not ray:
        raise RayOptionError("only means something with --engine ray", "--address")
    if not ray:
        return
    if precision != SPACE:
        raise RayOptionError(f"the ray engine runs {SPACE} only", "--precision")
    if backbone is not None:
        raise RayOptionError("the ray engine runs ResNet50 only", "--backbone")
    if runtime not in RUNTIMES:
        raise RayOptionError("the ray engine runs Keras only", "--runtime")


def check_feature_sets(ray: bool, feature_sets: tuple[str, ...]) -> None:
    """Raise :class:`RayOptionError` unless the engine chosen computes the stored sets ``feature_sets``."""
    other = [name for name in feature_sets if name not in FEATURE_SETS]
    if ray and other:
        raise RayOptionError(f"the ray engine computes {', '.join(FEATURE_SETS)}, not {', '.join(other)}", "--features")
