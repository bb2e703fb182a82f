"""The store benchmark (``stylesift bench store``): synthetic stores of given sizes, the operations a year of feed does.

For each size it builds a store of random 2048-d rows (written in 32,768-row segments, as a long run
of extracts leaves it after merges) and times, with the page cache warm:

- open for reading (``FeatureStore(path)`` and ``len``);
- stream all features in blocks (GB/s), never one big array;
- load 5,000 labelled rows spread over the store (``load``);
- look up 1,000 ids by sha256;
- add 2,000 rows in one call and close, and the same the way ``extract`` does (batches of 32);
- relabel one image and close; add one verdict and close.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from pathlib import Path
from typing import Callable

import numpy as np

from stylesift.featurizer.store.facade import FeatureStore
from stylesift.featurizer.store.types import Verdict

FP = {"backbone": "synthetic", "feature_dim": 2048, "dtype": "float32"}
BUILD_ROWS = 32768


def _ids(start: int, n: int) -> list[str]:
    return [hashlib.sha256(f"row {i}".encode()).hexdigest() for i in range(start, start + n)]


def build(path: Path, rows: int, log: Callable[[str], None] = lambda m: None) -> float:
    """A synthetic store of ``rows`` rows; returns seconds."""
    started = time.perf_counter()
    rng = np.random.default_rng(0)
    with FeatureStore(path, "a", fingerprint=FP) as st:
        for start in range(0, rows, BUILD_ROWS):
            n = min(BUILD_ROWS, rows - start)
            X = rng.standard_normal((n, 2048), np.float32)
            st.add(_ids(start, n), X, [[f"/feed/day{i // 2000:04d}/{i:08d}.jpg"] for i in range(start, start + n)])
            log(f"built {start + n:,} of {rows:,} rows")
    return time.perf_counter() - started


def _timed(fn) -> tuple[float, object]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def measure(path: Path, rows: int, log: Callable[[str], None] = lambda m: None) -> dict:
    out: dict = {"rows": rows}
    rng = np.random.default_rng(1)
    # labels for 5,000 rows spread over the store (one small record)
    labelled = np.sort(rng.choice(rows, size=min(5000, rows), replace=False))
    ids = _ids(0, rows) if rows <= 250_000 else None
    with FeatureStore(path, "a") as st:
        keys = [ids[i] for i in labelled] if ids else [hashlib.sha256(f"row {i}".encode()).hexdigest() for i in labelled]
        for k in keys:
            st.update(k, label="picked")
    out["open_s"], st = _timed(lambda: FeatureStore(path))
    len(st)
    out["lookup_1000_s"], _ = _timed(lambda: [st.row_of(hashlib.sha256(f"row {i}".encode()).hexdigest())
                                              for i in rng.integers(0, rows, 1000)])
    out["load_5000_labelled_s"], (X, y, _) = _timed(lambda: FeatureStore(path).load(["picked"]))
    assert len(X) == len(labelled)
    log("streaming all features")

    def stream():
        total = 0
        for block in FeatureStore(path).iter_features(block_rows=32768):
            total += block.nbytes
        return total

    stream()  # warm the page cache once, as the figures are
    out["stream_all_s"], nbytes = _timed(stream)
    out["stream_gb_per_s"] = nbytes / out["stream_all_s"] / 1e9
    out["store_gib"] = sum(f.stat().st_size for f in Path(str(path) + ".parts").iterdir() if f.is_file()) / 2**30

    def add_2000():
        with FeatureStore(path, "a", fingerprint=FP) as w:
            base = rows + 10_000_000
            for start in range(0, 2000, 32):
                n = min(32, 2000 - start)
                w.add(_ids(base + start, n), rng.standard_normal((n, 2048), np.float32),
                      [[f"/feed/new/{base + start + i}.jpg"] for i in range(n)])
                w.maybe_commit()

    out["add_2000_close_s"], _ = _timed(add_2000)

    def add_2000_once():
        with FeatureStore(path, "a", fingerprint=FP) as w:
            base = rows + 20_000_000
            w.add(_ids(base, 2000), rng.standard_normal((2000, 2048), np.float32),
                  [[f"/feed/new/{base + i}.jpg"] for i in range(2000)])

    out["add_2000_once_close_s"], _ = _timed(add_2000_once)
    some = hashlib.sha256(f"row {rows // 2}".encode()).hexdigest()

    def relabel():
        with FeatureStore(path, "a") as w:
            w.update(some, label="other")

    out["relabel_1_close_s"], _ = _timed(relabel)

    def verdict():
        with FeatureStore(path, "a") as w:
            w.add_verdicts([Verdict(some, "yes", "bench", time.time())])

    out["verdict_1_close_s"], _ = _timed(verdict)
    return out


def run(sizes: list[int], folder: Path | None = None, keep: bool = False,
        log: Callable[[str], None] = lambda m: None) -> list[dict]:
    import tempfile

    results = []
    for rows in sizes:
        work = Path(folder or tempfile.mkdtemp(prefix="stylesift-bench-store-"))
        work.mkdir(parents=True, exist_ok=True)
        path = work / f"bench-{rows}.h5"
        need = rows * 2048 * 4 * 1.1
        free = shutil.disk_usage(work).free
        if free < need:
            log(f"skipping {rows:,} rows: needs {need / 2**30:.1f} GiB, {free / 2**30:.1f} GiB free in {work}")
            continue
        try:
            build_s = build(path, rows, log)
            result = measure(path, rows, log)
            result["build_s"] = build_s
            results.append(result)
            log(f"{rows:,} rows: " + ", ".join(f"{k}={v:.3g}" for k, v in result.items() if k != "rows"))
        finally:
            if not keep:
                for p in (path, Path(str(path) + ".parts"), Path(str(path) + ".lock")):
                    if p.is_dir():
                        shutil.rmtree(p, ignore_errors=True)
                    elif p.exists():
                        os.unlink(p)
    return results


COLUMNS = [("rows", "rows", "{:,}"), ("open_s", "open (r)", "{:.3f} s"), ("stream_gb_per_s", "stream all", "{:.2f} GB/s"),
           ("load_5000_labelled_s", "load 5,000 labelled", "{:.2f} s"), ("lookup_1000_s", "1,000 look-ups", "{:.3f} s"),
           ("add_2000_once_close_s", "add 2,000 + close", "{:.2f} s"),
           ("add_2000_close_s", "same in 63 batches", "{:.2f} s"), ("relabel_1_close_s", "relabel 1 + close", "{:.3f} s"),
           ("verdict_1_close_s", "1 verdict + close", "{:.3f} s"), ("store_gib", "size", "{:.2f} GiB")]


def table(results: list[dict]) -> str:
    lines = ["| " + " | ".join(title for _, title, _ in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in results:
        lines.append("| " + " | ".join(fmt.format(r[key]) for key, _, fmt in COLUMNS) + " |")
    return "\n".join(lines)
