"""Two `stylesift extract` on one store: the second waits for the first, saying so; readers are never blocked.

(The store-level guarantees, with many commits under a watching reader, are in tests/test_store.py.)
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from stylesift.featurizer.store import FeatureStore

REPO = Path(__file__).resolve().parents[1]
STYLESIFT = str(Path(sys.executable).with_name("stylesift"))


@pytest.mark.weights
@pytest.mark.slow
def test_a_second_extract_waits_for_the_writer_and_readers_go_on(tmp_path, featurizer):
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(3)
    for i in range(6):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), np.uint8)).save(images / f"{i}.png")
    store = tmp_path / "s.h5"
    first = sorted(images.iterdir())[:2]
    featurizer.extract(first, store)  # an existing store with 2 rows

    holder = FeatureStore(store, "a", fingerprint=featurizer.fingerprint)  # the "first extract", mid-run
    second = subprocess.Popen([STYLESIFT, "extract", str(images), "--store", str(store), "--batch-size", "8"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(second.stderr), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 300
        while not any("waiting for it to finish" in line for line in lines):
            assert second.poll() is None, "".join(lines)  # it must wait, not fail or write
            assert time.monotonic() < deadline, "".join(lines)
            time.sleep(0.1)
        info = subprocess.run([STYLESIFT, "info", str(store), "--json"], capture_output=True, text=True, cwd=REPO,
                              timeout=120)
        assert info.returncode == 0 and json.loads(info.stdout)["rows"] == 2  # a reader is not blocked
        assert second.poll() is None and len(FeatureStore(store)) == 2  # the waiting writer wrote nothing
    finally:
        holder.close()
    out = second.stdout.read()
    assert second.wait(timeout=600) == 0, "".join(lines)
    reader.join(timeout=10)
    assert "4 new, 2 cached" in out
    assert len(FeatureStore(store)) == 6
