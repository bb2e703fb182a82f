"""Extraction on a Ray cluster: the same store, row for row, as local extraction (see ``docs/ray.md``).

:mod:`~stylesift.featurizer.ray.driver` lists, hashes, submits and writes; :mod:`~stylesift.featurizer.ray.worker`
is the actor that builds the backbone and featurizes; :mod:`~stylesift.featurizer.ray.rules` says what the
engine computes and which options it refuses. Importing this package does not import Ray.
"""

from stylesift.featurizer.ray.driver import RayEngine
from stylesift.featurizer.ray.errors import RayEngineError, RayOptionError, WorkerMismatch, require_ray
from stylesift.featurizer.ray.rules import check_feature_sets, check_options, worker_spec
from stylesift.featurizer.ray.worker import PACKAGES

__all__ = ["PACKAGES", "RayEngine", "RayEngineError", "RayOptionError", "WorkerMismatch", "check_feature_sets",
           "check_options", "require_ray", "worker_spec"]
