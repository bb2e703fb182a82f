"""The store's small records: labels set after extract, paths, verdicts and failures, as JSON.

Each record is one ``log/<seq>.json`` file, durable on its own; a fold writes everything into one
new ``meta-<id>.json`` that the manifest names, and deletes the records it holds. The state they add
up to is a dict ``{"labels": {sha: label}, "paths": {sha: [bytes]}, "verdicts": [Verdict],
"failures": {path bytes: Failure}}``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from stylesift.featurizer.store.files import Layout, Stale, b64, crash_point, read_json, unb64, write_json_atomic
from stylesift.featurizer.store.types import Failure, Verdict

__all__ = ["RecordLog", "apply", "empty_state", "failures_body", "verdicts_body"]


def empty_state() -> dict:
    return {"labels": {}, "paths": {}, "verdicts": [], "failures": {}}


class RecordLog:
    """The record folder ``log/`` and the folded metadata files of one store."""

    def __init__(self, layout: Layout):
        self.layout = layout

    def records(self, log_seq: int) -> list[tuple[int, Path]]:
        """``(seq, file)`` of the records newer than the folded ``log_seq``, oldest first."""
        try:
            entries = list(self.layout.log_dir.iterdir())
        except FileNotFoundError:
            return []
        out = []
        for entry in entries:
            stem, dot, ext = entry.name.partition(".")
            if ext == "json" and stem.isdigit() and int(stem) > log_seq:
                out.append((int(stem), entry))
        return sorted(out)

    def load(self, m: dict, strict: bool) -> dict:
        """The state manifest ``m`` names: its meta file plus the records after it.

        ``strict`` (a reader without the lock): a gap in the record numbers means a fold deleted records
        while they were listed, and raises :class:`Stale`.
        """
        state = empty_state()
        meta = m.get("meta")
        if meta:
            body = read_json(self.layout.parts / meta, f"restore it from a backup, or delete it to lose the labels, "
                                                       f"verdicts and failures recorded before {time.ctime()}")
            state["labels"] = dict(body["labels"])
            state["paths"] = {k: [unb64(p) for p in v] for k, v in body["paths"].items()}
            state["verdicts"] = [Verdict(*v) for v in body["verdicts"]]
            for p, size, mtime, reason in body["failures"]:
                raw = unb64(p)
                state["failures"][raw] = Failure(os.fsdecode(raw), int(size), float(mtime), reason)
        base = int(m.get("log_seq", 0))
        records = self.records(base)
        seqs = [s for s, _ in records]
        if strict and seqs != list(range(base + 1, base + 1 + len(seqs))):
            raise Stale  # a fold deleted records while we listed them
        for _, record in records:
            apply(state, read_json(record, "move it away to open the store without that record (a label, path, "
                                           "verdict or failure entry)"))
        return state

    def append(self, body: dict, log_seq: int) -> None:
        """Write ``body`` as the next record (durable when this returns)."""
        records = self.records(log_seq)
        seq = max([log_seq] + [s for s, _ in records]) + 1
        self.layout.log_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.layout.log_dir / f"{seq:012d}.json", body, point="log-tmp-written")

    def fold(self, m: dict, state: dict, records: list[tuple[int, Path]], forget: set[str] | None = None) -> int:
        """Write ``state`` (less the contents ``forget``) as a new meta file, named in ``m``; returns its log_seq.

        The caller writes ``m`` as the new manifest, then calls :meth:`remove_folded`.
        """
        if forget:
            state["labels"] = {k: v for k, v in state["labels"].items() if k not in forget}
            state["paths"] = {k: v for k, v in state["paths"].items() if k not in forget}
            state["verdicts"] = [v for v in state["verdicts"] if v.sha256 not in forget]
        last = max([m.get("log_seq", 0)] + [s for s, _ in records])
        body = {"format": "stylesift-store-meta", "log_seq": last,
                "labels": state["labels"], "paths": {k: [b64(p) for p in v] for k, v in state["paths"].items()},
                "verdicts": [[v.sha256, v.label, v.reviewer, v.time, v.note, v.source] for v in state["verdicts"]],
                "failures": [[b64(f.path), f.size, f.mtime, f.reason] for f in state["failures"].values()]}
        name = f"meta-{m['next_id']:06d}.json"
        m["next_id"] += 1
        write_json_atomic(self.layout.parts / name, body)
        crash_point("fold-meta-written")
        m["meta"], m["log_seq"] = name, last
        return last

    def remove_folded(self, records: list[tuple[int, Path]], old_meta: str | None) -> None:
        """Delete records and the meta file a new manifest no longer needs."""
        for _, record in records:  # oldest first: a reader listing meanwhile sees a gap, and retries
            record.unlink(missing_ok=True)
            crash_point("fold-records-deleted")
        if old_meta:
            (self.layout.parts / old_meta).unlink(missing_ok=True)

    @staticmethod
    def check(file: Path) -> None:
        """Read one record or meta file, verifying its checksum (StoreError or OSError when it fails)."""
        read_json(file, "")


def failures_body(failures, clear) -> dict:
    return {"failures": [[b64(f.path), int(f.size), float(f.mtime), str(f.reason)] for f in failures],
            "clear": [b64(c) for c in clear]}


def verdicts_body(verdicts) -> dict:
    return {"verdicts": [[v.sha256, v.label, v.reviewer, float(v.time), v.note, v.source] for v in verdicts]}


def apply(state: dict, body: dict) -> None:
    """Add one record's content to ``state``."""
    for upd in body.get("updates", []):
        if "label" in upd:
            state["labels"][upd["sha256"]] = upd["label"]
        if "paths" in upd:
            state["paths"][upd["sha256"]] = [unb64(p) for p in upd["paths"]]
    for v in body.get("verdicts", []):
        state["verdicts"].append(Verdict(*v))
    for p, size, mtime, reason in body.get("failures", []):
        raw = unb64(p)
        state["failures"][raw] = Failure(os.fsdecode(raw), int(size), float(mtime), reason)
    for p in body.get("clear", []):
        state["failures"].pop(unb64(p), None)

