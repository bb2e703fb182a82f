"""The approximate part of the index: a projection to fewer dimensions and an inverted file (IVF) over it.

Why this and not faiss or usearch: at 1,000,000 × 2048 the float32 rows are 8 GB, so an index has to
hold reduced vectors; with the rows projected onto their top principal directions (uncentred, so that
inner products of projections approximate cosines) and stored as float16, a million rows take
``1e6 × r × 2`` bytes (r = 256: 512 MB). The inverted file then scans only the ``nprobe`` lists
nearest the query, and the best candidates are re-ranked with exact cosines on the stored float32
rows, which recovers what the projection lost. ``benchmarks/index_bench.py`` measures this against
faiss and usearch on the same vectors; numpy alone met the targets, so the package needs no new
dependency (see docs/search.md for the numbers).

A :class:`Quantizer` is fitted once (on a sample of the rows); vectors of later rows are projected and
assigned with it, so an update costs what it adds. ``Quantizer.flat`` is the degenerate one used for
small stores: no projection, one list (an exact search over in-memory float16 rows).
"""

from __future__ import annotations

import numpy as np

from stylesift.featurizer.search.exact import normalise

__all__ = ["Quantizer", "InvertedLists", "REDUCED_DIM", "KMEANS_ITERS"]

REDUCED_DIM = 256
KMEANS_ITERS = 12


class Quantizer:
    """Projection (``(r, d)`` or None) and list centroids (``(nlist, r)``) of one index generation."""

    def __init__(self, components: np.ndarray | None, centroids: np.ndarray, dim: int):
        self.components = None if components is None else np.ascontiguousarray(components, np.float32)
        self.centroids = np.ascontiguousarray(centroids, np.float32)
        self.dim = int(dim)

    @property
    def reduced_dim(self) -> int:
        return self.dim if self.components is None else int(self.components.shape[0])

    @property
    def nlist(self) -> int:
        return int(self.centroids.shape[0])

    @classmethod
    def flat(cls, dim: int) -> "Quantizer":
        """No projection and one list: an exact scan of the stored float16 unit rows."""
        return cls(None, np.zeros((1, dim), np.float32), dim)

    @classmethod
    def fit(cls, X: np.ndarray, *, reduced_dim: int = REDUCED_DIM, nlist: int | None = None,
            iters: int = KMEANS_ITERS, seed: int = 0) -> "Quantizer":
        """Fit on unit rows ``X`` (a sample of the store): top right singular vectors, then k-means lists.

        ``nlist`` defaults to about ``4 × sqrt(len(X))`` (each list then holds a few hundred rows
        of the sample; as the store grows past 8× the sample the index is refitted, see ``index.py``).
        """
        X = np.asarray(X, np.float32)
        n, d = X.shape
        r = min(reduced_dim, d)
        # Uncentred PCA through the d × d Gram matrix: one BLAS product over the sample, then eigh.
        gram = (X.T @ X).astype(np.float64)
        _, vecs = np.linalg.eigh(gram)
        components = vecs[:, ::-1][:, :r].T.astype(np.float32)
        Z = X @ components.T
        nlist = int(nlist or max(1, min(n // 8, int(4 * np.sqrt(n)))))
        return cls(components, _kmeans(Z, nlist, iters, seed), d)

    def project(self, X: np.ndarray) -> np.ndarray:
        """Unit rows ``(m, d)`` → reduced ``(m, r)`` float32."""
        return X if self.components is None else X @ self.components.T

    def assign(self, Z: np.ndarray, block_rows: int = 8192) -> np.ndarray:
        """List of each reduced row (int32): the centroid of largest inner product."""
        out = np.empty(len(Z), np.int32)
        for s in range(0, len(Z), block_rows):
            out[s:s + block_rows] = np.argmax(Z[s:s + block_rows] @ self.centroids.T, axis=1)
        return out

    def arrays(self) -> dict[str, np.ndarray]:
        out = {"centroids": self.centroids, "dim": np.array(self.dim)}
        if self.components is not None:
            out["components"] = self.components
        return out

    @classmethod
    def from_arrays(cls, arrays) -> "Quantizer":
        comps = arrays["components"] if "components" in arrays else None
        return cls(comps, arrays["centroids"], int(arrays["dim"]))


def _kmeans(Z: np.ndarray, k: int, iters: int, seed: int) -> np.ndarray:
    """Spherical k-means (inner-product assignment, re-normalised centroids); empty lists re-seeded."""
    rng = np.random.default_rng(seed)
    Zn = normalise(Z)
    centroids = Zn[rng.choice(len(Zn), size=k, replace=False)].copy()
    for _ in range(iters):
        assign = np.empty(len(Zn), np.int64)
        for s in range(0, len(Zn), 8192):
            assign[s:s + 8192] = np.argmax(Zn[s:s + 8192] @ centroids.T, axis=1)
        sums = np.zeros_like(centroids)
        np.add.at(sums, assign, Zn)
        counts = np.bincount(assign, minlength=k)
        empty = np.flatnonzero(counts == 0)
        sums[empty] = Zn[rng.choice(len(Zn), size=len(empty), replace=False)]
        centroids = normalise(sums)
    return centroids


class InvertedLists:
    """The reduced vectors of every indexed row, grouped by list, in memory.

    Parameters
    ----------
    quantizer : Quantizer
    rows, vectors, lists : ndarray
        Store rows (int64 ``(n,)``), their reduced float16 vectors ``(n, r)`` and lists (int32 ``(n,)``),
        in any order (sorted by list here).
    """

    def __init__(self, quantizer: Quantizer, rows: np.ndarray, vectors: np.ndarray, lists: np.ndarray):
        self.quantizer = quantizer
        order = np.argsort(lists, kind="stable")
        self.rows = np.asarray(rows, np.int64)[order]
        # float32 in memory: numpy has no float16 BLAS, and converting the scanned lists on every query
        # cost more than the memory saved (r = 256: 1 GB at a million rows, inside the 2 GB target).
        self.vectors = np.asarray(vectors, np.float32)[order]
        counts = np.bincount(np.asarray(lists)[order], minlength=quantizer.nlist)
        self.offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)

    def __len__(self) -> int:
        return len(self.rows)

    def candidates(self, query: np.ndarray, nprobe: int, want: int,
                   allowed: np.ndarray | None = None, exclude: int = -1) -> tuple[np.ndarray, np.ndarray]:
        """The ``want`` best rows by reduced inner product among the ``nprobe`` nearest lists.

        ``allowed`` (bool over store rows) filters; if too few allowed rows lie in the probed lists, more
        lists are probed (up to all of them), so a filter never silently shortens the answer.
        """
        z = self.quantizer.project(query[None, :])[0]
        order = np.argsort(-(self.quantizer.centroids @ z))
        probe = max(1, min(nprobe, self.quantizer.nlist))
        while True:
            rows, sims = self._scan(z, order[:probe], allowed, exclude)
            if len(rows) >= want or probe >= self.quantizer.nlist:
                break
            probe = min(self.quantizer.nlist, probe * 4)
        if len(rows) > want:
            best = np.argpartition(-sims, want - 1)[:want]
            rows, sims = rows[best], sims[best]
        return rows, sims

    def _scan(self, z, lists, allowed, exclude):
        # one product per list over a contiguous slice: gathering the lists into one array first copied
        # ~30 MB per query at a million rows and took longer than the products themselves
        rows, sims = [], []
        for lst in lists:
            a, b = self.offsets[lst], self.offsets[lst + 1]
            if b > a:
                rows.append(self.rows[a:b])
                sims.append(self.vectors[a:b] @ z)
        if not rows:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        rows, sims = np.concatenate(rows), np.concatenate(sims)
        keep = rows != exclude
        if allowed is not None:
            keep &= allowed[rows]
        return rows[keep], sims[keep]
