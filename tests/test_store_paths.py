"""A store is one store whatever path names it, and its manifest names only its own parts (hostile review, #23)."""

from __future__ import annotations

import errno
import hashlib
import json
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from stylesift.featurizer.store import FeatureStore, StoreError
from stylesift.featurizer.store.check import check, compact
from stylesift.featurizer.store.files import Layout, checksum

FP = {"backbone": "test", "feature_dim": 32, "dtype": "float32"}

# One writer process: opens the store through the path it is given and adds its rows in small runs,
# so that two of them interleave their segments and manifests.
WRITER = textwrap.dedent("""
    import hashlib, sys, time
    import numpy as np
    from stylesift.featurizer.store import FeatureStore
    path, tag = sys.argv[1], sys.argv[2]
    fp = {"backbone": "test", "feature_dim": 32, "dtype": "float32"}
    for run in range(8):
        with FeatureStore(path, "a", fingerprint=fp) as st:
            ids = [hashlib.sha256(f"{tag} {run} {i}".encode()).hexdigest() for i in range(10)]
            st.add(ids, np.ones((10, 32), np.float32), [[f"/{tag}/{run}/{i}.jpg"] for i in range(10)])
        time.sleep(0.01)
""")


def sha(i: int) -> str:
    return hashlib.sha256(f"image {i}".encode()).hexdigest()


def make_store(path, n: int = 3) -> None:
    with FeatureStore(path, "a", fingerprint=FP) as st:
        ids = [sha(i) for i in range(n)]
        st.add(ids, np.ones((n, 32), np.float32), [[f"/img/{i}.jpg"] for i in range(n)])


def test_two_writers_through_a_symlink_and_the_real_path_lose_nothing(tmp_path):
    real, link = tmp_path / "real", tmp_path / "link"
    real.mkdir()
    link.mkdir()
    make_store(real / "s.h5")
    (link / "s.h5").symlink_to("../real/s.h5")
    (link / "s.h5.parts").symlink_to("../real/s.h5.parts")
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(where / "s.h5"), tag], stderr=subprocess.PIPE)
               for where, tag in ((real, "a"), (link, "b"))]
    for w in writers:
        assert w.wait(timeout=300) == 0, w.stderr.read().decode()
    st = FeatureStore(real / "s.h5")
    shas = [str(s) for s in st.sha256]
    assert len(shas) == 3 + 2 * 8 * 10
    assert len(set(shas)) == len(shas)
    assert (link / "s.h5").is_symlink() and (link / "s.h5.parts").is_symlink()
    assert check(real / "s.h5")["healthy"]


def test_the_lock_and_the_parts_of_a_linked_store_are_the_real_ones(tmp_path):
    make_store(tmp_path / "s.h5")
    (tmp_path / "alias.h5").symlink_to("s.h5")
    with FeatureStore(tmp_path / "alias.h5", "a", fingerprint=FP) as st:
        st.add([sha(9)], np.ones((1, 32), np.float32), [["/img/9.jpg"]])
    assert (tmp_path / "alias.h5").is_symlink()
    assert not (tmp_path / "alias.h5.lock").exists() and not (tmp_path / "alias.h5.parts").exists()
    assert len(FeatureStore(tmp_path / "s.h5")) == 4


def rewrite_manifest(path, change) -> None:
    """Change the manifest as a hostile file would, with a valid checksum (anyone can recompute it)."""
    layout = Layout(path)
    m = json.loads(layout.manifest.read_text())
    change(m)
    body = {k: v for k, v in m.items() if k != "checksum"}
    m["checksum"] = checksum(body)
    layout.manifest.write_text(json.dumps(m))


@pytest.mark.parametrize("name", ["../victim.txt", "/abs/victim.txt", "log", "seg-000001.h5/../../victim.txt",
                                  "../other.h5.parts/seg-000001.h5"])
def test_a_manifest_that_names_a_file_outside_the_parts_is_damage_and_never_followed(tmp_path, name):
    store = tmp_path / "s.h5"
    make_store(store)
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    rewrite_manifest(store, lambda m: m["segments"][0].update(name=name))
    for action in (lambda: FeatureStore(store).features(), lambda: check(store), lambda: check(store, repair=True),
                   lambda: compact(store)):
        with pytest.raises(StoreError, match="not a part name") as err:
            action()
        assert repr(name) in str(err.value)
    assert victim.read_text() == "keep me"


def test_a_part_listed_twice_is_damage(tmp_path):
    store = tmp_path / "s.h5"
    make_store(store)
    rewrite_manifest(store, lambda m: m["segments"].append(dict(m["segments"][0])))
    with pytest.raises(StoreError, match="lists the part seg-\\d+.h5 twice"):
        FeatureStore(store)


def test_check_reports_rows_stored_twice_and_repair_keeps_the_first(tmp_path):
    store = tmp_path / "s.h5"
    make_store(store)
    layout = Layout(store)
    first = json.loads(layout.manifest.read_text())["segments"][0]
    copy = dict(first, name="seg-000099.h5")
    shutil.copy(layout.parts / first["name"], layout.parts / copy["name"])

    def list_twice(m):
        m["segments"].append(copy)
        m["rows"] += copy["rows"]
    rewrite_manifest(store, list_twice)
    report = check(store)
    assert not report["healthy"]
    assert [(p["kind"], p["rows"]) for p in report["problems"] if p["kind"] != "top"] == [("doubled", [3, 5])]
    assert check(store, repair=True)["repaired"]
    assert [str(s) for s in FeatureStore(store).sha256] == [sha(i) for i in range(3)]
    assert check(store)["healthy"]


def test_a_writer_whose_manifest_changes_under_its_lock_refuses_to_write_on(tmp_path):
    store = tmp_path / "s.h5"
    make_store(store)
    st = FeatureStore(store, "a", fingerprint=FP)
    try:
        rewrite_manifest(store, lambda m: m.update(generation=m["generation"] + 5))  # a writer that took no lock
        with pytest.raises(StoreError, match="changed under this writer"):
            st.add([sha(7)], np.ones((1, 32), np.float32), [["/img/7.jpg"]])
    finally:
        st.close(commit=False)
    assert sha(7) not in {str(s) for s in FeatureStore(store).sha256}


def no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device", "/fake/seg.h5")


def test_a_full_disk_during_compaction_is_a_store_error_and_changes_nothing(tmp_path, monkeypatch):
    from stylesift.featurizer.store import segments

    store = tmp_path / "s.h5"
    for i in range(3):
        with FeatureStore(store, "a", fingerprint=FP) as st:
            st.add([sha(10 + i)], np.ones((1, 32), np.float32), [[f"/img/{i}.jpg"]])
    before = sorted(p.name for p in Layout(store).parts.iterdir())
    monkeypatch.setattr(segments, "merge_segments", no_space)
    with pytest.raises(StoreError, match="No space left on device.*store compact"):
        compact(store)
    assert sorted(p.name for p in Layout(store).parts.iterdir()) == before  # no temp file left either
    assert check(store)["healthy"] and len(FeatureStore(store)) == 3


def test_the_cli_says_a_full_disk_in_one_line(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from stylesift.cli.main import app
    from stylesift.featurizer.store import check as check_module

    make_store(tmp_path / "s.h5")
    monkeypatch.setattr(check_module, "compact", no_space)
    result = CliRunner().invoke(app, ["store", "compact", str(tmp_path / "s.h5")])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
    assert "/fake/seg.h5: No space left on device; the disk is full" in " ".join(result.output.split())
