"""Decode memory, measured: the process peak (``/usr/bin/time -f %M``) on decompression bombs, minus the
same process on one small JPEG, stays within the decode memory budget; each estimate bounds its real peak.

A benchmark (``pytest -m benchmark tests/test_trust_memory.py -s``): it writes ~2 MB of bomb files that
decode to ~0.4 GB each, and runs a dozen subprocesses. Numbers are printed.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, features

from stylesift.featurizer.images import DEFAULT_DECODE_MEMORY

pytestmark = [pytest.mark.benchmark, pytest.mark.skipif(shutil.which("time") is None and not Path("/usr/bin/time").exists(),
                                                        reason="needs /usr/bin/time")]
REPO = Path(__file__).parents[1]
MiB = 2**20

# Decode the files as `extract` does: prepare_file in two decode threads through ordered_map.
DECODE = """
import json, sys
from pathlib import Path
from stylesift.featurizer import images
from stylesift.featurizer.extract import ordered_map, prepare_file
if sys.argv[1] != "default":
    images.set_decode_memory(int(sys.argv[1]))
items = list(ordered_map(prepare_file, [Path(p) for p in sys.argv[2:]], threads=2, window=4))
print(json.dumps({"errors": {str(i.path): i.error for i in items}, "reserved_peak": images.decode_memory().peak}))
"""


@pytest.fixture(scope="module")
def bombs(tmp_path_factory):
    root = tmp_path_factory.mktemp("bombs")
    Image.new("RGBA", (10000, 10000), (10, 200, 30, 128)).save(root / "rgba_10000x10000.png", compress_level=9)
    Image.new("RGB", (16383, 6100), (10, 200, 30)).save(root / "lossless_16383x6100.webp", lossless=True, quality=0, method=0)
    Image.new("LA", (10000, 10000), (200, 100)).save(root / "la_10000x10000.png", compress_level=9)
    ramp = (np.linspace(0, 65535, 10000)[:, None] * np.ones((1, 10000))).astype(np.uint16)
    Image.fromarray(ramp).save(root / "sixteen_bit_10000x10000.png", compress_level=9)
    unit = np.linspace(0, 1, 8000, dtype=np.float32)[:, None] * np.ones((1, 8000), np.float32)
    Image.fromarray(unit).save(root / "float_8000x8000.tif", compression="tiff_deflate")
    Image.new("RGB", (10000, 10000), (120, 30, 200)).save(root / "progressive_10000x10000.jpg", progressive=True,
                                                          quality=90, subsampling=0)
    Image.new("RGBA", (8000, 8000), (1, 2, 3, 0)).save(root / "transparent_8000x8000.gif")
    Image.new("RGBA", (8000, 8000), (1, 2, 3, 9)).save(root / "rle_8000x8000.tga", compression="tga_rle")
    if features.check("avif"):
        Image.new("RGBA", (5000, 5000), (120, 30, 200, 100)).save(root / "alpha_5000x5000.avif", quality=50, speed=10)
    Image.new("RGB", (64, 48), (100, 100, 100)).save(root / "small.jpg")
    return root


def peak(script: str, *args) -> tuple[int, dict]:
    """(maximum resident set in bytes, the script's JSON output)."""
    out = subprocess.run(["/usr/bin/time", "-f", "%M", sys.executable, "-c", script, *map(str, args)],
                         capture_output=True, text=True, timeout=600, cwd=REPO)
    assert out.returncode == 0, out.stderr
    return int(out.stderr.strip().splitlines()[-1]) * 1024, json.loads(out.stdout.strip().splitlines()[-1])


def test_each_estimate_bounds_the_real_peak(bombs):
    idle, _ = peak(DECODE, "default", bombs / "small.jpg")
    print(f"\nidle (one small JPEG): {idle / MiB:.0f} MiB")
    for path in sorted(bombs.glob("*")):
        if path.name == "small.jpg":
            continue
        rss, out = peak(DECODE, 8 << 30, path)
        assert out["errors"][str(path)] is None, out
        used = rss - idle
        print(f"{path.name:32s} reserved {out['reserved_peak'] / MiB:6.0f} MiB, measured {used / MiB:6.0f} MiB above idle")
        assert used <= out["reserved_peak"], path.name


def test_all_bombs_through_two_decode_threads_stay_within_the_default_budget(bombs):
    files = sorted(p for p in bombs.glob("*") if p.name != "small.jpg") * 2
    idle, _ = peak(DECODE, "default", bombs / "small.jpg", bombs / "small.jpg")
    rss, out = peak(DECODE, "default", *files)
    used = rss - idle
    print(f"\n{len(files)} bombs, 2 threads, budget {DEFAULT_DECODE_MEMORY / MiB:.0f} MiB: process peak {used / MiB:.0f} MiB "
          f"above idle (reserved at most {out['reserved_peak'] / MiB:.0f} MiB)")
    for name, error in sorted(out["errors"].items()):
        print(f"  {Path(name).name:32s} {'ok' if error is None else error.split(': ', 1)[1]}")
    assert used <= DEFAULT_DECODE_MEMORY
    failed = {Path(n).name for n, e in out["errors"].items() if e is not None}
    assert all("more than the decode memory budget" in e for e in out["errors"].values() if e is not None)
    assert "rgba_10000x10000.png" not in failed and "lossless_16383x6100.webp" in failed


@pytest.mark.weights
def test_extract_on_the_bombs_stays_within_the_budget(bombs, tmp_path, weights):
    """The whole `stylesift extract` process (network loaded) on the bombs, minus the same on one small JPEG."""
    def extract(*paths, store):
        out = subprocess.run(["/usr/bin/time", "-f", "%M", sys.executable, "-m", "stylesift", "extract", *map(str, paths),
                              "--store", str(store), "--json", "--workers", "2"],
                             capture_output=True, text=True, timeout=600, cwd=REPO)
        assert out.returncode in (0, 3), out.stderr
        return int(out.stderr.strip().splitlines()[-1]) * 1024, json.loads(out.stdout)

    idle, _ = extract(bombs / "small.jpg", store=tmp_path / "idle.h5")
    files = [p for p in sorted(bombs.glob("*")) if p.name != "small.jpg"]
    rss, report = extract(*files, bombs / "small.jpg", store=tmp_path / "bombs.h5")
    print(f"\nextract, 2 decode threads: peak {rss / MiB:.0f} MiB, idle {idle / MiB:.0f} MiB, "
          f"difference {(rss - idle) / MiB:.0f} MiB (budget {DEFAULT_DECODE_MEMORY / MiB:.0f} MiB); "
          f"{report['new']} new, {len(report['failed'])} failed")
    assert rss - idle <= DEFAULT_DECODE_MEMORY
