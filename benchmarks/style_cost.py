"""Extraction cost of pooled+style against pooled alone: the same Keras network, one forward pass.

Usage: python benchmarks/style_cost.py [--batch 32] [--rounds 5]
Interleaved rounds on the same preprocessed batch; best time per model (the machine is shared).
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    from stylesift.featurizer.backbones import keras_model, preprocess
    from stylesift.featurizer.weights import resolve

    w = resolve()
    pooled, _ = keras_model(w, ("pooled",))
    both, _ = keras_model(w, ("pooled", "style"))
    x = preprocess(np.random.default_rng(0).integers(0, 256, (args.batch, 224, 224, 3), dtype=np.uint8))
    best = {"pooled": float("inf"), "pooled,style": float("inf")}
    for model in (pooled, both):  # warm up (graph tracing)
        model.predict_on_batch(x)
    for _ in range(args.rounds):
        for name, model in (("pooled", pooled), ("pooled,style", both)):
            t0 = time.perf_counter()
            model.predict_on_batch(x)
            best[name] = min(best[name], time.perf_counter() - t0)
    for name, t in best.items():
        print(f"{name}: {args.batch / t:.2f} images/s (best of {args.rounds} rounds, batch {args.batch})")
    print(f"ratio pooled,style / pooled: {best['pooled,style'] / best['pooled']:.3f}")


if __name__ == "__main__":
    main()
