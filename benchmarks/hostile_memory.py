"""Peak memory of the hostile review's cases (#23), each against a baseline run in the same session.

1. ``extract`` of 10,000 copies of one small new JPEG, against the rerun (every copy cached).
2. ``score --decode-memory 300M --report`` of four 9000×9000 RGBA PNGs plus 8 photos, against the
   same command on the 8 photos alone.
3. ``review --decode-memory 300M`` over eight 4000×4000 RGB PNGs: the server's peak after 8 parallel
   ``GET /img/N``, against its peak before them; and ``/api/state`` while another process holds the
   store's writer lock.

Peaks are ``/usr/bin/time -f %M`` (max resident set) for commands and ``VmHWM`` for the server.
Run: ``python benchmarks/hostile_memory.py --data ../shared/data/food-vs-snapshots``.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from PIL import Image

EXE = [sys.executable, "-m", "stylesift.cli.main"]


def peak_kb(args: list[str]) -> tuple[int, str]:
    """``(max RSS in KiB, stderr tail)`` of one stylesift command."""
    done = subprocess.run(["/usr/bin/time", "-f", "PEAK %M", *EXE, *args], capture_output=True, text=True)
    peak = int(re.findall(r"PEAK (\d+)", done.stderr)[-1])
    if done.returncode not in (0, 3):
        raise SystemExit(f"{args[0]} failed ({done.returncode}): {done.stderr[-2000:]}")
    return peak, done.stderr[-300:]


def mib(kb: int) -> float:
    return round(kb / 1024, 1)


def copies(work: Path) -> dict:
    src = work / "one.jpg"
    Image.new("RGB", (16, 16), (120, 30, 200)).save(src, quality=80)
    folder = work / "copies"
    folder.mkdir()
    for i in range(10_000):
        shutil.copyfile(src, folder / f"c{i:05d}.jpg")
    store = work / "copies.h5"
    first, _ = peak_kb(["extract", str(folder), "--store", str(store), "--json"])
    rerun, _ = peak_kb(["extract", str(folder), "--store", str(store), "--json"])
    return {"bytes_per_copy": src.stat().st_size, "first_mib": mib(first), "rerun_mib": mib(rerun),
            "excess_mib": mib(first - rerun), "target_excess_mib": 300}


def model(work: Path, data: Path) -> tuple[Path, Path, list[Path]]:
    store = work / "s.h5"
    pos, neg = sorted((data / "positive").iterdir())[:20], sorted((data / "negative").iterdir())[:20]
    for label, files in (("good", pos), ("plain", neg)):
        peak_kb(["extract", *map(str, files), "--store", str(store), "--label", label])
    out = work / "m.ssmodel"
    peak_kb(["train", "--store", str(store), "--positive", "good", "--negative", "plain", "--method", "head",
             "--out", str(out)])
    photos = sorted((data / "positive").iterdir())[100:108]
    return store, out, photos


def huge_pngs(folder: Path, n: int, side: int, mode: str = "RGBA") -> list[Path]:
    folder.mkdir(exist_ok=True)
    out = []
    for i in range(n):
        path = folder / f"huge{i}.png"
        img = Image.effect_noise((side // 8, side // 8), 60).resize((side, side)).convert(mode)
        img.save(path, compress_level=1)
        out.append(path)
        del img
    return out


def score_report(work: Path, store: Path, bundle: Path, photos: list[Path]) -> dict:
    huge = huge_pngs(work / "huge", 4, 9000)
    common = ["score", str(bundle), "--store", str(store), "--decode-memory", "300M", "--json"]
    peak_kb([*common, *map(str, photos)])  # featurizes the photos: both measured runs find them cached
    base, _ = peak_kb([*common, *map(str, photos), "--report", str(work / "base.html")])
    hostile, _ = peak_kb([*common, *map(str, photos + huge), "--report", str(work / "huge.html")])
    return {"baseline_mib": mib(base), "with_huge_mib": mib(hostile), "excess_mib": mib(hostile - base),
            "target_excess_mib": 300 + 300}


def vm_hwm(pid: int) -> int:
    text = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+)", text).group(1))


def review_server(work: Path, store: Path, bundle: Path) -> dict:
    big = huge_pngs(work / "big", 8, 4000, "RGB")  # ~80 MB to decode each: 8 at once would exceed the budget
    proc = subprocess.Popen([*EXE, "review", str(bundle), *map(str, big), "--store", str(store), "--port", "0",
                             "--decode-memory", "300M", "--retrain-every", "0"], stdout=subprocess.PIPE,
                            stderr=open(work / "review.log", "w"), text=True)
    try:
        url = None
        while url is None:
            line = proc.stdout.readline()
            if not line:
                raise SystemExit("review exited before printing its URL: " + (work / "review.log").read_text()[-2000:])
            if line.startswith("review page: "):
                url = line.split(": ", 1)[1].strip()
        base, token = url.split("/?token=")
        before = vm_hwm(proc.pid)

        def get(path):
            with urllib.request.urlopen(f"{base}{path}?token={token}", timeout=300) as r:
                return r.status, r.read()

        with cf.ThreadPoolExecutor(8) as pool:
            statuses = [s for s, _ in pool.map(get, [f"/img/{i}" for i in range(8)])]
        after = vm_hwm(proc.pid)
        holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom stylesift.featurizer.store import "
                                   "FeatureStore\nwith FeatureStore(sys.argv[1], 'a'):\n print('held', flush=True)\n"
                                   " time.sleep(8)", str(store)], stdout=subprocess.PIPE, text=True)
        holder.stdout.readline()
        req = urllib.request.Request(f"{base}/api/verdict", data=json.dumps({"id": 0, "verdict": "positive"}).encode(),
                                     headers={"Content-Type": "application/json", "X-Token": token})
        pending = cf.ThreadPoolExecutor(1).submit(lambda: _status(req))
        time.sleep(0.3)
        t0 = time.perf_counter()
        get("/api/state")
        state_s = time.perf_counter() - t0
        verdict_status = pending.result(timeout=60)
        holder.wait(30)
    finally:
        proc.terminate()
        proc.wait(30)
    return {"images": statuses, "before_mib": mib(before), "after_8_parallel_mib": mib(after),
            "excess_mib": mib(after - before), "target_excess_mib": 300 + 300,
            "state_seconds_while_store_locked": round(state_s, 3), "target_state_seconds": 0.5,
            "verdict_status_while_locked": verdict_status}


def _status(req) -> int:
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code


def cpu_flags() -> str:
    flags = re.search(r"^flags\s*:(.*)$", Path("/proc/cpuinfo").read_text(), re.M).group(1).split()
    model = re.search(r"^model name\s*:(.*)$", Path("/proc/cpuinfo").read_text(), re.M).group(1).strip()
    keep = [f for f in flags if f in ("avx2", "avx512f", "avx512_vnni", "amx_tile", "avx_vnni")]
    return f"{model}; {os.cpu_count()} CPUs; {' '.join(keep)}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, required=True, help="a labelled task folder with positive/ and negative/")
    ap.add_argument("--only", choices=["copies", "score", "review"], action="append")
    args = ap.parse_args()
    only = set(args.only or ["copies", "score", "review"])
    out = {"cpu": cpu_flags(), "date": time.strftime("%Y-%m-%d")}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if "copies" in only:
            out["copies"] = copies(work)
            print(json.dumps(out["copies"]), flush=True)
        if only & {"score", "review"}:
            store, bundle, photos = model(work, args.data)
            if "score" in only:
                out["score_report"] = score_report(work, store, bundle, photos)
                print(json.dumps(out["score_report"]), flush=True)
            if "review" in only:
                out["review"] = review_server(work, store, bundle)
                print(json.dumps(out["review"]), flush=True)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
