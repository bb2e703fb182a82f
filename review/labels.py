"""Verdicts collected outside the review page: image files or content ids with a label, into the store's log.

Every verdict goes through :meth:`~stylesift.featurizer.store.FeatureStore.add_verdicts`, all of one
call in one durable log record: either every verdict of a call is kept or none is. Everything is
resolved before that call, so a bad line (unknown content id, missing file, empty label) writes
nothing and says which lines to fix.

A file whose content the store does not hold yet is featurized into the store first (the same as
``stylesift extract``), unless the caller says not to; then it is reported instead.
"""

from __future__ import annotations

import csv
import getpass
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from stylesift.errors import StylesiftError
from stylesift.featurizer.store.types import file_sha256

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class LabelError(StylesiftError, ValueError):
    """Verdicts that cannot be recorded; nothing was written. The message lists what to fix."""


def default_reviewer() -> str:
    """The login name (``unknown`` where the system has none)."""
    try:
        return getpass.getuser() or "unknown"
    except (KeyError, OSError):
        return "unknown"


@dataclass
class LabelItem:
    """One requested verdict: ``key`` is a file path or a content sha256; ``where`` names its origin (CSV line)."""

    key: str
    label: str
    where: str = ""


@dataclass
class LabelResult:
    """What :func:`record_labels` did."""

    recorded: list[dict] = field(default_factory=list)  # {"sha256", "label", "path"}
    featurized: int = 0  # files featurized into the store first
    store: str = ""

    def to_dict(self) -> dict:
        return {"store": self.store, "recorded": len(self.recorded), "featurized": self.featurized,
                "verdicts": self.recorded}


def read_label_csv(path: Path) -> list[LabelItem]:
    """Rows of a CSV of verdicts: a header naming ``label`` and ``path`` or ``sha256``, or plain ``key,label`` rows.

    A scores CSV from ``stylesift score --out`` with a ``label`` column added is accepted as is.
    """
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            rows = list(reader)
    except csv.Error as exc:  # e.g. a field over the csv module's limit (131,072 characters)
        raise LabelError(f"{path}:{reader.line_num}: not a CSV of verdicts ({exc}); expected lines of "
                         "`path or sha256, label`") from None
    except OSError as exc:
        raise LabelError(f"{path}: cannot read the CSV of verdicts ({exc.strerror or exc})") from None
    except UnicodeDecodeError as exc:
        raise LabelError(f"{path}: not a UTF-8 text file ({exc.reason}); save the CSV as UTF-8") from None
    rows = [r for r in rows if any(c.strip() for c in r)]
    if not rows:
        raise LabelError(f"{path}: no rows; expected lines of `path or sha256, label`")
    head = [c.strip().lower() for c in rows[0]]
    items = []
    if "label" in head and ("path" in head or "sha256" in head):
        li = head.index("label")
        keys = [head.index(k) for k in ("sha256", "path") if k in head]
        for n, r in enumerate(rows[1:], start=2):
            key = next((r[k].strip() for k in keys if k < len(r) and r[k].strip()), "")
            items.append(LabelItem(key, r[li].strip() if li < len(r) else "", f"{path}:{n}"))
    else:
        for n, r in enumerate(rows, start=1):
            if len(r) < 2:
                raise LabelError(f"{path}:{n}: expected `path or sha256, label`, got {','.join(r)!r}")
            items.append(LabelItem(r[0].strip(), r[1].strip(), f"{path}:{n}"))
    return items




def record_labels(store, items: list[LabelItem], *, reviewer: str | None = None, note: str = "",
                  source: str = "label", featurize: bool = True, weights=None, featurizer=None) -> LabelResult:
    """Record one verdict per item in the store's log (all or nothing).

    Parameters
    ----------
    store : path
        Feature store (must exist unless files are featurized into it).
    items : list of LabelItem
        ``key`` a file path or content sha256, ``label`` the verdict.
    reviewer, note, source : str
        Stored with every verdict (reviewer defaults to the login name).
    featurize : bool
        Files whose content the store lacks are featurized into it first (True) or reported (False).
    """
    from stylesift.featurizer.store import FeatureStore, Verdict

    store = Path(store)
    problems, resolved, new_files = [], [], []
    st = FeatureStore(store) if store.exists() else None
    for it in items:
        where = f"{it.where}: " if it.where else ""
        if not it.label:
            problems.append(f"{where}{it.key}: no label")
            continue
        path = Path(it.key)
        if _SHA256.match(it.key) and not path.exists():
            if st is None or st.row_of(it.key) is None:
                problems.append(f"{where}content {it.key} is not in {store}; label the file itself so it can be featurized")
            else:
                resolved.append((it.key, it.label, ""))
            continue
        if not path.is_file():
            problems.append(f"{where}{it.key}: " + ("is a folder; name its files, or give the folder on the command line"
                                                     if path.is_dir() else "no such file"))
            continue
        try:
            sha = file_sha256(path)
        except OSError as exc:
            problems.append(f"{where}{it.key}: cannot read it ({exc.strerror or exc})")
            continue
        if st is None or st.row_of(sha) is None:
            new_files.append(path)
        resolved.append((sha, it.label, str(path)))
    if new_files and not featurize and not problems:
        problems += [f"{p}: not in {store} yet; run `stylesift extract {p} --store {store}` first, "
                     "or label without --no-extract" for p in new_files]
    if problems:
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise LabelError(f"no verdict was recorded; fix these {len(problems)} and run again:\n  "
                         + "\n  ".join(problems[:20]) + more)
    result = LabelResult(store=str(store))
    if new_files:
        from stylesift.featurizer.extract import Featurizer

        fz = featurizer
        if fz is None:
            fp = st.fingerprint if st is not None else None
            fz = Featurizer.for_fingerprint(fp, weights) if fp else Featurizer(weights)
        report = fz.extract(new_files, store)
        if report.failed:
            raise LabelError("no verdict was recorded; these files could not be featurized:\n  "
                             + "\n  ".join(f["error"] for f in report.failed[:20]))
        result.featurized = report.new
    reviewer = reviewer or default_reviewer()
    now = time.time()
    verdicts = [Verdict(sha256=sha, label=label, reviewer=reviewer, time=now, note=note, source=source)
                for sha, label, _ in resolved]
    with FeatureStore(store, "a") as writer:
        writer.add_verdicts(verdicts)
    result.recorded = [{"sha256": sha, "label": label, "path": os.fsdecode(p) if p else ""} for sha, label, p in resolved]
    return result
