"""The ``detail`` set at full size: 12-megapixel photos, each degradation against its clean version.

Deterministic test images: shared photos upscaled to 4032 × 3024 (Lanczos, then a light unsharp
mask so that the clean frame has crisp edges at its own scale), saved as JPEG quality 92; then, at
full size, three degradations of the same frames:

- ``noise``: high-ISO-like sensor noise (Gaussian luminance noise plus coarser chroma noise,
  strength varying per photo), quality 92;
- ``defocus``: a slight Gaussian blur (sigma 2.5 px on a 4032-px frame), quality 92;
- ``jpeg``: heavy compression (quality 25).

Each degradation is its own task, ``clean`` (positive) against ``degraded`` (negative), extracted
through the command line (``--precision int8 --features pooled,style,detail``) and compared with
``stylesift compare --folds 5``. Not a test: run it by hand, e.g.
``.venv/bin/python benchmarks/detail_fullsize.py --photos ../shared/data/sensor-noise/positive --count 40``;
it prints one JSON object (accuracy and ROC AUC per degradation, feature set and method).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

SIZE = (4032, 3024)


def clean_frame(path: Path) -> Image.Image:
    with Image.open(path) as img:
        img = img.convert("RGB")
    if img.height > img.width:
        img = img.transpose(Image.Transpose.ROTATE_90)
    return img.resize(SIZE, Image.Resampling.LANCZOS).filter(ImageFilter.UnsharpMask(radius=4, percent=120, threshold=2))


def degrade(img: Image.Image, kind: str, seed: int) -> tuple[Image.Image, int]:
    """The degraded frame and its JPEG quality."""
    if kind == "defocus":
        return img.filter(ImageFilter.GaussianBlur(2.5)), 92
    if kind == "jpeg":
        return img, 25
    rng = np.random.default_rng(seed)
    strength = rng.uniform(6, 14)
    a = np.asarray(img, np.float32)
    a = a + rng.normal(0, strength, a.shape[:2])[..., None]  # luminance noise
    chroma = rng.normal(0, strength / 2, (a.shape[0] // 2, a.shape[1] // 2, 3))
    a = a + np.repeat(np.repeat(chroma, 2, axis=0), 2, axis=1)
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)), 92


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=Path, required=True)
    parser.add_argument("--count", type=int, default=40)
    parser.add_argument("--out", type=Path, default=Path("artifacts/detail-fullsize"))
    parser.add_argument("--precision", default="int8")
    parser.add_argument("--kinds", default="noise,defocus,jpeg")
    args = parser.parse_args()
    photos = sorted(p for p in args.photos.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[: args.count]
    stylesift = str(Path(sys.executable).with_name("stylesift"))
    results = {}
    for kind in args.kinds.split(","):
        root = args.out / kind
        for sub in ("clean", "degraded"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        for i, photo in enumerate(photos):
            if (root / "degraded" / f"{i:03d}.jpg").exists():
                continue
            frame = clean_frame(photo)
            frame.save(root / "clean" / f"{i:03d}.jpg", quality=92)
            bad, quality = degrade(frame, kind, i)
            bad.save(root / "degraded" / f"{i:03d}.jpg", quality=quality)
        store = root / f"features-{args.precision}.h5"
        for sub in ("clean", "degraded"):
            subprocess.run([stylesift, "extract", str(root / sub), "--store", str(store), "--label", sub,
                            "--precision", args.precision, "--features", "pooled,style,detail", "--json"],
                           check=True, stdout=subprocess.DEVNULL)
        out = subprocess.run([stylesift, "compare", "--store", str(store), "--positive", "clean", "--negative",
                              "degraded", "--features", "pooled,style,detail", "--folds", "5", "--json"],
                             check=True, capture_output=True, text=True).stdout
        compared = json.loads(out)
        results[kind] = {name: {m: [round(r["accuracy"], 3), round(r["roc_auc"], 4)] for m, r in v["methods"].items()}
                         for name, v in compared["feature_sets"].items()}
        print(kind, json.dumps(results[kind]), file=sys.stderr, flush=True)
    print(json.dumps({"count": len(photos), "size": SIZE, "precision": args.precision, "results": results}, indent=1))


if __name__ == "__main__":
    main()
