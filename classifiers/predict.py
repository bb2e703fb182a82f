"""Score images with a model bundle: the one place where a bundle meets the featurizer.

New images are featurized into a feature store first, so scoring the same stream twice (or scoring
images that were extracted for training) costs a file hash per image and no network call.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from stylesift.atomic import atomic_write
from stylesift.classifiers.bundle import Bundle, BundleError, check_fingerprint, precision_of, read_header
from stylesift.classifiers.feature_sets import (
    DEFAULT_SET,
    bundle_set,
    check_set,
    load_features,
    store_fingerprints,
    stored_parts,
)
from stylesift.classifiers.grouping import choose, group_sizes
from stylesift.featurizer.search.history import HISTORY_THRESHOLD, seen_before


@dataclass
class ScoreResult:
    """Rows of one scoring run.

    ``rows``: one dict per scored image, in path order: ``path``, ``sha256``, ``score`` (higher =
    more like the positives) and ``selected``. ``failed``: ``{"path", "error"}`` for each file that
    could not be featurized. ``selection`` says how ``selected`` was decided.
    """

    rows: list[dict] = field(default_factory=list)
    failed: list[dict] = field(default_factory=list)
    selection: dict = field(default_factory=dict)
    interrupted: bool = False
    skipped: list[dict] = field(default_factory=list)  # {"path", "reason"}: passed over by a folder walk

    def __iter__(self):
        return iter(self.rows)

    def __len__(self) -> int:
        return len(self.rows)

    def to_dict(self) -> dict:
        return {"rows": self.rows, "failed": self.failed, "selection": self.selection, "interrupted": self.interrupted}

    def write_csv(self, path) -> Path:
        """Write the scores CSV (path, sha256, score, selected, error, path_b64, group, group_size, seen_label,
        seen_sha256), atomically.

        The one writer of it (the CLI's ``score --out`` and the demo). ``group``/``group_size`` are the
        near-duplicate group (empty without dedupe); ``seen_label``/``seen_sha256`` the judged stored
        image an upload repeats (empty when none). ``path`` is the printable form (bytes that are not
        UTF-8 shown as U+FFFD); ``path_b64`` holds the exact name's bytes in base64, only for such names.
        Failed files come last, with an empty score and their error.
        """
        import csv

        from stylesift.featurizer.store import display_path, path_fields

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["path", "sha256", "score", "selected", "error", "path_b64", "group", "group_size", "seen_label",
                        "seen_sha256"])
            for r in self.rows:
                shown = path_fields(r["path"])
                seen = r.get("seen_before") or {}
                w.writerow([shown["path"], r["sha256"], repr(r["score"]), int(r["selected"]), "",
                            shown.get("path_b64", ""), r.get("group", ""), r.get("group_size", ""),
                            seen.get("label", ""), seen.get("sha256", "")])
            for f in self.failed:
                shown = path_fields(f["path"])
                w.writerow([shown["path"], "", "", "", display_path(f["error"]), shown.get("path_b64", "")])
        return path


class Predictor:
    """A bundle, a featurizer and a feature store, ready to score image files.

    Parameters
    ----------
    bundle : Bundle
    store : path or None
        Feature store new images are featurized into (created if missing); it must hold the
        bundle's feature space. None for a predictor whose features come from elsewhere (the
        scoring service without ``--store``): it cannot :meth:`score` files.
    featurizer : featurizer.extract.Featurizer, optional
        Built from ``weights`` when not given; its fingerprint must be the bundle's.
    weights : path, optional
        Explicit weights file for the featurizer.
    runtime : str
        What computes the bundle's feature space (``auto``: the fastest proven one on this machine).
    backbone_file : path, optional
        A bring-your-own backbone file, when the bundle's is not at the path it recorded.
    """

    def __init__(self, bundle: Bundle, store, *, featurizer=None, weights=None, runtime: str = "auto",
                 backbone_file=None):
        from stylesift.featurizer.extract import Featurizer

        self.bundle = bundle
        self.store = None if store is None else Path(store)
        if featurizer is None:
            precision_of(bundle.fingerprint)
            featurizer = Featurizer.for_fingerprint(bundle.fingerprint, weights, runtime=runtime, backbone_file=backbone_file,
                                                    feature_sets=stored_parts([bundle_set(bundle.summary)]))
        self.featurizer = featurizer
        check_fingerprint(bundle.header(b""), self.featurizer.fingerprint, "model bundle")

    @classmethod
    def load(cls, model, store, *, weights=None, featurizer=None, runtime: str = "auto",
             backbone_file=None) -> "Predictor":
        """Load the bundle at ``model`` after checking it against this featurizer and ``store``.

        The bundle's checksum, feature-space fingerprint (against the featurizer's and, when it
        exists, the store's) and library versions are all checked before anything is unpickled.
        """
        header = read_header(model)  # first: an old or damaged bundle is refused before TensorFlow loads

        from stylesift.featurizer.store import FeatureStore

        if featurizer is None:
            from stylesift.featurizer.extract import Featurizer

            # The bundle's fingerprint decides the backbone: an int8-trained model scores with the int8 network
            # of its recipe (a bundle of the first int8 recipe with ONNX Runtime), on the runtime asked for.
            precision_of(header["fingerprint"], model)
            featurizer = Featurizer.for_fingerprint(header["fingerprint"], weights, runtime=runtime,
                                                    backbone_file=backbone_file,
                                                    feature_sets=stored_parts([bundle_set(header.get("summary"))]))
        check_fingerprint(header, featurizer.fingerprint, model)
        store = None if store is None else Path(store)
        if store is not None and store.exists():
            fp = FeatureStore(store).fingerprint
            if fp is not None:
                try:
                    check_fingerprint(header, fp, model)
                except BundleError as exc:
                    raise BundleError(f"{exc} (the feature store {store} holds another feature space; pass --store "
                                      "with a store of the model's feature space)") from None
        bundle = Bundle.load(model, fingerprint=featurizer.fingerprint)
        return cls(bundle, store, featurizer=featurizer)

    def score(self, paths: Iterable[str | os.PathLike], *, threshold: float | None = None, top_k: int | None = None,
              top_fraction: float | None = None, progress: Callable[[int, int], None] | None = None,
              dedupe: float | None = None, history: bool = True, history_threshold: float = HISTORY_THRESHOLD,
              keep_seen: bool = False) -> ScoreResult:
        """Featurize (through the store) and score image files and folders.

        Selection: ``threshold`` (default: the bundle's), or the ``top_k`` / ``top_fraction``
        highest scores of this run. ``dedupe`` (a cosine similarity, e.g.
        :data:`~stylesift.classifiers.grouping.DEFAULT_THRESHOLD`) groups near-duplicates: every row gets
        ``group`` and ``group_size``, and only a group's best-scoring row can be selected, so a
        group counts once toward ``top_k`` (see :func:`~stylesift.classifiers.grouping.select_distinct`).

        ``history``: every row gets ``seen_before``, None or the most similar *other* stored row that
        has a verdict when its pooled cosine is ≥ ``history_threshold``
        (:func:`~stylesift.featurizer.search.history.seen_before`); such rows are not selected unless
        ``keep_seen``.
        """
        from stylesift.featurizer.images import perceptual_hash
        from stylesift.featurizer.search.reposts import thumbnail_of
        from stylesift.featurizer.store import FeatureStore

        if self.store is None:
            raise BundleError("this predictor has no feature store to featurize files into; load it with a store path")
        report = self.featurizer.extract(paths, self.store, progress=progress)
        st = FeatureStore(self.store)
        check_fingerprint(self.bundle.header(b""), st.fingerprint or self.featurizer.fingerprint, self.store)
        items = list(report.sha256_by_path.items())
        rows = st.rows_of([sha for _, sha in items]) if items else np.zeros(0, np.int64)
        vanished = [{"path": p, "error": f"{p}: its row left the store {self.store} while scoring (pruned or repaired "
                                          "meanwhile); run the command again"} for (p, _), r in zip(items, rows) if r < 0]
        items, rows = [it for it, r in zip(items, rows) if r >= 0], rows[rows >= 0]
        X = st.features(rows) if len(rows) else None
        # The bundle's feature set (pooled, style, pooled+style); rows lacking it name the command that adds it.
        name = bundle_set(self.bundle.summary)
        check_set(self.bundle.summary, store_fingerprints(st), self.store)
        X_set = (X if name == DEFAULT_SET else load_features(st, rows, name)) if len(rows) else None
        features = X if len(rows) else np.zeros((0, 0), np.float32)
        paths = [p for p, _ in items]
        rows_out, selection = score_rows(self.bundle, paths, [sha for _, sha in items], features, X_set,
                                         store=st, threshold=threshold, top_k=top_k, top_fraction=top_fraction,
                                         dedupe=dedupe, history=history, history_threshold=history_threshold,
                                         keep_seen=keep_seen, hash_of=lambda i: perceptual_hash(paths[i]),
                                         thumb_of=lambda i: thumbnail_of(paths[i]))
        result = ScoreResult(selection=selection, interrupted=report.interrupted, skipped=list(getattr(report, "skipped", [])),
                             failed=[{"path": f["path"], "error": f["error"]} for f in report.failed] + vanished)
        result.rows = rows_out
        return result


def score_rows(bundle: Bundle, paths: list, sha256s: list[str], pooled: np.ndarray, X: np.ndarray | None, *,
               store=None, threshold: float | None = None, top_k: int | None = None, top_fraction: float | None = None,
               dedupe: float | None = None, history: bool = True, history_threshold: float = HISTORY_THRESHOLD,
               keep_seen: bool = False, hash_of: Callable[[int], int | None] | None = None,
               thumb_of: Callable[[int], np.ndarray | None] | None = None) -> tuple[list[dict], dict]:
    """The rows of one scoring run from its features: the one place where ``score`` and ``serve`` build them.

    Parameters
    ----------
    bundle : Bundle
    paths : list
        What each row is called (``score``: the file's path; the scoring service: the upload's name), ``(n,)``.
    sha256s : list of str
        The contents, ``(n,)``.
    pooled : ndarray of shape (n, d_pooled)
        Pooled features: near-duplicate groups and history compare them.
    X : ndarray of shape (n, d_set), optional
        Features of the bundle's feature set (None when ``n`` is 0).
    store : FeatureStore, optional
        Open store whose verdicts the history looks up; without one every ``seen_before`` is None.
    hash_of : callable, optional
        Row index → perceptual hash, for near-duplicate groups (see :func:`~stylesift.classifiers.grouping.choose`).
    thumb_of : callable, optional
        Row index → grey thumbnail of the image, so that history confirms reposts by pixel alignment
        (without it history uses pooled cosine alone; see :func:`~stylesift.featurizer.search.history.seen_before`).

    The other parameters are :meth:`Predictor.score`'s. Returns the rows (``path``, ``sha256``,
    ``score``, ``selected``; ``seen_before`` with ``history``; ``group``, ``group_size`` with ``dedupe``)
    and the selection rule.
    """
    n = len(sha256s)
    scores = bundle.score(X) if n else np.zeros(0)
    seen = (seen_before(store, list(sha256s), pooled, threshold=history_threshold, thumb_of=thumb_of)
            if history and n and store is not None else [None] * n)
    exclude = None if keep_seen else np.array([s is not None for s in seen], bool)
    chosen, groups, selection = choose(scores, bundle.threshold, threshold=threshold, top_k=top_k,
                                       top_fraction=top_fraction, dedupe=dedupe, features=pooled,
                                       hash_of=hash_of, exclude=exclude)
    if history:
        selection = {**selection, "history": {"threshold": float(history_threshold), "keep_seen": bool(keep_seen),
                                              "seen": int(sum(s is not None for s in seen))}}
    rows = [{"path": p, "sha256": sha, "score": float(s), "selected": bool(c)}
            for p, sha, s, c in zip(paths, sha256s, scores, chosen)]
    if history:
        for row, s in zip(rows, seen):
            row["seen_before"] = s
    if groups is not None:
        for row, g, size in zip(rows, groups, group_sizes(groups)):
            row["group"], row["group_size"] = int(g), int(size)
    return rows, selection
