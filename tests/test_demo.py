"""`stylesift demo` end to end (small), and `stylesift score --report` on what it trained."""

from __future__ import annotations

import csv
import json
import re

import pytest
from PIL import Image
from typer.testing import CliRunner

from stylesift.cli.main import app

pytestmark = [pytest.mark.weights, pytest.mark.slow]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory, weights):
    out = tmp_path_factory.mktemp("demo") / "demo"
    result = CliRunner().invoke(app, ["demo", "--out", str(out), "--per-class", "12", "--new", "4", "--folds", "3",
                                      "--json"])
    assert result.exit_code == 0, result.output
    return out, json.loads(result.stdout)


def test_demo_writes_every_output(demo_run):
    out, summary = demo_run
    for key in ("store", "model", "scores", "report"):
        assert (out / summary[key].rsplit("/", 1)[-1]).is_file()
    assert sorted(p.rsplit("/", 1)[-1] for p in summary["plots"]) == ["precision-recall.png", "roc.png"]
    for plot in summary["plots"]:
        with Image.open(plot) as img:
            assert img.format == "PNG" and img.size[0] > 400
    assert summary["images"] == {**summary["images"], "train_quality": 12, "train_ordinary": 12, "new": 9}
    assert summary["review_command"] == (f"stylesift review {summary['model']} {out / 'images' / 'new'} "
                                         f"--store {summary['store']}")


def test_demo_compare_and_picks_are_meaningful(demo_run):
    _, summary = demo_run
    methods = summary["compare"]["methods"]
    assert {"two-class", "two-class-default", "one-class", "one-class-default", "head"} <= set(methods)
    # Real photos against rendered snapshots: pretrained features separate them (never perfect by construction).
    assert methods["two-class"]["roc_auc"] >= 0.9
    assert summary["scored"] == 8 and summary["failed"] == 1
    assert summary["hits"]["quality"] >= 3 and summary["hits"]["ordinary"] <= 1


def test_demo_scores_csv_matches_report(demo_run):
    out, summary = demo_run
    with open(summary["scores"]) as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 9 and sum(r["error"] != "" for r in rows) == 1
    selected = [r for r in rows if r["selected"] == "1"]
    assert all(r["group"] != "" for r in rows if r["error"] == "")  # near-duplicates grouped, as `score` does
    page = open(summary["report"]).read()
    section = re.search(r'<section id="selected">(.*?)</section>', page, re.S).group(1)
    names = re.findall(r'class="name" title="[^"]*">([^<]+)<', section)
    best_first = sorted(selected, key=lambda r: -float(r["score"]))
    assert names == [r["path"].rsplit("/", 1)[-1] for r in best_first]
    assert section.count('class="evidence"') == len(selected)  # each pick shows its nearest training photo


def test_score_report_option(demo_run, tmp_path):
    out, summary = demo_run
    report = tmp_path / "sheet.html"
    result = CliRunner().invoke(app, ["score", summary["model"], str(out / "images" / "new"), "--store", summary["store"],
                                      "--top-k", "2", "--report", str(report)])
    assert result.exit_code == 3, result.output  # the broken upload: done, some files failed
    page = report.read_text()
    assert "<b>2</b><span>selected</span>" in page and "<b>8</b><span>scored</span>" in page
    assert "top 2" in page and "truncated" in page
    assert page.count('class="card sel"') == 2
