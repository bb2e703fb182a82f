"""Pillow's draft-mode JPEG decoding (libjpeg-turbo DCT scaling) against simplejpeg, on the same bytes.

    .venv/bin/python benchmarks/decode_jpeg.py DIR [DIR ...] [--phone N]

Reports decodes per second (one thread) of each way to a 224×224 network input, and whether the
two give the same pixels (the feature space names Pillow's decode, so another decoder may only
replace it if its pixels are identical). ``--phone N`` also makes N 12-megapixel copies first.
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from stylesift.featurizer.bench import make_phone_jpegs, sample_files
from stylesift.featurizer.images import RESAMPLE, load_image


def simplejpeg_input(data: bytes, size: int = 224) -> np.ndarray:
    import simplejpeg

    # The smallest DCT scale that still covers `size` on both sides, as Pillow's draft picks it.
    pixels = simplejpeg.decode_jpeg(data, colorspace="RGB", fastdct=False, fastupsample=False, min_height=size, min_width=size)
    return np.asarray(Image.fromarray(pixels).resize((size, size), RESAMPLE), np.uint8)


def run(files: list[Path]) -> dict:
    blobs = [p.read_bytes() for p in files]
    out = {"files": len(files), "megapixels_mean": round(float(np.mean([Image.open(io.BytesIO(b)).size[0] * Image.open(io.BytesIO(b)).size[1] for b in blobs])) / 1e6, 2)}
    for name, fn in (("pillow_draft", lambda b: load_image(io.BytesIO(b))), ("simplejpeg", simplejpeg_input)):
        fn(blobs[0])
        start = time.perf_counter()
        images = [fn(b) for b in blobs]
        out[name + "_per_s"] = round(len(blobs) / (time.perf_counter() - start), 1)
        out[name] = images
    diff = [np.abs(a.astype(int) - b).max() for a, b in zip(out.pop("pillow_draft"), out.pop("simplejpeg"))]
    out["identical_pixels"] = int(sum(d == 0 for d in diff))
    out["max_abs_pixel_difference"] = int(max(diff))
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("paths", nargs="+")
    parser.add_argument("--limit", type=int, default=200)
    parser.add_argument("--phone", type=int, default=0)
    args = parser.parse_args()
    files = [f for f in sample_files(args.paths, args.limit) if f.suffix.lower() in (".jpg", ".jpeg")]
    print("shared JPEGs:", run(files))
    if args.phone:
        with tempfile.TemporaryDirectory() as tmp:
            print("12-MP copies:", run(make_phone_jpegs(files, Path(tmp), args.phone)))


if __name__ == "__main__":
    main()
