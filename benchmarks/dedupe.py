"""Benchmark: does feature cosine or a perceptual hash tell reposts of a photo from merely similar photos?

    .venv/bin/python benchmarks/dedupe.py --data ../shared/data --stores /work/stores/*.h5 [--per-task 20] [--json]

Reposts are made here from sampled shared images: centre crops (81 % and 64 % of the area), an
off-centre crop (49 %), a JPEG recompression at quality 30 and a half-size resize. "Merely
similar" is each sampled original's most similar *other* image among every image of the stores
(the shared tasks hold many photos of one kind: plates of food, skylines, screenshots).
For each measure the benchmark prints the repost distribution per variant, the nearest-other
distribution, and the errors at a few thresholds.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.fft import dctn

VARIANTS = ("crop81", "crop64", "crop49-offset", "jpeg-q30", "resize-half")


def variant_bytes(path: Path, kind: str) -> bytes:
    """The bytes of one repost of the image at ``path``."""
    with Image.open(path) as im:
        im = im.convert("RGB")
        w, h = im.size
        if kind.startswith("crop"):
            side = {"crop81": 0.9, "crop64": 0.8, "crop49-offset": 0.7}[kind]
            cw, ch = int(w * side), int(h * side)
            x0, y0 = ((w - cw) // 2, (h - ch) // 2) if "offset" not in kind else (w - cw, 0)
            im = im.crop((x0, y0, x0 + cw, y0 + ch))
        elif kind == "resize-half":
            im = im.resize((max(1, w // 2), max(1, h // 2)), Image.BILINEAR)
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=30 if kind == "jpeg-q30" else 85)
        return buf.getvalue()


def phash(source) -> int:
    """64-bit DCT perceptual hash: grey 32x32 thumbnail, the 8x8 lowest frequencies above their median."""
    with Image.open(source) as im:
        im.draft("L", (64, 64))
        grey = np.asarray(im.convert("L").resize((32, 32), Image.BILINEAR), dtype=np.float32)
    low = dctn(grey, norm="ortho")[:8, :8].ravel()
    bits = low > np.median(low[1:])
    return int(np.packbits(bits).view(">u8")[0])


def hamming(a: np.ndarray, b: int) -> np.ndarray:
    return np.array([bin(int(x) ^ b).count("1") for x in a])


def _stats(values) -> dict:
    v = np.asarray(values, dtype=float)
    return {"min": round(float(v.min()), 4), "p1": round(float(np.percentile(v, 1)), 4),
            "median": round(float(np.median(v)), 4), "p99": round(float(np.percentile(v, 99)), 4),
            "max": round(float(v.max()), 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--stores", nargs="+", type=Path, required=True)
    parser.add_argument("--per-task", type=int, default=20, help="originals sampled per task and class")
    parser.add_argument("--tasks", nargs="*", help="task folders to sample (default: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    from stylesift.classifiers.grouping import unit_rows
    from stylesift.featurizer.extract import Featurizer
    from stylesift.featurizer.images import load_image
    from stylesift.featurizer.store import FeatureStore

    # Every stored image: the pool in which each original looks for its most similar other photo.
    pool, pool_sha, pool_paths = [], [], []
    for s in args.stores:
        st = FeatureStore(s)
        pool.append(st.features())
        pool_sha += list(st.sha256)
        pool_paths += [st.paths(i)[0] for i in range(len(st))]
    pool = unit_rows(np.vstack(pool))
    pool_sha = np.array(pool_sha)
    rng = np.random.default_rng(args.seed)
    originals, tasks = [], []
    for task in sorted(p for p in args.data.iterdir() if p.is_dir() and (not args.tasks or p.name in args.tasks)):
        for cls in ("positive", "negative"):
            files = sorted((task / cls).glob("*"))
            picked = [files[i] for i in rng.choice(len(files), min(args.per_task, len(files)), replace=False)]
            originals += picked
            tasks += [task.name] * len(picked)
    featurizer = Featurizer()
    images, owner, kinds = [], [], []
    for i, path in enumerate(originals):
        images.append(load_image(path))
        owner.append(i)
        kinds.append("original")
        for kind in VARIANTS:
            images.append(load_image(io.BytesIO(variant_bytes(path, kind)), name=f"{path}:{kind}"))
            owner.append(i)
            kinds.append(kind)
    feats = unit_rows(np.vstack([featurizer.featurize(np.stack(images[j:j + 32])) for j in range(0, len(images), 32)]))
    owner, kinds = np.array(owner), np.array(kinds)
    import hashlib

    cos = {k: [] for k in VARIANTS}
    ham = {k: [] for k in VARIANTS}
    nearest_cos, nearest_ham = [], []
    pool_hash = np.array([phash(p) for p in pool_paths], dtype=np.uint64)
    for i, path in enumerate(originals):
        rows = np.flatnonzero(owner == i)
        orig = rows[kinds[rows] == "original"][0]
        h0 = phash(path)
        for r in rows:
            if kinds[r] != "original":
                cos[kinds[r]].append(float(feats[r] @ feats[orig]))
                ham[kinds[r]].append(int(hamming(np.array([phash(io.BytesIO(variant_bytes(path, kinds[r])))]), h0)[0]))
        sha = hashlib.sha256(path.read_bytes()).hexdigest()
        others = pool_sha != sha
        nearest_cos.append(float((pool[others] @ feats[orig]).max()))
        nearest_ham.append(int(hamming(pool_hash[others], h0).min()))
    result = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "originals": len(originals), "pool": len(pool),
        "cosine": {"reposts": {k: _stats(v) for k, v in cos.items()}, "nearest_other": _stats(nearest_cos)},
        "phash_hamming": {"reposts": {k: _stats(v) for k, v in ham.items()}, "nearest_other": _stats(nearest_ham)},
    }
    all_cos, all_ham = np.concatenate([cos[k] for k in VARIANTS]), np.concatenate([ham[k] for k in VARIANTS])
    kinds_flat = np.concatenate([[k] * len(cos[k]) for k in VARIANTS])
    # The rule classifiers/grouping.py uses: same photo when the cosine OR the hash says so.
    result["cosine_or_phash"] = {
        f"cos>={t} or ham<={h}": {
            "reposts_missed": round(float(np.mean((all_cos < t) & (all_ham > h))), 4),
            "missed_by_variant": {k: round(float(np.mean(((all_cos < t) & (all_ham > h))[kinds_flat == k])), 4) for k in VARIANTS},
            "others_merged": round(float(np.mean((np.array(nearest_cos) >= t) | (np.array(nearest_ham) <= h))), 4)}
        for t in (0.85, 0.88, 0.9, 0.92) for h in (6, 8, 10)}
    result["cosine"]["at_threshold"] = {
        str(t): {"reposts_missed": round(float(np.mean(all_cos < t)), 4),
                 "others_merged": round(float(np.mean(np.array(nearest_cos) >= t)), 4)}
        for t in (0.8, 0.85, 0.88, 0.9, 0.92, 0.95)}
    result["phash_hamming"]["at_threshold"] = {
        str(t): {"reposts_missed": round(float(np.mean(all_ham > t)), 4),
                 "others_merged": round(float(np.mean(np.array(nearest_ham) <= t)), 4)}
        for t in (4, 8, 10, 12, 16)}
    # Per task: how close the most similar other photo comes, and what the default rule merges.
    from stylesift.classifiers.grouping import DEFAULT_THRESHOLD, MAX_HAMMING

    tasks_a, nc, nh = np.array(tasks), np.array(nearest_cos), np.array(nearest_ham)
    result["per_task"] = {
        t: {"nearest_other_cosine": _stats(nc[tasks_a == t]), "nearest_other_hamming": _stats(nh[tasks_a == t]),
            "others_merged_by_default_rule": round(float(np.mean((nc[tasks_a == t] >= DEFAULT_THRESHOLD)
                                                                 | (nh[tasks_a == t] <= MAX_HAMMING))), 4),
            "reposts_missed_by_default_rule": round(float(np.mean(
                (all_cos[np.tile(tasks_a, len(VARIANTS)) == t] < DEFAULT_THRESHOLD)
                & (all_ham[np.tile(tasks_a, len(VARIANTS)) == t] > MAX_HAMMING))), 4)}
        for t in dict.fromkeys(tasks)}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
