"""``stylesift similar``: stored sha256s or image files, filters, JSON, the index saved for the next process."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from stylesift.cli import similar_cmds
from stylesift.cli.app import _Group
from stylesift.featurizer.search import SearchError, index_root, similar
from stylesift.featurizer.store import FeatureStore

D = 16
FP = {"backbone": "test", "feature_dim": D, "dtype": "float32"}


def cli_app() -> typer.Typer:
    """The main app when it registers the commands already, else a local one with the same error handling."""
    from stylesift.cli.main import app

    if any(getattr(c, "name", None) == "similar" or getattr(c.callback, "__name__", "") == "similar"
           for c in app.registered_commands):
        return app
    local = typer.Typer(cls=_Group, pretty_exceptions_enable=False)
    local.command()(similar_cmds.similar)
    local.command()(similar_cmds.rank)
    return local


def run(*args):
    return CliRunner().invoke(cli_app(), [str(a) for a in args])


def vec(i: int) -> np.ndarray:
    # rows 0..29 lie on a ray (row 0 nearest row 1, then 2, ...), the rest elsewhere
    if i < 30:
        v = np.zeros(D, np.float32)
        v[0], v[1] = 1.0, i * 0.05
        return v
    return np.random.default_rng(i).standard_normal(D).astype(np.float32) + 5


@pytest.fixture
def store(tmp_path):
    path = tmp_path / "s.h5"
    pics = tmp_path / "pics"
    pics.mkdir()
    files = []
    for i in range(40):
        f = pics / f"{i}.jpg"
        f.write_bytes(f"fake image {i}".encode())  # the store only needs each file's sha256
        files.append(f)
    with FeatureStore(path, "a", fingerprint=FP) as st:
        shas = [hashlib.sha256(f.read_bytes()).hexdigest() for f in files]
        st.add(shas[:20], np.stack([vec(i) for i in range(20)]), [[str(f)] for f in files[:20]], "good")
        st.add(shas[20:], np.stack([vec(i) for i in range(20, 40)]), [[str(f)] for f in files[20:]])
    return path, files, shas


def test_a_stored_sha_finds_its_neighbours_never_itself(store):
    path, files, shas = store
    res = run("similar", shas[5], "--store", path, "--k", 3, "--json")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["query"] == {"sha256": shas[5], "stored": True}
    # rows 4 and 6 are equally near row 5 (ties in float32 may go either way), row 3 or 7 next
    got = [r["sha256"] for r in doc["results"]]
    assert set(got[:2]) == {shas[4], shas[6]} and got[2] in (shas[3], shas[7])
    assert all(r["sha256"] != shas[5] for r in doc["results"])
    assert set(doc["results"][0]) == {"sha256", "path", "label", "similarity"}
    assert doc["results"][0]["path"] in (str(files[4]), str(files[6])) and doc["results"][0]["label"] == "good"
    assert (index_root(path) / "pooled" / "index.json").exists()  # built on the first query, kept for the next


def test_an_image_file_whose_content_is_stored_needs_no_network(store):
    path, files, shas = store
    (q,) = similar(path, [files[0]], k=2)
    assert q.stored and q.sha256 == shas[0] and [r["sha256"] for r in q.results] == [shas[1], shas[2]]


def test_filters_label_unlabelled_since(store):
    path, files, shas = store
    (q,) = similar(path, [shas[0]], k=5, unlabelled=True)
    assert [r["sha256"] for r in q.results] == shas[20:25] and all(r["label"] == "" for r in q.results)
    (q,) = similar(path, [shas[25]], k=50, label="good")
    assert len(q.results) == 20 and {r["label"] for r in q.results} == {"good"}
    (q,) = similar(path, [shas[0]], k=5, since_days=1)
    assert len(q.results) == 5
    assert similar(path, [shas[0]], k=5, since_days=1e-9)[0].results == []  # nothing extracted in the last 0.1 ms
    res = run("similar", shas[0], "--store", path, "--label", "good", "--unlabelled")
    assert res.exit_code == 2 and "choose one of" in res.output


def test_several_queries_print_one_json_object_each(store):
    path, _, shas = store
    res = run("similar", shas[1], shas[30], "--store", path, "--k", 2, "--json")
    assert res.exit_code == 0, res.output
    docs = [json.loads(chunk) for chunk in res.stdout.replace("}\n{", "}\n\x00{").split("\x00")]
    assert [d["query"]["sha256"] for d in docs] == [shas[1], shas[30]]


def test_unknown_queries_say_what_to_give(store, tmp_path):
    path, _, shas = store
    res = run("similar", "0" * 64, "--store", path)
    assert res.exit_code == 1 and "no such content" in res.output
    res = run("similar", "not-a-file", "--store", path)
    assert res.exit_code == 1 and "neither an image file nor a stored sha256" in res.output
    with pytest.raises(SearchError, match="no feature set 'style'"):
        similar(path, [shas[0]], feature_set="style")


def test_a_file_the_store_lacks_is_featurized_through_the_stores_fingerprint(store, tmp_path, monkeypatch):
    path, _, shas = store
    new = tmp_path / "new.jpg"
    new.write_bytes(b"a new picture")
    seen = {}

    class FakeFeaturizer:
        def extract(self, paths, store_path):
            with FeatureStore(store_path, "a") as st:
                st.add([hashlib.sha256(new.read_bytes()).hexdigest()], vec(10)[None, :] * 2, [[str(new)]])

            class Report:
                failed = []
            return Report()

    def for_fingerprint(fp, weights=None, **kw):
        seen["fp"], seen["sets"] = fp, kw.get("feature_sets")
        return FakeFeaturizer()

    from stylesift.featurizer import extract

    monkeypatch.setattr(extract.Featurizer, "for_fingerprint", staticmethod(for_fingerprint))
    res = run("similar", new, "--store", path, "--k", 1, "--json")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert seen["fp"] == FP and doc["query"]["stored"] is False
    assert doc["results"][0]["sha256"] == shas[10]  # the query's own (new) row is not a result


def test_report_writes_a_contact_sheet(store, tmp_path):
    path, _, shas = store
    out = tmp_path / "sim.html"
    res = run("similar", shas[3], "--store", path, "--k", 2, "--report", out)
    assert res.exit_code == 0, res.output
    assert out.exists() and "stylesift similar" in out.read_text()


def test_row_details_give_the_ids_and_labels_of_a_few_rows_as_the_full_columns_do(store):
    from stylesift.featurizer.store import Verdict

    path, _, shas = store
    with FeatureStore(path, "a") as w:
        w.update(shas[21], label="ordinary")  # a label set after extract
        w.add_verdicts([Verdict(shas[3], "rejected", "ann", 1.0), Verdict(shas[21], "picked", "bob", 2.0)])
    st = FeatureStore(path)
    rows = [3, 21, 30, 0]
    assert st.row_details(rows) == [(str(st.sha256[r]), str(st.labels[r])) for r in rows]
    assert [label for _, label in st.row_details(rows)] == ["rejected", "picked", "", "good"]


def test_the_command_line_loads_no_model_library_and_the_dedupe_default_agrees():
    import subprocess
    import sys

    from stylesift.classifiers.grouping import DEFAULT_THRESHOLD
    from stylesift.cli.options import DEDUPE_THRESHOLD

    assert DEDUPE_THRESHOLD == DEFAULT_THRESHOLD
    # `similar` on a stored sha256 must start fast: no scikit-learn, TensorFlow or OpenVINO behind the CLI's import
    code = ("import sys, stylesift.cli.main; print(sorted({m.split('.')[0] for m in sys.modules} & "
            "{'sklearn', 'tensorflow', 'keras', 'openvino', 'onnxruntime'}))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
