"""The approximate part of the index: a projection to fewer dimensions and an inverted file (IVF) over it.

Why this and not faiss or usearch: at 1,000,000 × 2048 the float32 rows are 8 GB, so an index has to
hold reduced vectors; with the rows projected onto their top principal directions (uncentred, so that
inner products of projections approximate cosines), a million rows take ``1e6 × r × 4`` bytes (r = 256:
1 GB, float32 because numpy has no float16 products and a cast per query cost more than reading twice
the bytes), memory-mapped from the part files. The inverted file then scans only the ``nprobe`` lists
nearest the query; the best candidates are re-ranked on an int8 copy of their full unit rows (2 KB a
row, also mapped), and the few that remain are read from the store for exact cosines, which recovers
what the projection lost. ``benchmarks/index_bench.py`` measures this against faiss and usearch on the
same vectors; numpy alone met the targets, so the package needs no new dependency (see docs/search.md).

A :class:`Quantizer` is fitted once (on a sample of the rows); vectors of later rows are projected and
assigned with it, so an update costs what it adds. ``Quantizer.flat`` is the degenerate one used for
small stores: no projection, one list (an exact search over the stored float32 unit rows).
"""

from __future__ import annotations

import numpy as np

from stylesift.featurizer.search.exact import normalise

__all__ = ["Quantizer", "InvertedLists", "REDUCED_DIM", "KMEANS_ITERS", "part_arrays", "merge_arrays", "quantize_rows",
           "MAPPED"]

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


def quantize_rows(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unit rows ``(m, d)`` → int8 ``(m, d)`` and float32 scales ``(m,)`` with ``X ≈ codes * scale[:, None]``.

    One scale per row (its largest magnitude / 127): a cosine computed from the codes is within about
    ``1e-3`` of the exact one for 2048-d rows, close enough to choose which candidates get an exact re-read.
    """
    peak = np.abs(X).max(axis=1) if X.size else np.zeros(len(X), np.float32)
    scale = np.where(peak > 0, peak / 127.0, 1.0).astype(np.float32)
    codes = np.clip(np.rint(X / scale[:, None]), -127, 127).astype(np.int8)
    return codes, scale


def part_arrays(quantizer: Quantizer, rows: np.ndarray, X: np.ndarray) -> dict[str, np.ndarray]:
    """The arrays of one index part from store ``rows`` ``(m,)`` and their unit rows ``X`` ``(m, d)``, grouped by list.

    ``vectors`` are the reduced rows, float32 (memory-mapped as they lie: no conversion on open, and numpy's
    float16 products are slower than reading twice the bytes); an inverted file adds ``codes`` and ``scale``
    (:func:`quantize_rows`) for the re-rank, a flat index needs none (its vectors are the unit rows).
    """
    Z = quantizer.project(X).astype(np.float32)
    lists = quantizer.assign(Z)
    order = np.argsort(lists, kind="stable")
    counts = np.bincount(lists, minlength=quantizer.nlist)
    out = {"rows": np.asarray(rows, np.int64)[order], "offsets": np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
           "vectors": Z[order]}
    if quantizer.components is not None:
        codes, scale = quantize_rows(X[order])
        out.update(codes=codes, scale=scale)
    return out


def merge_arrays(parts: list[dict[str, np.ndarray]], nlist: int) -> dict[str, np.ndarray]:
    """Several parts' arrays as one part, still grouped by list (rows of equal list keep their order)."""
    lists = np.concatenate([np.repeat(np.arange(nlist, dtype=np.int32), np.diff(p["offsets"])) for p in parts])
    order = np.argsort(lists, kind="stable")
    out = {"rows": np.concatenate([p["rows"] for p in parts])[order],
           "offsets": np.concatenate([[0], np.cumsum(np.bincount(lists, minlength=nlist))]).astype(np.int64)}
    for name in ("vectors", "codes", "scale"):
        if name in parts[0]:
            out[name] = np.concatenate([p[name] for p in parts])[order]
    return out


MAPPED = ("vectors", "codes")  # the large arrays: memory-mapped, covered by the file's sha256


class InvertedLists:
    """Every indexed row, part by part, each part's rows grouped by list (the parts' arrays, mostly memory-mapped).

    Parameters
    ----------
    quantizer : Quantizer
    parts : list of dict
        Each from :func:`part_arrays` (or read back): ``rows`` int64 ``(n,)``, ``offsets`` int64
        ``(nlist + 1,)``, ``vectors`` float32 ``(n, r)``, and for an inverted file ``codes`` int8 ``(n, d)``
        and ``scale`` float32 ``(n,)``.

    A candidate is named by its *slot* (its place in the parts taken one after the other), so that its
    int8 full row can be read back for the re-rank.
    """

    def __init__(self, quantizer: Quantizer, parts: list[dict[str, np.ndarray]]):
        self.quantizer = quantizer
        self.parts = parts
        self.starts = np.concatenate([[0], np.cumsum([len(p["rows"]) for p in parts])]).astype(np.int64)

    def __len__(self) -> int:
        return int(self.starts[-1])

    @property
    def has_codes(self) -> bool:
        return bool(self.parts) and "codes" in self.parts[0]

    @property
    def nbytes(self) -> int:
        """Bytes of every array (the mapped ones count whole, though only the pages read are in memory)."""
        return int(sum(a.nbytes for p in self.parts for a in p.values()))

    def rows(self) -> np.ndarray:
        """Store row of every slot, int64 ``(n,)``."""
        return np.concatenate([p["rows"] for p in self.parts]) if self.parts else np.zeros(0, np.int64)

    def vectors(self) -> np.ndarray:
        """Reduced vector of every slot, float32 ``(n, r)`` (a copy: for benchmarks)."""
        return (np.concatenate([p["vectors"] for p in self.parts]) if self.parts
                else np.zeros((0, self.quantizer.reduced_dim), np.float32))

    def candidates(self, query: np.ndarray, nprobe: int, want: int, allowed: np.ndarray | None = None,
                   exclude: int = -1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The ``want`` best ``(rows, reduced similarities, slots)`` among the ``nprobe`` lists nearest ``query``.

        ``allowed`` (bool over store rows) filters; if too few allowed rows lie in the probed lists, more
        lists are probed (up to all of them), so a filter never silently shortens the answer.
        """
        z = self.quantizer.project(query[None, :])[0].astype(np.float32)
        order = np.argsort(-(self.quantizer.centroids @ z))
        probe = max(1, min(nprobe, self.quantizer.nlist))
        while True:
            rows, sims, slots = self._scan(z, order[:probe], allowed, exclude)
            if len(rows) >= want or probe >= self.quantizer.nlist:
                break
            probe = min(self.quantizer.nlist, probe * 4)
        if len(rows) > want:
            best = np.argpartition(-sims, want - 1)[:want]
            rows, sims, slots = rows[best], sims[best], slots[best]
        return rows, sims, slots

    def _scan(self, z, lists, allowed, exclude):
        # one product per (part, list) over a contiguous slice of the mapped vectors: no copy of what is scanned
        rows, sims, slots = [], [], []
        for p, start in zip(self.parts, self.starts):
            offs, V = p["offsets"], p["vectors"]
            for a, b in zip(offs[lists].tolist(), offs[lists + 1].tolist()):
                if b > a:
                    rows.append(p["rows"][a:b])
                    sims.append(V[a:b] @ z)
                    slots.append(np.arange(start + a, start + b))
        if not rows:
            return np.zeros(0, np.int64), np.zeros(0, np.float32), np.zeros(0, np.int64)
        rows, sims, slots = np.concatenate(rows), np.concatenate(sims), np.concatenate(slots)
        keep = rows != exclude
        if allowed is not None:
            keep &= allowed[rows]
        return rows[keep], sims[keep], slots[keep]

    def full_rows(self, slots: np.ndarray) -> np.ndarray:
        """Approximate unit rows ``(m, d)`` float32 of the given slots (from the int8 codes; inverted file only)."""
        slots = np.asarray(slots, np.int64)
        out = np.empty((len(slots), self.parts[0]["codes"].shape[1] if self.parts else 0), np.float32)
        which = np.searchsorted(self.starts, slots, side="right") - 1
        for i in np.unique(which):
            sel = np.flatnonzero(which == i)
            local = slots[sel] - self.starts[i]
            order = np.argsort(local)  # mapped pages are read in file order
            p = self.parts[i]
            out[sel[order]] = p["codes"][local[order]].astype(np.float32) * p["scale"][local[order], None]
        return out
