"""Which stored features a classifier learns from: one feature set, or a concatenation of several.

A store row may hold several named feature sets computed in the same forward pass (``pooled``: the
2048-d last stage; ``style``: statistics of early stages, see :mod:`stylesift.featurizer.backbones.style`;
``detail``: early-stage statistics on native-resolution tiles, see :mod:`stylesift.featurizer.backbones.detail`).
A classifier takes exactly one *set name*: a stored set, or stored sets joined by ``+``
(``pooled+style``), whose vectors are concatenated in that order. A bundle records the name and the
fingerprints of its parts in its summary; scoring reads the same parts again.
"""

from __future__ import annotations

import numpy as np

from stylesift.errors import StylesiftError
from stylesift.featurizer.space import differences, same_space

DEFAULT_SET = "pooled"
KNOWN_PARTS = ("pooled", "style", "detail")


class FeatureSetError(StylesiftError, ValueError):
    """A feature-set name is malformed, or a store or model lacks the set; the message says what to do."""


def extract_command(store, part: str) -> str:
    """The command that adds feature set ``part`` to the rows of ``store``."""
    return f"`stylesift extract PATH --store {store} --features pooled,{part}`" if part != DEFAULT_SET else \
        f"`stylesift extract PATH --store {store}`"


def parts(name: str) -> tuple[str, ...]:
    """The stored sets a set name is made of: ``"pooled+style"`` → ``("pooled", "style")``."""
    out = tuple(p.strip() for p in str(name).split("+"))
    if not all(out) or len(set(out)) != len(out):
        raise FeatureSetError(f"feature set {name!r}: expected stored set names joined by '+', each once "
                              f"(e.g. pooled, style, pooled+style)")
    unknown = [p for p in out if p not in KNOWN_PARTS]
    if unknown:
        raise FeatureSetError(f"feature set {name!r}: unknown set {unknown[0]!r}; stylesift computes "
                              f"{', '.join(KNOWN_PARTS)} (joined by '+' to concatenate)")
    return out


def parse_sets(spec: str | None) -> list[str]:
    """A comma-separated list of set names (``"pooled,style,pooled+style"``); ``None`` → ``["pooled"]``."""
    if spec is None:
        return [DEFAULT_SET]
    names = [s.strip() for s in str(spec).split(",") if s.strip()]
    if not names:
        raise FeatureSetError("--features: give at least one feature set, e.g. pooled,style")
    for n in names:
        parts(n)
    return list(dict.fromkeys(names))


def stored_parts(names: list[str]) -> tuple[str, ...]:
    """Every stored set the names need, ``pooled`` first (the store's rows always carry it)."""
    return tuple(dict.fromkeys([DEFAULT_SET] + [p for n in names for p in parts(n)]))


def set_fingerprint(fingerprints: dict[str, dict], name: str, where="feature store") -> dict:
    """The fingerprint of set ``name`` given the fingerprints of stored sets (a store's or a featurizer's).

    One part: that set's fingerprint. Several: ``{"feature_set": name, "parts": {part: fingerprint}}``.
    """
    have = {}
    for p in parts(name):
        if p not in fingerprints:
            raise FeatureSetError(f"{where}: holds no feature set {p!r} (it holds: {', '.join(sorted(fingerprints)) or 'none'}); "
                                  f"add it with {extract_command(where, p)}")
        have[p] = fingerprints[p]
    return next(iter(have.values())) if len(have) == 1 else {"feature_set": name, "parts": have}


def store_fingerprints(store) -> dict[str, dict]:
    """Every feature set's fingerprint in an open :class:`~stylesift.featurizer.store.FeatureStore`."""
    sets = dict(getattr(store, "feature_sets", None) or {})
    if DEFAULT_SET not in sets and store.fingerprint is not None:
        sets[DEFAULT_SET] = store.fingerprint
    return sets


def load_features(store, rows, name: str) -> np.ndarray:
    """Features of set ``name`` for ``rows`` of an open store: float32 ``(len(rows), d)``, parts concatenated.

    A row lacking a part raises the store's error, which names the command that adds it.
    """
    return join_parts([store.features(rows) if p == DEFAULT_SET else store.features(rows, feature_set=p)
                       for p in parts(name)])


def join_parts(blocks: list[np.ndarray]) -> np.ndarray:
    """The parts' features side by side, shape ``(n, sum of the parts' d)``, in a store-read matrix.

    One part is returned as it is; several are copied into one
    :func:`~stylesift.featurizer.store.feature_matrix` (memory without huge-page advice, as the reads).
    """
    from stylesift.featurizer.store import feature_matrix

    if len(blocks) == 1:
        return blocks[0]
    return np.concatenate(blocks, axis=1, out=feature_matrix(len(blocks[0]), sum(b.shape[1] for b in blocks)))


def bundle_set(summary: dict | None) -> str:
    """The set a bundle was trained on (bundles made before feature sets: ``pooled``)."""
    return (summary or {}).get("feature_set", DEFAULT_SET)


def check_set(summary: dict, fingerprints: dict[str, dict], where) -> None:
    """Raise :class:`FeatureSetError` unless ``fingerprints`` give the set a bundle's ``summary`` recorded."""
    name = bundle_set(summary)
    recorded = summary.get("feature_set_fingerprint")
    if recorded is None:  # a bundle of the pooled set from before feature sets: the bundle fingerprint covers it
        return
    now = set_fingerprint(fingerprints, name, where)
    if not same_space(recorded, now):
        raise FeatureSetError(f"{where}: the model was trained on feature set {name!r} of another recipe; differences "
                              f"(model, now): {differences(recorded, now)}. Retrain it (`stylesift train --features {name}`).")
