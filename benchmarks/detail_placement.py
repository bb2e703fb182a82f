"""Where should ``detail``'s tiles go on a large frame? Placements compared on the full-size benchmark's frames.

    .venv/bin/python benchmarks/detail_placement.py --frames artifacts/detail-fullsize [--kinds noise defocus jpeg]

Reads the frames ``benchmarks/detail_fullsize.py`` wrote (``FRAMES/<kind>/{clean,degraded}/*.jpg``),
cuts an 8 x 8 grid of candidate tiles (the recipe's tile size) from each fully decoded frame, runs
them through the INT8 detail network one by one (per-tile statistics), and averages the statistics
over several placements: the recipe's own (:func:`stylesift.featurizer.tiles.cut`: since version 3 the busiest of its own grid), all
64, the 9 or 16 busiest, the 9 flattest and two concatenations (busyness: variance of the tile's grey Laplacian, ranked
within each frame, so nothing is learnt from the twin). Prints accuracy / ROC AUC of a standardised
logistic regression, 5 stratified folds, per degradation and placement. Not a test.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from stylesift.featurizer import tiles as T
from stylesift.featurizer.extract import Featurizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=Path, default=Path("artifacts/detail-fullsize"))
    parser.add_argument("--kinds", nargs="+", default=["noise", "defocus", "jpeg"])
    parser.add_argument("--tasks", nargs="*", type=Path, default=[],
                        help="shared task folders (positive/ against negative/) instead of the frames")
    args = parser.parse_args()
    net = Featurizer(precision="int8", feature_sets=("pooled", "detail")).detail_net
    if args.tasks:
        for task in args.tasks:
            placements(net, task, task.name, ("positive", "negative"))
        return
    for kind in args.kinds:
        placements(net, args.frames / kind, kind)


def placements(net, root: Path, kind: str, classes=("clean", "degraded")) -> None:
    files = [(p, 1) for p in sorted((root / classes[0]).iterdir())] + [(p, 0) for p in sorted((root / classes[1]).iterdir())]
    G, t = 8, T.TILE
    feats = {"recipe (tiles.cut)": [], "all 64": [], "busiest 9 of 64": [], "flattest 9 of 64": [], "busiest 16 of 64": [],
             "busiest 9 + flattest 9, concatenated": [], "all 64 + busiest 9, concatenated": []}
    y = []
    for p, lab in files:
        with Image.open(p) as img:
            a = np.asarray(ImageOps.exif_transpose(img).convert("RGB"))
        if min(a.shape[:2]) < 2 * t:  # too small for a grid of candidates: mirror-pad as the recipe does
            a = np.pad(a, ((0, max(2 * t - a.shape[0], 0)), (0, max(2 * t - a.shape[1], 0)), (0, 0)), mode="symmetric")
        h, w = a.shape[:2]
        # candidate centres spread evenly, each tile clamped inside the frame (they overlap on small ones)
        ys = [min(max(round((i + 0.5) * h / G - t / 2), 0), h - t) for i in range(G)]
        xs = [min(max(round((i + 0.5) * w / G - t / 2), 0), w - t) for i in range(G)]
        tl = np.stack([a[yy:yy + t, xx:xx + t] for yy in ys for xx in xs])
        g = tl.astype(np.float32).mean(-1)
        lap = (g[:, 1:-1, 1:-1] * 4 - g[:, :-2, 1:-1] - g[:, 2:, 1:-1] - g[:, 1:-1, :-2] - g[:, 1:-1, 2:])
        busy = np.argsort(-lap.var(axis=(1, 2)))  # each frame ranks its own tiles
        st = net.run_tiles(tl).astype(np.float64)
        feats["all 64"].append(st.mean(0))
        feats["busiest 9 of 64"].append(st[busy[:9]].mean(0))
        feats["busiest 16 of 64"].append(st[busy[:16]].mean(0))
        feats["flattest 9 of 64"].append(st[busy[-9:]].mean(0))
        feats["busiest 9 + flattest 9, concatenated"].append(np.r_[st[busy[:9]].mean(0), st[busy[-9:]].mean(0)])
        feats["all 64 + busiest 9, concatenated"].append(np.r_[st.mean(0), st[busy[:9]].mean(0)])
        feats["recipe (tiles.cut)"].append(net.run_tiles(T.cut(a)).astype(np.float64).mean(0))
        y.append(lab)
    y = np.array(y)
    cv = StratifiedKFold(5, shuffle=True, random_state=0)
    for name, X in feats.items():
        X = np.array(X)
        s = cross_val_predict(make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000)), X, y, cv=cv, method="decision_function")
        print(f"{kind:14s} {name:36s} acc {np.mean((s > 0) == y):.3f} auc {roc_auc_score(y, s):.4f}", flush=True)


if __name__ == "__main__":
    main()
