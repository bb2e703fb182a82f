"""Rank stored rows with a saved model, from their stored features: no image is read, no network runs.

``score`` featurizes files and scores them; ``rank`` asks the other question of a store that already
holds a year of feed: which stored rows does this model like best? Features are read and scored in
blocks, so memory is bounded by the block (and the ``top_k`` kept), not by the store.
"""

from __future__ import annotations

import csv
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from stylesift.atomic import atomic_write
from stylesift.classifiers.bundle import Bundle, BundleError, check_fingerprint, read_header
from stylesift.classifiers.feature_sets import bundle_set, check_set, load_features, parts, store_fingerprints

__all__ = ["RankResult", "rank", "BLOCK_ROWS"]

BLOCK_ROWS = 16384  # 128 MiB of pooled float32 features per block
DETAIL_ROWS = 2000  # up to this many ranked rows, their ids and labels are read one by one (see _details)


@dataclass
class RankResult:
    """Ranked rows, best first: ``sha256``, ``path``, ``label``, ``score``, ``selected`` (score ≥ the model's threshold)."""

    rows: list[dict] = field(default_factory=list)
    scored: int = 0
    threshold: float = 0.0
    feature_set: str = "pooled"
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return {"rows": self.rows, "scored": self.scored, "threshold": self.threshold, "feature_set": self.feature_set}

    def write_csv(self, path) -> Path:
        """rank, sha256, score, selected, label, path, path_b64 — one line per row, written atomically."""
        from stylesift.featurizer.store import path_fields

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path, "w") as fh:
            w = csv.writer(fh)
            w.writerow(["rank", "sha256", "score", "selected", "label", "path", "path_b64"])
            for i, r in enumerate(self.rows, 1):
                shown = path_fields(r["path"]) if r["path"] is not None else {"path": ""}
                w.writerow([i, r["sha256"], repr(r["score"]), int(r["selected"]), r["label"], shown["path"],
                            shown.get("path_b64", "")])
        return path


def load_for_store(model, store) -> Bundle:
    """Load a bundle after checking that ``store`` (open) holds its feature space, as ``score`` does."""
    header = read_header(model)  # an old or damaged bundle is refused before anything is built
    fp = store.fingerprint
    if fp is None:
        raise BundleError(f"{store.path}: the store holds no rows yet; nothing to rank")
    try:
        check_fingerprint(header, fp, model)
    except BundleError as exc:
        raise BundleError(f"{exc} (the feature store {store.path} holds another feature space; pass --store "
                          "with a store of the model's feature space)") from None
    return Bundle.load(model, fingerprint=fp)


def rank(model, store_path, *, since_days: float | None = None, unlabelled: bool = False, top_k: int | None = None,
         block_rows: int = BLOCK_ROWS, now: float | None = None) -> RankResult:
    """Score stored rows with the model at ``model`` and return them best first.

    Parameters
    ----------
    model : path
        A bundle written by ``stylesift train``; its feature space must be the store's.
    store_path : path
        The store.
    since_days : float, optional
        Only rows extracted in the last ``since_days`` days.
    unlabelled : bool
        Only rows without a label (what a reviewer has not seen).
    top_k : int, optional
        Keep only the ``top_k`` best (memory: ``top_k`` rows, not the store's); else every row.
    block_rows : int
        Rows read and scored at a time.
    """
    from stylesift.featurizer.store import FeatureStore

    started = time.perf_counter()
    st = FeatureStore(store_path)
    bundle = load_for_store(model, st)
    name = bundle_set(bundle.summary)
    check_set(bundle.summary, store_fingerprints(st), store_path)
    keep = np.ones(len(st), bool)
    for p in parts(name):  # rows lacking a part of the model's set cannot be scored: left out, not an error
        keep &= st.has_features(p)
    if unlabelled:
        keep &= st.labels.astype(str) == ""
    if since_days is not None:
        keep &= st.added >= (time.time() if now is None else now) - float(since_days) * 86400.0
    rows = np.flatnonzero(keep)
    best_rows, best_scores = np.zeros(0, np.int64), np.zeros(0, np.float64)
    for start in range(0, len(rows), block_rows):
        block = rows[start:start + block_rows]
        scores = np.asarray(bundle.score(load_features(st, block, name)), np.float64)
        best_rows, best_scores = np.concatenate([best_rows, block]), np.concatenate([best_scores, scores])
        if top_k is not None and len(best_rows) > top_k:
            # keep the running top-k only: memory stays k + one block however large the store
            top = np.argpartition(-best_scores, top_k - 1)[:top_k] if top_k else np.zeros(0, np.int64)
            best_rows, best_scores = best_rows[top], best_scores[top]
    order = np.lexsort((best_rows, -best_scores))
    best_rows, best_scores = best_rows[order], best_scores[order]
    threshold = float(bundle.threshold)
    result = RankResult(scored=int(len(rows)), threshold=threshold, feature_set=name)
    result.rows = [{"sha256": sha, "path": (st.paths(int(r)) or [None])[0], "label": label, "score": float(s),
                    "selected": bool(s >= threshold)}
                   for (sha, label), r, s in zip(_details(st, best_rows), best_rows, best_scores)]
    result.seconds = time.perf_counter() - started
    return result


def _details(store, rows: np.ndarray) -> list[tuple[str, str]]:
    """``(sha256, label)`` of the ranked rows: read row by row for a top-k, as whole columns for many rows.

    (Every row's ids and labels take seconds to build at a million rows, more than scoring them; a few
    hundred rows read one by one take milliseconds.)
    """
    if len(rows) <= DETAIL_ROWS:
        return store.row_details(rows.tolist())
    sha, labels = store.sha256, store.labels
    return [(str(sha[r]), str(labels[r])) for r in rows]
