"""Extract many candidate style statistics per image ONCE, from one forward pass, into .npy caches.

Usage: python benchmarks/style_cache.py OUT_DIR TASK_DIR [TASK_DIR ...]

For each task folder (with positive/ and negative/), writes OUT_DIR/<task>/<name>.npy for every
candidate block plus labels.npy (1 = positive) and paths.txt. Developer research tool (issue #14).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

TAPS = ("conv1_relu", "conv2_block3_out", "conv3_block4_out", "conv4_block6_out", "conv5_block3_out")
SHORT = {"conv1_relu": "s0", "conv2_block3_out": "s1", "conv3_block4_out": "s2", "conv4_block6_out": "s3",
         "conv5_block3_out": "s4"}


def build_model(weights):
    import keras
    from keras import ops

    resnet = keras.applications.ResNet50(weights=None, include_top=False, pooling="avg", input_shape=(224, 224, 3))
    resnet.load_weights(str(weights.notop))
    outputs = {"pooled": resnet.output}
    for name in TAPS:
        t = resnet.get_layer(name).output
        s = SHORT[name]
        m = ops.mean(t, axis=(1, 2), keepdims=True)
        c = t - m
        var = ops.mean(ops.square(c), axis=(1, 2))
        sd = ops.sqrt(var + 1e-12)
        outputs[f"{s}_mean"] = ops.squeeze(m, axis=(1, 2))
        outputs[f"{s}_std"] = sd
        # standardized third moment (skewness) and fraction of active (non-zero) positions
        outputs[f"{s}_skew"] = ops.mean(c * c * c, axis=(1, 2)) / (sd * sd * sd + 1e-6)
        outputs[f"{s}_active"] = ops.mean(ops.cast(t > 0, "float32"), axis=(1, 2))
        outputs[f"{s}_max"] = ops.max(t, axis=(1, 2))
        if s in ("s0", "s1"):
            hw = t.shape[1] * t.shape[2]
            flat = ops.reshape(c, (-1, hw, t.shape[3]))
            outputs[f"{s}_cov"] = ops.einsum("nhc,nhd->ncd", flat, flat) / hw
    return keras.Model(resnet.input, outputs)


def global_cues(img: np.ndarray) -> np.ndarray:
    """Cheap whole-image cues on the 224x224 uint8 input: colour statistics, sharpness, noise, spectrum."""
    from scipy import ndimage

    x = img.astype(np.float32) / 255.0
    feats = []
    for ch in range(3):
        v = x[..., ch]
        feats += [v.mean(), v.std(), *np.percentile(v, [1, 5, 25, 50, 75, 95, 99])]
    mx, mn = x.max(axis=2), x.min(axis=2)
    sat = (mx - mn) / (mx + 1e-6)
    feats += [sat.mean(), sat.std(), *np.percentile(sat, [5, 50, 95])]
    gray = x @ np.array([0.299, 0.587, 0.114], np.float32)
    # colour covariance between channels
    cc = np.cov(x.reshape(-1, 3).T)
    feats += [cc[0, 1], cc[0, 2], cc[1, 2]]
    lap = ndimage.laplace(gray)
    feats += [np.log(lap.var() + 1e-8), np.log(np.abs(lap).mean() + 1e-8)]
    gx, gy = ndimage.sobel(gray, 0), ndimage.sobel(gray, 1)
    g = np.hypot(gx, gy)
    feats += [np.log(g.mean() + 1e-8), *np.log(np.percentile(g, [50, 90, 99]) + 1e-8)]
    resid = gray - ndimage.median_filter(gray, 3)
    feats += [np.log(np.median(np.abs(resid)) + 1e-8), np.log(resid.std() + 1e-8)]
    f = np.abs(np.fft.fftshift(np.fft.fft2(gray - gray.mean()))) ** 2
    yy, xx = np.mgrid[-112:112, -112:112]
    r = np.hypot(yy, xx)
    total = f.sum() + 1e-8
    for lo, hi in [(0, 4), (4, 8), (8, 16), (16, 32), (32, 64), (64, 160)]:
        feats.append(np.log(f[(r >= lo) & (r < hi)].sum() / total + 1e-10))
    return np.asarray(feats, np.float32)


def main(out_dir: str, tasks: list[str]) -> None:
    from stylesift.featurizer.backbones import preprocess
    from stylesift.featurizer.images import load_image
    from stylesift.featurizer.weights import resolve

    model = build_model(resolve())
    for task in tasks:
        task = Path(task)
        dest = Path(out_dir) / task.name
        if (dest / "labels.npy").exists():
            print(task.name, "cached", flush=True)
            continue
        paths, labels = [], []
        for lab, sub in ((1, "positive"), (0, "negative")):
            files = sorted(p for p in (task / sub).iterdir() if p.is_file())
            paths += files
            labels += [lab] * len(files)
        blocks: dict[str, list] = {}
        t0 = time.time()
        batch = 16
        for start in range(0, len(paths), batch):
            imgs = np.stack([load_image(p, 224) for p in paths[start:start + batch]])
            out = model.predict_on_batch(preprocess(imgs))
            for k, v in out.items():
                v = np.asarray(v, np.float32)
                if k.endswith("_cov"):
                    iu = np.triu_indices(v.shape[1])
                    v = v[:, iu[0], iu[1]].astype(np.float16)
                blocks.setdefault(k, []).append(v)
            blocks.setdefault("cues", []).append(np.stack([global_cues(im) for im in imgs]))
            done = start + len(imgs)
            if done % 160 == 0:
                print(f"{task.name} {done}/{len(paths)} {done / (time.time() - t0):.1f} img/s", flush=True)
        tmp = dest.with_name(dest.name + ".tmp")
        tmp.mkdir(parents=True, exist_ok=True)
        for k, v in blocks.items():
            np.save(tmp / f"{k}.npy", np.concatenate(v))
        (tmp / "paths.txt").write_text("\n".join(map(str, paths)))
        np.save(tmp / "labels.npy", np.asarray(labels))
        tmp.rename(dest)
        print(task.name, len(paths), f"{time.time() - t0:.0f}s", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
