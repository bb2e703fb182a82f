"""The store's manifest: reading and replacing ``manifest.json``, and the in-memory view of the current one.

The manifest is the truth of a store (segments in row order, patches, feature sets, the folded
metadata file, generation); see :mod:`stylesift.featurizer.store.facade` for the whole protocol.
"""

from __future__ import annotations

import json
import re

import h5py
import numpy as np

from stylesift.featurizer.space import require_same
from stylesift.featurizer.store.files import (
    FORMAT,
    FORMAT_VERSION,
    Layout,
    checksum,
    crash_point,
    empty_manifest,
    extract_hint,
    h5_reason,
    write_json_atomic,
)
from stylesift.featurizer.store.types import FeatureSpaceMismatch, StoreError

__all__ = ["read_manifest", "write_manifest", "check_top", "ManifestView"]


def read_manifest(layout: Layout) -> dict:
    """The manifest on disk (an empty one when the store has none yet); StoreError when damaged or too new."""
    try:
        raw = layout.manifest.read_bytes()
    except FileNotFoundError:
        return empty_manifest()
    except OSError as exc:
        raise StoreError(f"{layout.manifest}: cannot read the store's manifest ({exc.strerror or exc})") from None
    try:
        m = json.loads(raw)
        body = {k: v for k, v in m.items() if k != "checksum"}
        if m.get("checksum") != checksum(body):
            raise ValueError("its checksum does not match its content")
        if m.get("format") != FORMAT:
            raise ValueError("not a stylesift store manifest")
    except (ValueError, AttributeError, TypeError) as exc:
        raise StoreError(f"{layout.manifest}: damaged manifest of the store {layout.path} ({exc}); "
                         f"restore the folder {layout.parts} from a backup, or run "
                         f"`stylesift store check {layout.path}` for details") from None
    if int(m.get("format_version", 0)) > FORMAT_VERSION:
        raise StoreError(f"{layout.path}: store format {m['format_version']} is newer than this stylesift; upgrade it")
    check_part_names(layout, m)
    return m


# The only names a manifest may give its parts: plain file names of the kinds a writer makes, inside
# the parts folder. The checksum proves nothing (anyone can recompute it), so a name is never followed
# before it passes: ``../other.h5.parts/seg-000001.h5`` or ``/abs/file`` would be read, moved by a
# repair or unlinked by a compaction.
PART_NAMES = {"segments": re.compile(r"seg-[0-9]{6,12}\.h5"), "patches": re.compile(r"patch-[0-9]{6,12}\.h5"),
              "meta": re.compile(r"meta-[0-9]{6,12}\.json")}


def check_part_names(layout: Layout, m: dict) -> None:
    """StoreError unless every part the manifest names is a plain part name, named once."""
    try:
        named = [("segments", s["name"]) for s in m["segments"]] + [("patches", p["name"]) for p in m.get("patches", [])]
        if m.get("meta") is not None:
            named.append(("meta", m["meta"]))
    except (KeyError, TypeError) as exc:
        raise StoreError(f"{layout.manifest}: damaged manifest of the store {layout.path} (a part entry lacks {exc}); "
                         f"restore the folder {layout.parts} from a backup") from None
    seen: set[str] = set()
    for kind, name in named:
        if not isinstance(name, str) or not PART_NAMES[kind].fullmatch(name):
            raise StoreError(f"{layout.manifest}: the manifest names {name!r} among its {kind}, which is not a part "
                             f"name inside {layout.parts} (damage, or a hand-edited manifest); nothing outside the "
                             f"store is read, moved or deleted. Restore the folder {layout.parts} from a backup")
        if name in seen:
            raise StoreError(f"{layout.manifest}: the manifest lists the part {name} twice (two writers without one "
                             f"lock?); restore the folder {layout.parts} from a backup")
        seen.add(name)


def write_manifest(layout: Layout, m: dict, sync_dir: bool = True) -> None:
    """Replace the manifest by ``m`` (its generation bumped in place).

    ``sync_dir=False`` (a batch of rows): consistent after a power cut, but the batch may be lost with
    it (its images are featurized again); the commit syncs the folder.
    """
    m["generation"] = int(m.get("generation", 0)) + 1
    layout.parts.mkdir(exist_ok=True)
    write_json_atomic(layout.manifest, m, point="manifest-tmp-written", sync_dir=sync_dir)
    crash_point("manifest-renamed")


def check_top(path, parts) -> None:
    """Explain a top file that has no manifest beside it (never returns normally when it is a known case)."""
    try:
        with h5py.File(path, "r") as f:
            fmt, version = f.attrs.get("format"), int(f.attrs.get("format_version", 0))
    except OSError as exc:
        raise StoreError(f"{path}: not a readable HDF5 feature store ({h5_reason(exc)})") from None
    except (ValueError, TypeError):
        raise StoreError(f"{path}: damaged store header; restore it from a backup") from None
    if fmt != FORMAT:
        raise StoreError(f"{path}: an HDF5 file, but not a stylesift feature store")
    if version >= 2:
        raise StoreError(f"{path}: the store's data folder {parts} is missing (this file only points into it); "
                         "restore the folder from a backup")


class ManifestView:
    """The manifest a store object works from, plus feature sets declared but not yet written.

    Readers and the writer share one view. ``rows`` may be less than the manifest's (a reader keeps its
    snapshot: rows added after it opened are not in its view).
    """

    def __init__(self, layout: Layout, m: dict):
        self.layout = layout
        self.pending_sets: dict[str, dict] = {}
        self.adopt(m)

    def adopt(self, m: dict, rows: int | None = None) -> None:
        """Work from manifest ``m`` from now on (its first ``rows`` rows, default all)."""
        self.current = m
        self.rows = int(m["rows"]) if rows is None else int(rows)
        self.starts = np.cumsum([0] + [s["rows"] for s in m["segments"]])

    @property
    def segments(self) -> list[dict]:
        return self.current["segments"]

    @property
    def patches(self) -> list[dict]:
        return self.current.get("patches", [])

    @property
    def feature_sets(self) -> dict[str, dict]:
        return {**self.current.get("feature_sets", {}), **self.pending_sets}

    def take_id(self) -> int:
        """A new part id (never reused, even if the write that takes it fails)."""
        part_id = self.current["next_id"]
        self.current["next_id"] = part_id + 1
        return part_id

    def next_manifest(self) -> dict:
        """A copy of the current manifest, with the declared sets, for a writer to change and write."""
        m = json.loads(json.dumps(self.current))
        if self.pending_sets:
            m["feature_sets"] = {**m.get("feature_sets", {}), **self.pending_sets}
        return m

    def check_fingerprint(self, name: str, fingerprint: dict) -> bool:
        """Whether set ``name`` is new (then remembered until the next manifest write); FeatureSpaceMismatch
        if it exists with another fingerprint."""
        have = self.feature_sets.get(name)
        if have is None:
            self.pending_sets[name] = dict(fingerprint)
            return True
        require_same(have, fingerprint, str(self.layout.path),
                     "Use a new --store for this featurizer, or the weights the store was built with.", FeatureSpaceMismatch)
        return False

    def set_dim(self, name: str) -> int:
        fp = self.feature_sets.get(name)
        if fp is None:
            have = ", ".join(sorted(self.feature_sets)) or "none"
            raise StoreError(f"{self.layout.path}: no feature set {name!r} in this store (it holds: {have}); add it with "
                             + extract_hint(self.layout.path, name))
        return int(fp["feature_dim"])

    def set_dims(self) -> dict[str, int]:
        return {k: int(v["feature_dim"]) for k, v in self.feature_sets.items()}
