"""A full disk and a read-only store path: a clear error, and no partial row visible afterwards.

Real conditions, not chmod (the tests run as root, whom permissions do not stop): each scenario runs
in a private mount namespace (``unshare --mount``) on a small tmpfs or a read-only bind mount. Where
the platform cannot make one, the tests skip and say why.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
STYLESIFT = str(Path(sys.executable).with_name("stylesift"))

COMMON = r"""
import hashlib, json, subprocess, sys, numpy as np, h5py
from stylesift.featurizer.store import FeatureStore, StoreError
FP = {"backbone": "test", "feature_dim": 2048, "dtype": "float32"}
def sha(i): return hashlib.sha256(f"image {i}".encode()).hexdigest()
def feature_of(d): return np.random.default_rng(int(d[:15], 16)).standard_normal(2048).astype(np.float32)
def sh(*cmd): subprocess.run(cmd, check=True)
def true_rows(path):
    st = FeatureStore(path)
    for d, x in zip(st.sha256, st.features()):
        assert np.array_equal(x, feature_of(d)), "a row that is not its content's vector"
    try:
        with h5py.File(path, "r") as f:
            assert int(f.attrs["rows"]) == f["features"].shape[0]
    except FileNotFoundError:
        pass
    return sorted(st.sha256)
def add_all(path, n, batch=4):
    with FeatureStore(path, "a", fingerprint=FP) as st:
        for start in range(0, n, batch):
            d = [sha(i) for i in range(start, min(n, start + batch)) if st.row_of(sha(i)) is None]
            if d:
                st.add(d, np.stack([feature_of(x) for x in d]), [["/img"]] * len(d), "good")
"""

FULL_DISK = COMMON + r"""
folder = sys.argv[1]
sh("mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", folder)
path = folder + "/s.h5"
errors = []
for attempt in range(2):  # the first run fills the disk; the second finds it full from the start
    try:
        add_all(path, 200)
    except StoreError as exc:
        errors.append(str(exc))
rows_full = true_rows(path)
sh("mount", "-o", "remount,size=16m", folder)  # space freed: the same work again completes
add_all(path, 200)
rows_after = true_rows(path)
print(json.dumps({"errors": errors, "rows_full": len(rows_full), "rows_after": rows_after,
                  "expected": sorted(sha(i) for i in range(200)),
                  "leftovers": sorted(p for p in __import__("os").listdir(folder) if p.endswith(".tmp"))}))
"""

READ_ONLY = COMMON + r"""
folder = sys.argv[1]
add_all(folder + "/s.h5", 10)
sh("mount", "--bind", folder, folder)
sh("mount", "-o", "remount,bind,ro", folder)
out = {"rows": len(true_rows(folder + "/s.h5"))}
for name in ("s.h5", "sub/new.h5"):
    try:
        add_all(folder + "/" + name, 20)
    except StoreError as exc:
        out[name] = str(exc)
if len(sys.argv) > 2:  # the command line too
    cli = subprocess.run([sys.argv[2], "extract", sys.argv[3], "--store", folder + "/s.h5"], capture_output=True, text=True)
    info = subprocess.run([sys.argv[2], "info", folder + "/s.h5", "--json"], capture_output=True, text=True)
    out["cli"] = [cli.returncode, cli.stderr, info.returncode, info.stdout]
print(json.dumps(out))
"""


def in_private_mounts(script: str, *args: str) -> dict:
    """Run ``script`` in its own mount namespace (its mounts vanish with it); return its JSON output."""
    if shutil.which("unshare") is None:
        pytest.skip("unshare(1) is not installed: cannot make a tmpfs or read-only mount for this test")
    unshare = ["unshare", "--mount"] if os.geteuid() == 0 else ["unshare", "--map-root-user", "--mount"]
    probe = subprocess.run([*unshare, "mount", "-t", "tmpfs", "tmpfs", "/mnt"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"this platform cannot make private mounts ({probe.stderr.strip()}); full-disk and "
                    "read-only behaviour are not tested here")
    done = subprocess.run([*unshare, sys.executable, "-c", script, *args], capture_output=True, text=True,
                          timeout=300, cwd=REPO)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_full_disk_is_a_clear_error_and_leaves_only_whole_rows(tmp_path):
    out = in_private_mounts(FULL_DISK, str(tmp_path))
    assert len(out["errors"]) == 2
    for error in out["errors"]:
        assert "No space left on device" in error and "s.h5" in error
        assert "run again once the problem is fixed" in error or "nothing of this batch was recorded" in error
    assert 0 < out["rows_full"] < 200  # some batches made it, every one of them whole (checked inside)
    assert out["rows_after"] == out["expected"]  # and nothing is missing once there is room again
    assert out["leftovers"] == []


def test_a_read_only_store_can_be_read_but_not_written(tmp_path):
    out = in_private_mounts(READ_ONLY, str(tmp_path))
    assert out["rows"] == 10
    assert "cannot take the writer lock (Read-only file system" in out["s.h5"]
    assert "s.h5.lock" in out["s.h5"] and "the store's folder must be writable" in out["s.h5"]
    assert "cannot take the writer lock (Read-only file system" in out["sub/new.h5"] and "sub" in out["sub/new.h5"]


@pytest.mark.weights
def test_the_command_line_on_a_read_only_store(tmp_path, weights):
    images = tmp_path / "images"
    images.mkdir()
    from PIL import Image

    Image.new("RGB", (20, 20), "red").save(images / "a.png")
    out = in_private_mounts(READ_ONLY, str(tmp_path / "store"), STYLESIFT, str(images))
    code, stderr, info_code, info = out["cli"]
    assert code == 1 and "Read-only file system" in stderr and "must be writable" in stderr
    assert info_code == 0 and json.loads(info)["rows"] == 10


FULL_DISK_CLI = r"""
import json, subprocess, sys
import numpy as np
from stylesift.featurizer.store import FeatureStore
folder, stylesift, images = sys.argv[1:4]
subprocess.run(["mount", "-t", "tmpfs", "-o", "size=80k", "tmpfs", folder], check=True)
cmd = [stylesift, "extract", images, "--store", folder + "/s.h5", "--batch-size", "4", "--workers", "1"]
full = subprocess.run(cmd, capture_output=True, text=True)
st = FeatureStore(folder + "/s.h5")
X = st.features()
rows_full = {"n": len(st), "paths": [st.paths(i) for i in range(len(st))], "distinct": len({x.tobytes() for x in X}),
             "nonzero": bool((np.abs(X).sum(axis=1) > 0).all())}
print(json.dumps({"full": [full.returncode, full.stderr], "rows_full": rows_full}))
"""


@pytest.mark.weights
@pytest.mark.slow
def test_the_command_line_on_a_full_disk(tmp_path, weights):
    from PIL import Image

    images = tmp_path / "images"
    images.mkdir()
    for i in range(16):
        Image.new("RGB", (24, 24), (i * 15, 255 - i * 15, (i * 40) % 255)).save(images / f"{i:02d}.png")
    (tmp_path / "store").mkdir()
    out = in_private_mounts(FULL_DISK_CLI, str(tmp_path / "store"), STYLESIFT, str(images))
    code, stderr = out["full"]
    assert code == 1 and "No space left on device" in stderr, stderr
    rows = out["rows_full"]
    assert 0 < rows["n"] < 16 and rows["distinct"] == rows["n"] and rows["nonzero"]  # whole rows only
    assert all(len(p) == 1 and p[0].startswith(str(images)) for p in rows["paths"])
    # (that the same command completes the store once there is room is shown without the network above)
