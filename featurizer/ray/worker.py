"""The Ray engine's worker actor: builds the driver's backbone once, checks its fingerprint, featurizes batches.

A worker is sent the driver's fingerprint and a backbone spec (:func:`featurizer.ray.rules.worker_spec`),
builds that backbone with the same factory local extraction uses (:func:`featurizer.backbones.runtimes.build`),
and refuses all work when what it loaded gives another feature space than the driver's store.
Files are decoded with the same :func:`~featurizer.extract.prepare_file` as local mode, so failures
carry the same reasons. Nothing here imports Ray or a network at import time.
"""

from __future__ import annotations

import os
import socket
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np

from stylesift.atomic import atomic_path
from stylesift.featurizer.extract import prepare_file
from stylesift.featurizer.ray.errors import RayEngineError, WorkerMismatch
from stylesift.featurizer.space import differences, fingerprint_id, same_space
from stylesift.featurizer.store import NONFINITE, split_finite
from stylesift.featurizer.weights import Weights

PACKAGES = ("stylesift", "tensorflow", "keras", "numpy", "pillow")


class Worker:
    """A Ray actor body: loads the backbone once, checks its fingerprint, featurizes batches of paths.

    Parameters
    ----------
    expected : dict
        The driver's (the store's) pooled fingerprint.
    spec : dict
        The backbone to build: ``space``, ``runtime``, ``feature_sets`` and ``input_size``.
    weights_source : str, optional
        Name of the actor holding the driver's weight file; None: ``weights_path`` is resolved here.
    weights_path : str, optional
        The weights file the user named (else this node's cache, Keras or npm).
    threads : int
        CPUs reserved for this worker: decoding and network threads.

    Never raises from ``__init__``: a refusal or a start-up error is kept and reported by :meth:`info`
    (so the driver can show it plainly), and :meth:`featurize` refuses to work after one.
    """

    def __init__(self, expected: dict, spec: dict, weights_source: str | None, weights_path: str | None,
                 threads: int):
        self.spec = dict(spec)
        self.input_size = int(spec["input_size"])
        self.node = socket.gethostname()
        self.refused: str | None = None
        self.error: str | None = None
        self.fingerprint: dict | None = None
        self.feature_dim: int | None = None
        self.backbone = None
        self.pool = ThreadPoolExecutor(max(2, threads), thread_name_prefix="stylesift-decode")
        try:
            self._load(expected, weights_source, weights_path, threads)
        except Exception as exc:  # noqa: BLE001 - reported by info() with the node's name
            self.error = f"{self.node}: {type(exc).__name__}: {exc}"

    def _load(self, expected, weights_source, weights_path, threads) -> None:
        from stylesift.featurizer.weights import resolve

        if weights_source is not None:
            import ray

            # Keras loads weights from a file only; keep it node-local and private to this process.
            with tempfile.TemporaryDirectory(prefix="stylesift-weights-") as tmp:
                local = Path(tmp) / "shipped.weights.h5"
                local.write_bytes(ray.get(ray.get_actor(weights_source).blob.remote()))
                weights = Weights(notop=local, top=None, source="shipped by the Ray driver", fingerprint="")
                self.backbone = self._build(weights, threads)
        else:
            weights = resolve(weights_path)
            self.backbone = self._build(weights, threads)
        self.fingerprint = self._loaded_fingerprint(weights)
        self.feature_dim = int(self.fingerprint["feature_dim"])
        if not same_space(expected, self.fingerprint):
            diff = differences(expected, self.fingerprint)
            self.refused = (f"Ray worker on {self.node} refused: its backbone gives another feature space than the "
                            f"store's; differences (driver, worker): {diff}. Give every node the same weights "
                            "(or let the driver ship them) and the same stylesift version.")
            self.backbone = None

    def _build(self, weights: Weights, threads: int):
        """The spec's backbone, from the factory local extraction uses; one network thread per reserved CPU."""
        from stylesift.featurizer.backbones import runtimes

        if self.spec["runtime"] == "keras":
            import tensorflow as tf

            # Several workers on a node must not oversubscribe it.
            tf.config.threading.set_intra_op_parallelism_threads(max(1, int(threads)))
            tf.config.threading.set_inter_op_parallelism_threads(1)
        return runtimes.build(weights, self.spec["space"], self.spec["runtime"], tuple(self.spec["feature_sets"]),
                              input_size=self.input_size, threads=max(1, int(threads)))

    def _loaded_fingerprint(self, weights: Weights) -> dict:
        """The pooled fingerprint of what was actually loaded, not what a cache record (or the driver) claims."""
        from stylesift.featurizer.backbones import runtimes
        from stylesift.featurizer.weights import values_fingerprint

        network = getattr(self.backbone, "resnet", None)  # Keras: the weights as loaded, hashed value by value
        if network is None:
            raise RayEngineError(f"the {self.spec['runtime']} runtime cannot prove which weights it loaded; "
                                 "the Ray engine runs Keras")
        loaded = replace(weights, fingerprint=values_fingerprint(network))
        return runtimes.pooled_fingerprint(loaded, self.spec["space"], input_size=self.input_size)

    def info(self) -> dict:
        """Where this worker runs, whether it refused or failed to start, its package versions and CPU time."""
        return {"node": self.node, "pid": os.getpid(), "refused": self.refused, "cpu_seconds": time.process_time(),
                "error": f"Ray worker on {self.error}" if self.error else None,
                "fingerprint_id": fingerprint_id(self.fingerprint) if self.fingerprint else None,
                "versions": versions()}

    def featurize(self, batch: list[tuple[str, str]], drop: tuple[str, str] | None = None, label: str | None = None) -> dict:
        """Decode and featurize ``[(sha256, path), ...]``.

        Returns ``{"sha256": [...], "features": float32 (n_ok, feature_dim), "errors": {sha256: reason}}``:
        the contents that worked, in order, and the reason (naming the file) for each that did not.
        When ``drop`` is ``(folder, token)`` and this worker sees the driver's probe file in that folder,
        the finite rows are written there as a segment file instead: ``"segment"`` is its path and
        ``"features"`` is empty; non-finite rows are then among the ``errors``.
        """
        if self.refused:
            raise WorkerMismatch(self.refused)
        if self.error:
            raise RayEngineError(f"Ray worker on {self.error}")
        items = list(self.pool.map(lambda sp: prepare_file(Path(sp[1]), self.input_size), batch))
        ok, images, errors = [], [], {}
        for (sha, path), item in zip(batch, items):
            if item.error is not None:
                if item.size == -1:
                    item.error += (f" (on Ray node {self.node}; the driver could read it: every node must see "
                                   "the same paths)")
                errors[sha] = item.error
            elif item.sha256 != sha:
                errors[sha] = f"{path}: changed while being extracted (other content than when listed); run again"
            else:
                ok.append(sha)
                images.append(item.image)
        features = self.backbone(np.stack(images)) if images else np.zeros((0, self.feature_dim), np.float32)
        if ok and drop is not None and os.path.exists(os.path.join(drop[0], f".probe-{drop[1]}")):
            path_of = dict(batch)
            good, feats, bad = split_finite(ok, features)
            for sha in bad:
                errors[sha] = f"{path_of[sha]}: {NONFINITE}"
            segment = write_own_segment(drop, good, feats, [path_of[sha] for sha in good], label) if good else None
            return {"sha256": good, "features": np.zeros((0, features.shape[1]), np.float32), "errors": errors,
                    "segment": segment}
        return {"sha256": ok, "features": features, "errors": errors}


def write_own_segment(drop: tuple[str, str], sha256s: list[str], features: np.ndarray, paths: list[str],
                      label: str | None) -> str:
    """Write one batch as a segment file in the store's incoming folder (atomically); its path."""
    from stylesift.featurizer.store.segments import write_segment

    folder, token = drop
    final = os.path.join(folder, f"{token}-{uuid.uuid4().hex[:12]}.h5")
    # The temp name holds the token too: the driver clears a lost batch's leftovers with the probe.
    with atomic_path(final) as tmp:
        write_segment(tmp, np.array(sha256s, "S64"), {"pooled": np.asarray(features, np.float32)},
                      [label or ""] * len(sha256s), [[os.fsencode(p)] for p in paths], np.full(len(sha256s), time.time()))
    return final


def versions() -> dict[str, str | None]:
    """The installed versions of :data:`PACKAGES` (None where one is missing)."""
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in PACKAGES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found
