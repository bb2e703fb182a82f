"""Where `detail`'s decode time goes on 12-MP JPEGs, and what a lossless multi-crop decoder would save.

    .venv/bin/python benchmarks/tile_decoders.py DIR [--count 8] [--turbojpeg-lib PATH]

Makes ``--count`` 12-megapixel copies of the photos in DIR (as ``stylesift bench --phone-size``),
then times, one thread, CPU-ms an image: the draft decode of the 224-px input; the input and the
nine ``detail`` tiles together (today's path: libvips fetches the tiles); the tiles alone (the
difference of the two, so it includes ranking the candidates on the draft, under 1 ms). With
``--turbojpeg-lib`` (a TurboJPEG 3 library, e.g. the one inside the ``turbojpeg`` wheel; PyTurboJPEG
must be importable) it also times one lossless multi-crop of the nine tiles (``tj3Transform``: the
file's coefficients are entropy-decoded once, each crop re-encoded and decoded) and checks that
its pixels equal Pillow's full decode, as the libvips tiles do. Not a test: numbers to read.
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from stylesift.featurizer import images, tiles
from stylesift.featurizer.bench import make_phone_jpegs, sample_files


def _chosen(data: bytes):
    width, height, orientation, coefficients = images.jpeg_header(data, "bench")
    n = tiles.grid_size(height, width)
    ys, xs = tiles.starts(height, n), tiles.starts(width, n)
    _, draft = images.load_image(io.BytesIO(data), tiles.DRAFT_SIZE, keep_draft=True)
    return [(ys[i // n], xs[i % n]) for i in tiles.chosen(height, width, draft)], (width, height)


def _turbo(lib: str):
    # PyTurboJPEG and the `turbojpeg` wheel both install a module named `turbojpeg`: load the former by path.
    import turbojpeg as found

    spec = importlib.util.spec_from_file_location("pyturbojpeg", found.__file__) if found.__file__.endswith(".py") else None
    if spec is None:
        raise SystemExit("PyTurboJPEG's turbojpeg.py is shadowed by another `turbojpeg` module; install it alone")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module, module.TurboJPEG(lib_path=lib)


def _turbo_tiles(tj, module, data: bytes, wanted, margin: int = 16) -> np.ndarray:
    # One iMCU of margin on each side: the chroma upsampling at a tile's edge then sees the same
    # neighbours as in a full decode, so the pixels are identical.
    regions = []
    for y, x in wanted:
        x0, y0 = max(0, (x - margin) // margin * margin), max(0, (y - margin) // margin * margin)
        regions.append((x0, y0, x + tiles.TILE + margin - x0, y + tiles.TILE + margin - y0))
    crops = tj.crop_multiple(data, regions, align="expand")
    out = [tj.decode(c, pixel_format=module.TJPF_RGB)[y - r[1]:y - r[1] + tiles.TILE, x - r[0]:x - r[0] + tiles.TILE]
           for (y, x), r, c in zip(wanted, regions, crops)]
    return np.stack(out)


def _cpu_ms(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.process_time()
        fn()
        best = min(best, time.process_time() - started)
    return best * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("photos", type=Path)
    parser.add_argument("--count", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--turbojpeg-lib", help="path of a TurboJPEG 3 shared library")
    args = parser.parse_args()
    turbo = _turbo(args.turbojpeg_lib) if args.turbojpeg_lib else None
    with tempfile.TemporaryDirectory() as tmp:
        files = make_phone_jpegs(sample_files([args.photos], None), Path(tmp), args.count)
        rows = []
        for path in files:
            data = path.read_bytes()
            wanted, (_, height) = _chosen(data)
            row = {"file": path.name, "depth": max(y for y, _ in wanted) / height,
                   "draft": _cpu_ms(lambda: images.load_image(io.BytesIO(data), 224), args.repeat),
                   "input+tiles": _cpu_ms(lambda: tiles.load_image_and_tiles(data, path.name, 224), args.repeat)}
            row["tiles (libvips)"] = row["input+tiles"] - row["draft"]
            if turbo:
                module, tj = turbo
                full = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
                reference = np.stack([full[y:y + tiles.TILE, x:x + tiles.TILE] for y, x in wanted])
                row["tiles (lossless crop)"] = _cpu_ms(lambda: _turbo_tiles(tj, module, data, wanted), args.repeat)
                row["crop pixels equal"] = bool(np.array_equal(_turbo_tiles(tj, module, data, wanted), reference))
            rows.append(row)
    keys = [k for k, v in rows[0].items() if isinstance(v, float) and k != "depth"]
    for row in rows:
        flags = "" if "crop pixels equal" not in row else f"  crop pixels equal {row['crop pixels equal']}"
        print(f"{row['file']}  depth {row['depth']:.0%}  " + "  ".join(f"{k} {row[k]:.1f}" for k in keys) + flags)
    print("mean CPU-ms:", ", ".join(f"{k} {np.mean([r[k] for r in rows]):.1f}" for k in keys))


if __name__ == "__main__":
    main()
