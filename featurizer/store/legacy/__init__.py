"""Stores of format_version 1: read as they are (:class:`V1Adapter`), upgraded by the first writer."""

from __future__ import annotations

from stylesift.featurizer.store.legacy.adapter import V1Adapter, is_legacy
from stylesift.featurizer.store.legacy.upgrade import upgrade_if_needed

__all__ = ["V1Adapter", "is_legacy", "upgrade_if_needed"]
