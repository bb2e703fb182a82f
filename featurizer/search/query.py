"""Ask the store for the images most like some query images: the library behind ``stylesift similar``.

A query is the sha256 of a stored row, or an image file. A file whose content is stored is looked up
by its sha256 (no network); any other file is featurized into the store first, through the store's own
fingerprint (:meth:`stylesift.featurizer.extract.Featurizer.for_fingerprint`, as ``score`` does), so the
query is in the store's feature space by construction and is cached there for the next time.
"""

from __future__ import annotations

import os
import re
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from stylesift.errors import StylesiftError
from stylesift.featurizer.search.index import SimilarityIndex

__all__ = ["SearchError", "Query", "similar", "row_filter"]

_SHA = re.compile(r"^[0-9a-f]{64}$")


class SearchError(StylesiftError, ValueError):
    """A query or filter the store cannot answer; the message says what to do."""


@dataclass
class Query:
    """One resolved query: its content id, whether the store held it before this search, its row."""

    text: str
    sha256: str
    stored: bool
    row: int
    results: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"query": {"sha256": self.sha256, "stored": self.stored, "text": self.text}, "results": self.results}


def row_filter(store, *, label: str | None = None, unlabelled: bool = False, since_days: float | None = None,
               now: float | None = None) -> np.ndarray | None:
    """bool over store rows for ``--label`` / ``--unlabelled`` / ``--since`` (None: no filter)."""
    if label is not None and unlabelled:
        raise SearchError("choose one of --label and --unlabelled")
    mask = None
    if label is not None or unlabelled:
        mask = store.labels.astype(str) == ("" if unlabelled else label)
    if since_days is not None:
        recent = store.added >= (time.time() if now is None else now) - float(since_days) * 86400.0
        mask = recent if mask is None else mask & recent
    return mask


def _resolve(store_path: Path, texts: Sequence[str], *, weights=None, runtime: str = "auto",
             feature_set: str = "pooled") -> list[Query]:
    """Turn query strings into rows; featurize (once, in one batch) the files the store does not hold."""
    from stylesift.featurizer.store import FeatureStore, file_sha256

    st = FeatureStore(store_path)
    out: list[Query] = []
    new_files: list[Path] = []
    for text in texts:
        path = Path(text)
        if path.is_file():
            sha = file_sha256(path)
        elif _SHA.match(text.lower()):
            sha = text.lower()
            if st.row_of(sha) is None:
                raise SearchError(f"{text}: no such content in {store_path} (give a stored sha256 or an image file)")
        else:
            raise SearchError(f"{text}: neither an image file nor a stored sha256")
        row = st.row_of(sha)
        out.append(Query(text, sha, row is not None, -1 if row is None else row))
        if row is None:
            new_files.append(path)
    if new_files:
        from stylesift.featurizer.extract import Featurizer

        sets = tuple(dict.fromkeys(["pooled", feature_set]))
        featurizer = Featurizer.for_fingerprint(st.fingerprint, weights, runtime=runtime, feature_sets=sets)
        report = featurizer.extract(new_files, store_path)
        st = FeatureStore(store_path)
        failed = {str(f["path"]): f["error"] for f in report.failed}
        for q in out:
            if not q.stored:
                row = st.row_of(q.sha256)
                if row is None:
                    raise SearchError(f"{q.text}: could not be featurized ({failed.get(q.text, 'no row was written')})")
                q.row = row
    return out


def similar(store_path, queries: Sequence[str | os.PathLike], k: int = 10, *, feature_set: str = "pooled",
            label: str | None = None, unlabelled: bool = False, since_days: float | None = None,
            weights=None, runtime: str = "auto", update_index: bool = True, use_index: bool = True) -> list[Query]:
    """The ``k`` stored rows most like each query (cosine similarity), never the query's own row.

    Parameters
    ----------
    store_path : path
        The store.
    queries : sequence
        Stored sha256s or image files (files not stored are featurized into the store).
    feature_set : str
        Stored set compared (``pooled`` or ``style``).
    label, unlabelled, since_days
        Only rows with this label, only unlabelled rows, only rows extracted in the last ``since_days`` days.
    update_index : bool
        Bring the index up to date first (build it on the first query), saved for the next process.
    use_index : bool
        False: an exact search over every row (the reference).

    Returns
    -------
    list of Query
        Each with ``results``: ``{"sha256", "path", "label", "similarity"}`` best first.
    """
    from stylesift.featurizer.store import FeatureStore

    store_path = Path(store_path)
    resolved = _resolve(store_path, [str(os.fspath(q)) for q in queries], weights=weights, runtime=runtime,
                        feature_set=feature_set)
    st = FeatureStore(store_path)
    if feature_set not in st.feature_sets:
        raise SearchError(f"{store_path}: holds no feature set {feature_set!r} (it holds: "
                          f"{', '.join(sorted(st.feature_sets)) or 'none'})")
    index = SimilarityIndex(store_path, feature_set)
    if update_index and use_index:
        try:
            index.update(st)
        except (OSError, StylesiftError) as exc:  # derived data: a read-only folder or a busy writer costs speed only
            warnings.warn(f"similarity index not updated ({exc}); rows it lacks are searched exactly", RuntimeWarning,
                          stacklevel=2)
    allowed = row_filter(st, label=label, unlabelled=unlabelled, since_days=since_days)
    rows = np.array([q.row for q in resolved], np.int64)
    vectors = st.features(rows, feature_set) if len(rows) else np.zeros((0, 1), np.float32)
    hits = index.search(st, vectors, k, allowed=allowed, exclude=rows, use_index=use_index)
    for q, (found, sims) in zip(resolved, hits):
        # only the found rows' ids and labels: every row's would take seconds at a million rows
        q.results = [{"sha256": sha, "path": (st.paths(int(r)) or [None])[0], "label": label, "similarity": float(s)}
                     for (sha, label), r, s in zip(st.row_details(found.tolist()), found, sims)]
    return resolved
