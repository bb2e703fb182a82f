"""Throughput of ``--engine ray`` with 1 and 2 workers against local extraction, in one run on this machine.

    .venv/bin/python benchmarks/ray_scaling.py [--images DIR] [--n 160] [--batch-size 32] [--json]

Each mode extracts the same ``n`` images into a fresh store in a temporary folder; the network is
loaded (and the Ray workers started) before the clock starts, and worker start-up is reported apart.
Prints images/s per mode and the ratio to local mode, with the machine's CPU count and load, and the
CPU seconds spent per image (driver and workers apart): on a busy machine wall-clock rates follow
the machine's load, while CPU time per image is what sizing a cluster needs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

DEFAULT_IMAGES = Path(__file__).resolve().parents[2] / "shared" / "data" / "food-vs-snapshots"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES, help="folder of images (recursive)")
    parser.add_argument("--n", type=int, default=160, help="images per mode")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="Ray worker counts to time")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)

    import ray

    from stylesift.featurizer.extract import Featurizer, list_images
    from stylesift.featurizer.ray import RayEngine

    files = list_images([args.images])[: args.n + args.batch_size]
    warm, files = files[: args.batch_size], files[args.batch_size:]
    if len(files) < args.n:
        print(f"{args.images}: only {len(files) + len(warm)} images, need {args.n + args.batch_size}", file=sys.stderr)
        return 1
    result = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "load_before": os.getloadavg()},
              "images": str(args.images), "n": len(files), "batch_size": args.batch_size, "modes": []}
    with tempfile.TemporaryDirectory(prefix="stylesift-bench-") as tmp:
        tmp = Path(tmp)
        local = Featurizer(batch_size=args.batch_size)
        local.extract(warm, tmp / "warm-local.h5")
        cpu = time.process_time()
        report = local.extract(files, tmp / "local.h5")
        result["modes"].append({"mode": "local", "workers": None, "seconds": report.seconds,
                                "images_per_second": report.images_per_second,
                                "cpu_seconds_per_image": (time.process_time() - cpu) / report.new})
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
        for n_workers in args.workers:
            with RayEngine(local.weights, batch_size=args.batch_size, workers=n_workers) as engine:
                started = time.perf_counter()
                engine.extract(warm, tmp / f"warm-ray{n_workers}.h5")  # starts the workers
                startup = time.perf_counter() - started
                actors = [ray.get_actor(name) for name in engine.actor_names_]
                worker_cpu = sum(i["cpu_seconds"] for i in ray.get([a.info.remote() for a in actors]))
                cpu = time.process_time()
                report = engine.extract(files, tmp / f"ray{n_workers}.h5")
                driver_cpu = time.process_time() - cpu
                worker_cpu = sum(i["cpu_seconds"] for i in ray.get([a.info.remote() for a in actors])) - worker_cpu
            result["modes"].append({"mode": "ray", "workers": n_workers, "seconds": report.seconds,
                                    "images_per_second": report.images_per_second, "startup_seconds": startup,
                                    "cpu_seconds_per_image": worker_cpu / report.new,
                                    "driver_cpu_seconds_per_image": driver_cpu / report.new})
        ray.shutdown()
    result["machine"]["load_after"] = os.getloadavg()
    base = result["modes"][0]["images_per_second"]
    for mode in result["modes"]:
        mode["ratio_to_local"] = mode["images_per_second"] / base if base else None
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    m = result["machine"]
    print(f"{result['n']} images from {result['images']}, batch {args.batch_size}; {m['cpus']} CPUs, "
          f"load {m['load_before'][0]:.1f} before / {m['load_after'][0]:.1f} after")
    for mode in result["modes"]:
        name = "local" if mode["mode"] == "local" else f"ray × {mode['workers']}"
        extra = ""
        if mode["mode"] == "ray":
            extra = (f"; driver {mode['driver_cpu_seconds_per_image'] * 1000:.0f} CPU ms/image; "
                     f"workers started in {mode['startup_seconds']:.0f} s")
        print(f"  {name:10s} {mode['images_per_second']:6.1f} images/s  ({mode['seconds']:.1f} s, "
              f"{mode['ratio_to_local']:.2f}× local); {mode['cpu_seconds_per_image']:.3f} CPU s/image "
              f"= {3600 / mode['cpu_seconds_per_image']:,.0f} images/CPU-hour{extra}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
