"""Exact cosine search: float32 matrix products over unit rows, streamed in blocks, merged into a top-k.

This is the reference the approximate index is measured against, and the search used for the rows
an index does not cover yet (a store smaller than an index is worth, rows added since the last
update, a filter that leaves few rows).
"""

from __future__ import annotations

from typing import Iterable, Iterator

import numpy as np

__all__ = ["normalise", "TopK", "exact_top_k", "store_blocks"]

BLOCK_ROWS = 16384  # 128 MiB of float32 at 2048-d: large enough for BLAS, small enough to bound memory


def normalise(X) -> np.ndarray:
    """Rows of ``X`` scaled to unit length, float32 (all-zero rows stay zero instead of becoming nan)."""
    X = np.asarray(X, dtype=np.float32)
    norms = np.linalg.norm(X, axis=-1, keepdims=True)
    return np.divide(X, norms, out=np.zeros_like(X), where=norms > 0)


class TopK:
    """The k best (row, similarity) pairs of each of ``q`` queries, merged block by block.

    Parameters
    ----------
    q : int
        Number of queries.
    k : int
        Pairs kept per query.
    """

    def __init__(self, q: int, k: int):
        self.k = int(k)
        self.rows = np.full((q, 0), -1, np.int64)
        self.sims = np.full((q, 0), -np.inf, np.float32)

    def push(self, rows: np.ndarray, sims: np.ndarray) -> None:
        """Offer candidates: ``rows`` int64 ``(m,)`` shared by all queries or ``(q, m)``; ``sims`` ``(q, m)``."""
        sims = np.asarray(sims, np.float32)
        rows = np.broadcast_to(np.asarray(rows, np.int64), sims.shape)
        all_rows = np.concatenate([self.rows, rows], axis=1)
        all_sims = np.concatenate([self.sims, sims], axis=1)
        if all_sims.shape[1] > self.k:
            # partition first (a full sort of a 16k-wide block per query would cost more than the product),
            # then keep ties at the k-th value by row, so that results never depend on block order
            kth = -np.partition(-all_sims, self.k - 1, axis=1)[:, self.k - 1]
            rows_out = np.empty((len(all_sims), self.k), np.int64)
            sims_out = np.empty((len(all_sims), self.k), np.float32)
            for i, (r, s) in enumerate(zip(all_rows, all_sims)):
                cand = np.flatnonzero(s >= kth[i])
                best = cand[np.lexsort((r[cand], -s[cand]))[: self.k]]
                rows_out[i], sims_out[i] = r[best], s[best]
            all_rows, all_sims = rows_out, sims_out
        self.rows, self.sims = all_rows, all_sims

    def result(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per query: ``(rows, similarities)`` best first, without the padding of unfilled places."""
        out = []
        for rows, sims in zip(self.rows, self.sims):
            order = np.lexsort((rows, -sims))  # ties broken by row, so results are reproducible
            rows, sims = rows[order], sims[order]
            keep = np.isfinite(sims) & (rows >= 0)
            out.append((rows[keep], sims[keep]))
        return out


def exact_top_k(queries: np.ndarray, blocks: Iterable[tuple[np.ndarray, np.ndarray]], k: int, *,
                exclude: np.ndarray | None = None, top: TopK | None = None) -> TopK:
    """Exact cosine top-``k`` of unit ``queries`` ``(q, d)`` over ``(rows, X)`` blocks.

    Parameters
    ----------
    queries : ndarray
        Unit query vectors, float32 ``(q, d)``.
    blocks : iterable of (rows, X)
        Store rows (int64 ``(m,)``) and their features ``(m, d)`` (normalised here).
    k : int
        Results per query.
    exclude : ndarray, optional
        int64 ``(q,)``: one row each query must never return (its own row; -1 for none).
    top : TopK, optional
        An accumulator to merge into (e.g. one holding the index's candidates).
    """
    queries = np.asarray(queries, np.float32)
    top = top or TopK(len(queries), k)
    for rows, X in blocks:
        if not len(rows):
            continue
        sims = queries @ normalise(X).T
        if exclude is not None:
            sims[np.asarray(exclude)[:, None] == rows[None, :]] = -np.inf
        top.push(rows, sims)
    return top


def store_blocks(store, rows: np.ndarray, feature_set: str = "pooled",
                 block_rows: int = BLOCK_ROWS) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``(rows, features)`` of the given store rows, in blocks of at most ``block_rows`` (memory bounded)."""
    rows = np.asarray(rows, np.int64)
    for start in range(0, len(rows), block_rows):
        part = rows[start:start + block_rows]
        yield part, store.features(part, feature_set)
