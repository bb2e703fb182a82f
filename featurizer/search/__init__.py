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
           "normalise", "index_root", "state", "rebuild", "update", "check_indexes", "describe"]


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


def check_indexes(store, repair: bool = False, deep: bool = True) -> dict[str, dict]:
    """Each feature set's index state (``store check``, ``info``); ``repair`` rebuilds the damaged or stale ones.

    An index is derived data: a damaged one costs speed, never a row (searches are then exact), so
    its state is reported beside the store's, and ``built`` is False for a set never searched.
    """
    out = {}
    for name in store.feature_sets:
        index = SimilarityIndex(store.path, name)
        st = index.state(store, deep=deep)
        st["built"] = not any(p.endswith("no index yet") for p in st["problems"])
        if repair and st["built"] and not st["ok"]:
            done = index.rebuild(store)
            st = {**index.state(store, deep=deep), "built": True, "rebuilt": True, "was": st["problems"],
                  "seconds": round(done.get("seconds", 0.0), 3)}
        out[name] = st
    return out


def describe(name: str, st: dict) -> str:
    """One line of an index's state for people."""
    if not st["built"]:
        return f"index {name}: not built yet (the first `stylesift similar --features {name}` builds it)"
    if st["ok"]:
        return (f"index {name}: ok{' (rebuilt)' if st.get('rebuilt') else ''}; {st['indexed']} of {st['rows']} rows "
                f"indexed, {st['pending']} pending (searched exactly); {st['kind']}, {st['files']} files, "
                f"{st['bytes'] / 2**20:.1f} MiB")
    return (f"index {name}: DAMAGED ({'; '.join(st['problems'])}); searches are exact until `stylesift store "
            "check --repair` or the next `stylesift similar` rebuilds it (no row is lost: it is derived data)")
