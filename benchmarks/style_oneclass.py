"""One-class on a look: positives only, scored against a background of unlabelled feed rows.

Usage: python benchmarks/style_oneclass.py CACHE_DIR TASK CANDIDATE[,CANDIDATE] BACKGROUND_TASKS [--seeds 0,1,2]

For each stratified fold (5), the scorers see the fold's training *positives* only, plus the
background: every image of BACKGROUND_TASKS (comma-separated cache folders; never the evaluated
task's labels). ``+feed`` in BACKGROUND_TASKS also adds the evaluated task's held-out images,
unlabelled (the feed the model will score). ROC AUC on the held-out fold. Developer research tool (#14).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from sklearn.covariance import LedoitWolf
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold

sys.path.insert(0, str(Path(__file__).parent))
from style_eval import features  # noqa: E402


def scorers(P: np.ndarray, B: np.ndarray, T: np.ndarray) -> dict:
    """Scores of test rows T (higher = more like P) from positives P and background B."""
    out = {}
    mu_b, sd_b = B.mean(0), B.std(0) + 1e-6
    Pz, Bz, Tz = (P - mu_b) / sd_b, (B - mu_b) / sd_b, (T - mu_b) / sd_b
    # Plain distance to the positives' mean (no background beyond the scaling).
    out["dist-to-mean (bg-scaled)"] = -np.linalg.norm(Tz - Pz.mean(0), axis=1)
    # Whitening by the background's principal components: content variation is what the feed varies in.
    k = min(256, len(B) - 1, B.shape[1])
    pca = PCA(k, whiten=True, random_state=0).fit(Bz)
    Pw, Tw = pca.transform(Pz), pca.transform(Tz)
    out["whitened dist-to-mean"] = -np.linalg.norm(Tw - Pw.mean(0), axis=1)
    lw = LedoitWolf().fit(Pw)
    d = Tw - lw.location_
    out["whitened Mahalanobis (P cov)"] = -np.einsum("ij,jk,ik->i", d, lw.precision_, d)
    shift = Pw.mean(0)  # background mean is 0 in whitened space
    out["whitened mean-shift projection"] = Tw @ shift / (np.linalg.norm(shift) + 1e-9)
    # Positive vs unlabelled (PU): logistic regression, background as the unlabelled class.
    X = np.concatenate([Pz, Bz])
    y = np.r_[np.ones(len(Pz)), np.zeros(len(Bz))]
    lr = LogisticRegression(C=0.1, max_iter=3000, class_weight="balanced").fit(X, y)
    out["PU logistic (P vs background)"] = lr.decision_function(Tz)
    # Distance ratio: nearest positives vs nearest background, whitened.
    Bw = pca.transform(Bz)

    def knn(A, Q, k=10):
        d2 = (Q ** 2).sum(1)[:, None] + (A ** 2).sum(1)[None] - 2 * Q @ A.T
        return np.sqrt(np.maximum(np.sort(d2, axis=1)[:, :k], 0)).mean(1)

    out["whitened kNN ratio"] = -np.log(knn(Pw, Tw) + 1e-9) + np.log(knn(Bw, Tw) + 1e-9)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("cache")
    ap.add_argument("task")
    ap.add_argument("candidates")
    ap.add_argument("background")
    ap.add_argument("--seeds", default="0,1,2")
    args = ap.parse_args()
    cache = Path(args.cache)
    y = np.load(cache / args.task / "labels.npy").astype(bool)
    bg_tasks = [t for t in args.background.split(",") if t and t != "+feed"]
    feed = "+feed" in args.background.split(",")
    for cand in args.candidates.split(","):
        X = features(cache / args.task, cand)
        B0 = np.concatenate([features(cache / t, cand) for t in bg_tasks]) if bg_tasks else np.zeros((0, X.shape[1]))
        aucs: dict[str, list] = {}
        for seed in [int(s) for s in args.seeds.split(",")]:
            for train, test in StratifiedKFold(5, shuffle=True, random_state=seed).split(X, y):
                P = X[train][y[train]]
                B = np.concatenate([B0, X[test]]) if feed else B0
                for name, s in scorers(P, B, X[test]).items():
                    aucs.setdefault(name, []).append(roc_auc_score(y[test], s))
        line = {"task": args.task, "candidate": cand, "background": args.background, "background_rows": len(B0),
                **{k: round(float(np.mean(v)), 4) for k, v in aucs.items()}}
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
