"""Names that are not UTF-8 (e.g. GBK uploads): a failure or a good image under such a name never makes a
store unwritable or a report crash; CSV and JSON carry the exact bytes (issue #11's repro, end to end)."""

from __future__ import annotations

import base64
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.pictures import write_pictures

pytestmark = [pytest.mark.weights, pytest.mark.slow]
STYLESIFT = str(Path(sys.executable).with_name("stylesift"))


def cli(*args):
    return subprocess.run([STYLESIFT, *map(os.fsdecode, args)], capture_output=True, timeout=600)


def test_non_utf8_names_through_extract_train_and_score(tmp_path, featurizer):
    root = tmp_path
    store = root / "s.h5"
    write_pictures(root / "good", 6, seed=1)
    write_pictures(root / "plain", 6, seed=9, size=(64, 64))
    weird = root / "uploads"
    weird.mkdir()
    good_name = os.fsencode(weird) + b"/good_\xd6\xd0\xce\xc4.png"
    bad_name = os.fsencode(weird) + b"/upload_\xe9.jpg"
    src = sorted((root / "good").iterdir())[0].read_bytes()
    with open(good_name, "wb") as fh:
        fh.write(src[:-1] + bytes([src[-1]]))  # same picture ...
    with open(good_name, "ab") as fh:
        fh.write(b"\0")  # ... other bytes: a new row
    with open(bad_name, "wb"):
        pass  # an empty file: a failure recorded under a non-UTF-8 name
    featurizer.extract([root / "good"], store, label="good")
    featurizer.extract([root / "plain"], store, label="plain")
    for _ in range(2):  # the failure is stored, and the store stays writable
        done = cli("extract", weird, "--store", store)
        assert done.returncode == 3, done.stderr
        assert b"Traceback" not in done.stderr
    model = root / "m.model"
    trained = cli("train", "--store", store, "--positive", "good", "--negative", "plain", "--out", model)
    assert trained.returncode == 0, trained.stderr
    out, report = root / "scores.csv", root / "report.html"
    scored = cli("score", model, weird, "--store", store, "--out", out, "--report", report, "--json")
    assert scored.returncode == 3, scored.stderr
    assert b"Traceback" not in scored.stderr and not list(root.glob(".*.tmp"))
    json.loads(scored.stdout)
    with open(out, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    exact = {base64.b64decode(r["path_b64"]) for r in rows}
    assert exact == {good_name, bad_name}
    assert all("\ufffd" in r["path"] for r in rows)
    assert "good_" in report.read_text(encoding="utf-8")
    shown = cli("score", model, weird, "--store", store)  # the text listing and the failure line
    assert shown.returncode == 3
    text = shown.stdout.decode("utf-8") + shown.stderr.decode("utf-8")
    assert "good_\ufffd" in text and "upload_\ufffd.jpg" in text and "\\udc" not in text
    info = cli("info", store, "--json")
    assert info.returncode == 0, info.stderr
    json.loads(info.stdout)
