"""The scoring service with a ``detail`` model against a ``pooled`` model, in one run on this machine.

    .venv/bin/python benchmarks/serve_detail.py [--images DIR] [--limit 64] [--size 384] [--requests 256]
        [--clients 1 8] [--sets pooled detail] [--json]

For each feature set, :func:`stylesift.review.serve.bench.run_bench` (``stylesift bench serve``): JPEG
copies of the same images, ``extract`` of that set as the baseline, a ``head`` model of it, then
``stylesift serve`` under closed-loop clients (one image per request). Prints each run's table and
the images/s of each set against the first set's, with the machine's load: the cost of cutting
nine native-resolution tiles per upload and running them through the detail network.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

DEFAULT_IMAGES = Path(__file__).resolve().parents[2] / "shared" / "data" / "sensor-noise"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES, help="folder of images (recursive)")
    parser.add_argument("--limit", type=int, default=64)
    parser.add_argument("--size", type=int, default=384, help="longest side of the JPEG copies, pixels")
    parser.add_argument("--requests", type=int, default=256, help="images scored per configuration")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--sets", nargs="+", default=["pooled", "detail"], help="feature sets, the first is the baseline")
    parser.add_argument("--precision", default="int8")
    parser.add_argument("--max-seconds", type=float, default=60.0)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)

    from stylesift.review.serve.bench import run_bench, table

    runs = {}
    for name in args.sets:
        runs[name] = run_bench([args.images], limit=args.limit, size=args.size, requests=args.requests,
                               clients=tuple(args.clients), per_request=(1,), precision=args.precision,
                               max_seconds=args.max_seconds, repeat=1, warmup=32, feature_set=name,
                               log=lambda m: print(m, file=sys.stderr, flush=True))
        print(f"--- model of {name}\n{table(runs[name])}\n", file=sys.stderr if args.json else sys.stdout, flush=True)
    first = args.sets[0]
    ratios = {name: {str(c["clients"]): round(c["images_per_second"] / b["images_per_second"], 3)
                     for c, b in zip(run["configs"], runs[first]["configs"]) if b["images_per_second"] > 0}
              for name, run in runs.items()}
    if args.json:
        print(json.dumps({"runs": runs, "ratio_to_first_set": ratios}, indent=1))
    else:
        for name, by_clients in ratios.items():
            print(f"{name} / {first} served images/s: " + ", ".join(f"{c} clients {r:.2f}" for c, r in by_clients.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
