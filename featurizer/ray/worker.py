"""The Ray engine's worker actor: builds the driver's networks once, checks their fingerprints, featurizes batches.

A worker is sent the driver's fingerprints (one per feature set) and a spec (:func:`featurizer.ray.rules.worker_spec`),
builds the same :class:`~featurizer.extract.Featurizer` local extraction uses (its whole-image backbone and,
for ``detail``, its tile network), and refuses all work when what it loaded gives another feature space
than the driver's store in any set: other weights, or another recipe (a ``detail`` fingerprint names the
tiles, layers and decoder of the stylesift installed on the node). Files are decoded with the same
:func:`~featurizer.extract.prepare_file` as local mode (tiles included), so failures carry the same
reasons and features are the same. Nothing here imports Ray or a network at import time.
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

PACKAGES = ("stylesift", "tensorflow", "keras", "numpy", "pillow", "pyvips")


class Worker:
    """A Ray actor body: loads the backbone once, checks its fingerprint, featurizes batches of paths.

    Parameters
    ----------
    expected : dict
        The driver's (the store's) fingerprints, ``{set: fingerprint}`` for every set of ``spec``.
    spec : dict
        What to build: ``space``, ``runtime``, ``feature_sets`` and ``input_size``.
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
        self.fingerprints: dict | None = None
        self.featurizer = None
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
                self.featurizer = self._build(weights, threads)
        else:
            weights = resolve(weights_path)
            self.featurizer = self._build(weights, threads)
        self.fingerprints = self._loaded_fingerprints(weights)
        self.refused = refusal(expected, self.fingerprints, self.node)
        if self.refused:
            self.featurizer = None

    def _build(self, weights: Weights, threads: int):
        """The spec's featurizer, its networks built now (while a shipped weight file exists); one thread per CPU."""
        from stylesift.featurizer.extract import Featurizer

        if self.spec["runtime"] == "keras":
            import tensorflow as tf

            # Several workers on a node must not oversubscribe it.
            tf.config.threading.set_intra_op_parallelism_threads(max(1, int(threads)))
            tf.config.threading.set_inter_op_parallelism_threads(1)
        featurizer = Featurizer(weights, workers=max(1, int(threads)), input_size=self.input_size,
                                space=self.spec["space"], runtime=self.spec["runtime"],
                                feature_sets=tuple(self.spec["feature_sets"]))
        featurizer.backbone  # noqa: B018 - built here, not at the first batch
        if featurizer.wants_detail:
            featurizer.detail_net  # noqa: B018
            _check_tile_decoder()
        return featurizer

    def _loaded_fingerprints(self, weights: Weights) -> dict:
        """``{set: fingerprint}`` of what was actually loaded, not what a cache record (or the driver) claims.

        The weights are hashed value by value as the whole-image network holds them; the ``detail`` network
        is loaded from the same file in this process, and its fingerprint adds this node's tile recipe.
        """
        from stylesift.featurizer.backbones import runtimes
        from stylesift.featurizer.weights import values_fingerprint

        network = getattr(self.featurizer.backbone, "resnet", None)  # Keras: the weights as loaded
        if network is None:
            raise RayEngineError(f"the {self.spec['runtime']} runtime cannot prove which weights it loaded; "
                                 "the Ray engine runs Keras")
        loaded = replace(weights, fingerprint=values_fingerprint(network))
        return runtimes.fingerprints(loaded, self.spec["space"], tuple(self.spec["feature_sets"]),
                                     input_size=self.input_size)

    def info(self) -> dict:
        """Where this worker runs, whether it refused or failed to start, its package versions and CPU time."""
        fingerprints = self.fingerprints or {}
        return {"node": self.node, "pid": os.getpid(), "refused": self.refused, "cpu_seconds": time.process_time(),
                "error": f"Ray worker on {self.error}" if self.error else None,
                "fingerprint_id": fingerprint_id(fingerprints["pooled"]) if "pooled" in fingerprints else None,
                "fingerprint_ids": {name: fingerprint_id(fp) for name, fp in fingerprints.items()},
                "versions": versions()}

    def featurize(self, batch: list[tuple[str, str]], drop: tuple[str, str] | None = None, label: str | None = None,
                  sets: list[str] | None = None) -> dict:
        """Decode and featurize ``[(sha256, path), ...]``.

        Returns ``{"sha256": [...], "features": {set: float32 (n_ok, d)}, "errors": {sha256: reason}}``:
        the contents that worked, in order, and the reason (naming the file) for each that did not.
        ``sets``: only these sets, for rows the store holds already without them (a backfill; the
        ``detail`` set alone needs no whole-image network); default: every set of the spec. When
        ``drop`` is ``(folder, token)`` and this worker sees the driver's probe file in that folder,
        the finite rows are written there as a segment file instead: ``"segment"`` is its path and
        ``"features"`` is empty; non-finite rows are then among the ``errors``.
        """
        if self.refused:
            raise WorkerMismatch(self.refused)
        if self.error:
            raise RayEngineError(f"Ray worker on {self.error}")
        fz = self.featurizer
        detail = fz.wants_detail and (sets is None or "detail" in sets)
        items = list(self.pool.map(lambda sp: prepare_file(Path(sp[1]), self.input_size, detail=detail), batch))
        ok, good_items, errors = [], [], {}
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
                good_items.append(item)
        features = self._features(good_items, sets)
        if ok and sets is None and drop is not None and os.path.exists(os.path.join(drop[0], f".probe-{drop[1]}")):
            path_of = dict(batch)
            good, feats, bad = split_finite(ok, features)
            for sha in bad:
                errors[sha] = f"{path_of[sha]}: {NONFINITE}"
            segment = write_own_segment(drop, good, feats, [path_of[sha] for sha in good], label) if good else None
            return {"sha256": good, "features": {}, "errors": errors, "segment": segment}
        return {"sha256": ok, "features": features, "errors": errors}

    def _features(self, items: list, sets: list[str] | None) -> dict[str, np.ndarray]:
        """``{set: float32 (n, d)}`` of decoded files, as local extraction computes them (``sets``: only those)."""
        fz = self.featurizer
        if not items:
            return {name: np.zeros((0, int(fp["feature_dim"])), np.float32) for name, fp in self.fingerprints.items()
                    if sets is None or name in sets}
        tiles = np.stack([it.tiles for it in items]) if items[0].tiles is not None else None
        if sets is not None and set(sets) == {"detail"}:
            return {"detail": fz.detail_net(tiles)}
        out = fz.featurize_sets(np.stack([it.image for it in items]), tiles)
        return out if sets is None else {name: out[name] for name in sets}


def refusal(expected: dict[str, dict], loaded: dict[str, dict], node: str) -> str | None:
    """Why a worker on ``node`` must not work for the driver (None when every set is the driver's space).

    ``expected`` and ``loaded`` are ``{set: fingerprint}``: the driver's (its store's) and what the worker
    loaded. A set the driver asks for that the worker cannot name is a difference too.
    """
    differ = {name: differences(fp, loaded.get(name) or {}) for name, fp in expected.items()
              if not same_space(fp, loaded.get(name))}
    if not differ:
        return None
    sets = ", ".join(differ)
    return (f"Ray worker on {node} refused: it gives another feature space than the store's in {sets}; "
            f"differences (driver, worker): {differ}. Give every node the same weights (or let the driver ship "
            "them) and the same stylesift version (the detail set's recipe is part of it).")


def _check_tile_decoder() -> None:
    """Decode the tiles of a tiny JPEG now, so a node that cannot (no libvips) fails at start with the fix."""
    import io

    from PIL import Image

    from stylesift.featurizer.tiles import load_tiles

    out = io.BytesIO()
    Image.new("RGB", (16, 16), (128, 128, 128)).save(out, "JPEG")
    load_tiles(out.getvalue(), "the worker's start-up check")


def write_own_segment(drop: tuple[str, str], sha256s: list[str], features: dict[str, np.ndarray], paths: list[str],
                      label: str | None) -> str:
    """Write one batch (``{set: float32 (n, d)}``) as a segment file in the store's incoming folder, atomically; its path."""
    from stylesift.featurizer.store.segments import write_segment

    folder, token = drop
    final = os.path.join(folder, f"{token}-{uuid.uuid4().hex[:12]}.h5")
    # The temp name holds the token too: the driver clears a lost batch's leftovers with the probe.
    with atomic_path(final) as tmp:
        write_segment(tmp, np.array(sha256s, "S64"), {k: np.asarray(X, np.float32) for k, X in features.items()},
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
