"""Similarity search over a feature store: an index per feature set beside the store, exact where it lags.

``similar(store, ["<sha256>", "photo.jpg"], k=10)`` answers the question (see :mod:`.query`);
:class:`SimilarityIndex` is the index (see :mod:`.index`: layout, how it keeps in step with the store);
:func:`state` and :func:`rebuild` are for ``stylesift info`` and ``stylesift store check --repair``.

The index is derived data in ``<store>.index/``: losing or damaging it loses nothing, a search is then
exact (slower) and the next update rebuilds it.
"""

from __future__ import annotations

from stylesift.featurizer.search.exact import TopK, exact_top_k, normalise
from stylesift.featurizer.search.files import IndexDamage, index_root
from stylesift.featurizer.search.index import SimilarityIndex
from stylesift.featurizer.search.query import Query, SearchError, row_filter, similar

__all__ = ["SimilarityIndex", "IndexDamage", "SearchError", "Query", "TopK", "similar", "row_filter", "exact_top_k",
           "normalise", "index_root", "state", "rebuild", "update"]


def _sets(store, feature_sets) -> list[str]:
    return list(store.feature_sets) if feature_sets is None else list(feature_sets)


def state(store, feature_sets=None, deep: bool = True) -> dict[str, dict]:
    """Per feature set of an open store: ``ok``, ``problems``, ``rows``, ``indexed``, ``pending``, files, bytes.

    ``deep`` checks every file's sha256 against the sidecar (what ``store check`` wants); an index that
    was never built reports ``ok: False`` with the problem "no index yet" (it is not damage).
    """
    return {name: SimilarityIndex(store.path, name).state(store, deep=deep) for name in _sets(store, feature_sets)}


def rebuild(store, feature_sets=None) -> dict[str, dict]:
    """Rebuild the index of every (or the given) feature set of an open store from its rows."""
    return {name: SimilarityIndex(store.path, name).rebuild(store) for name in _sets(store, feature_sets)}


def update(store, feature_sets=None) -> dict[str, dict]:
    """Index the rows added since the last update (a damaged or stale index is rebuilt)."""
    return {name: SimilarityIndex(store.path, name).update(store) for name in _sets(store, feature_sets)}
