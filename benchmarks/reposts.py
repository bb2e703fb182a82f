"""Benchmark: does ``score`` mark re-uploads of judged images as seen before, and leave distinct photos alone?

    .venv/bin/python benchmarks/reposts.py --data ../shared/data --work /tmp/reposts [--per-class 30] [--tasks T...] [--json]

Per shared task: every image of the task is extracted into ``WORK/stores/<task>.h5`` (once: the
store caches features), ``--per-class`` images of each class get a verdict (recorded through the
library, as the review page does), and each judged image is re-uploaded under :data:`KINDS`, with
deterministic random parameters: re-encoded (JPEG quality 30–90), resized (0.5–1.0×), cropped
(70–100 % of the area, each side 70–100 %, at a random position) and combinations. Kinds without
re-encoding are saved losslessly (PNG) so that each transform is measured alone.

*Found* is the share of re-uploads whose ``seen_before`` names the judged image they copy; *false
marks* the share of the task's other images (neither judged nor copies of a judged one: the distinct
photos) that get any ``seen_before``. Both come from the real path, :meth:`Predictor.score` with
``history=True`` (what ``score --json`` prints), under each rule of ``--rules``:

- ``pooled``: today's rule before #21's repost work, pooled cosine ≥ 0.90 only (no pixels looked at);
- ``aligned``: the default, candidates by pooled cosine, confirmed by pixel alignment
  (:mod:`stylesift.featurizer.search.reposts`).

Timing: ``score`` of the same (already stored) files with ``history=False`` and with each rule, in
the same process, one after the other, and the one-off cost of a judged row's thumbnail.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
from PIL import Image

KINDS = ("reencode", "resize", "crop", "resize+reencode", "crop+reencode", "crop+resize+reencode")


def repost(path: Path, kind: str, rng: np.random.Generator) -> tuple[bytes, str, dict]:
    """One re-upload of the image at ``path``: its bytes, its file suffix and the parameters drawn."""
    with Image.open(path) as im:
        im = im.convert("RGB")
    params: dict = {}
    if "crop" in kind:
        area = float(rng.uniform(0.70, 1.0))
        sw = float(rng.uniform(area, 1.0))  # each side keeps ≥ area of itself, so both stay ≥ 70 %
        sh = area / sw
        w, h = im.size
        cw, ch = max(1, round(w * sw)), max(1, round(h * sh))
        x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        im = im.crop((x0, y0, x0 + cw, y0 + ch))
        params["crop"] = {"area": round(cw * ch / (w * h), 3), "box": [x0, y0, cw, ch]}
    if "resize" in kind:
        f = float(rng.uniform(0.5, 1.0))
        im = im.resize((max(1, round(im.width * f)), max(1, round(im.height * f))), Image.Resampling.BICUBIC)
        params["resize"] = round(f, 3)
    buf = io.BytesIO()
    if "reencode" in kind:
        q = int(rng.integers(30, 91))
        im.save(buf, "JPEG", quality=q)
        params["quality"] = q
        return buf.getvalue(), ".jpg", params
    im.save(buf, "PNG")
    return buf.getvalue(), ".png", params


def sha_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def prepare(task_dir: Path, work: Path, per_class: int, seed: int, featurizer) -> dict:
    """The task's store (extracted once), its judged images (verdicts recorded once) and their re-uploads."""
    from stylesift.featurizer.store import FeatureStore, Verdict

    store = work / "stores" / f"{task_dir.name}.h5"
    store.parent.mkdir(parents=True, exist_ok=True)
    featurizer.extract([task_dir], store)
    rng = np.random.default_rng(seed)
    judged: list[tuple[Path, str]] = []
    for cls in ("positive", "negative"):
        files = sorted((task_dir / cls).glob("*"))
        judged += [(files[i], cls) for i in sorted(rng.choice(len(files), min(per_class, len(files)), replace=False))]
    shas = {sha_of(p): (p, cls) for p, cls in judged}
    st = FeatureStore(store)
    have = {v.sha256 for v in st.verdicts()}
    if have and have != set(shas):
        raise SystemExit(f"{store}: holds verdicts of another sample; delete {work} or pass the same --per-class/--seed")
    if not have:
        with FeatureStore(store, "a") as w:  # as the review page records them: one verdict per judged image
            w.add_verdicts([Verdict(s, cls, "bench", 1_760_000_000.0 + i) for i, (s, (_, cls)) in enumerate(shas.items())])
    reposts = []
    folder = work / "reposts" / task_dir.name
    for i, (sha, (p, _)) in enumerate(shas.items()):
        for kind in KINDS:
            # One generator per (image, kind): the files do not depend on --tasks or on the order of kinds.
            r = np.random.default_rng([seed, int(sha[:8], 16), KINDS.index(kind)])
            data, suffix, params = repost(p, kind, r)
            out = folder / kind.replace("+", "_") / f"{sha[:16]}{suffix}"
            if not out.exists():
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_bytes(data)
            reposts.append({"path": str(out), "kind": kind, "of": sha, "params": params})
    everything = sorted(p for cls in ("positive", "negative") for p in (task_dir / cls).glob("*"))
    distinct = [str(p) for p in everything if sha_of(p) not in shas]
    return {"store": store, "judged": shas, "reposts": reposts, "distinct": distinct}


def predictor_for(store: Path, featurizer):
    """A throw-away head over the task's stored features: scores do not matter here, only ``seen_before``."""
    from stylesift.classifiers.bundle import Bundle
    from stylesift.classifiers.head import OutputLayerHead
    from stylesift.classifiers.predict import Predictor
    from stylesift.featurizer.store import FeatureStore

    st = FeatureStore(store)
    X = st.features()
    y = np.array(["positive" in st.paths(i)[0] for i in range(len(st))])
    model = OutputLayerHead().fit(X, y)
    return Predictor(Bundle(model.pipeline_, 0.0, "head", "positive", "negative", st.fingerprint), store,
                     featurizer=featurizer)


def evaluate(prep: dict, predictor, rules: list[str]) -> dict:
    """Found % per kind and false-mark % per rule, and the time ``score`` takes with and without history."""
    from stylesift.featurizer.search import history

    paths = [r["path"] for r in prep["reposts"]] + prep["distinct"]
    predictor.score(paths, history=False)  # featurizes the re-uploads once; every timed run below reads the store
    t0 = time.perf_counter()
    predictor.score(paths, history=False)
    base = time.perf_counter() - t0
    out = {"judged": len(prep["judged"]), "reposts": len(prep["reposts"]), "distinct": len(prep["distinct"]),
           "score_s_no_history": round(base, 3), "rules": {}}
    from stylesift.classifiers import predict

    real = predict.seen_before
    for rule in rules:
        history._THUMBS.clear()  # the first run pays the judged rows' thumbnails once
        # "pooled": the same call without the query images, i.e. the cosine rule alone
        predict.seen_before = real if rule == "aligned" else (lambda *a, thumb_of=None, **k: real(*a, **k))
        try:
            t0 = time.perf_counter()
            rows = predictor.score(paths, history=True).rows
            first = time.perf_counter() - t0
            t0 = time.perf_counter()
            rows = predictor.score(paths, history=True).rows
            warm = time.perf_counter() - t0
        finally:
            predict.seen_before = real
        by_path = {r["path"]: r.get("seen_before") for r in rows}
        found = {k: [] for k in KINDS}
        sims = {k: [] for k in KINDS}
        for r in prep["reposts"]:
            s = by_path.get(r["path"])
            found[r["kind"]].append(bool(s) and s["sha256"] == r["of"])
            if s:
                sims[r["kind"]].append(s["similarity"])
        false = [p for p in prep["distinct"] if by_path.get(p)]
        all_found = [x for v in found.values() for x in v]
        out["rules"][rule] = {
            "found": round(float(np.mean(all_found)), 4),
            "found_by_kind": {k: round(float(np.mean(v)), 4) for k, v in found.items()},
            "false_marks": round(len(false) / max(1, len(prep["distinct"])), 4),
            "false_examples": [{"path": p, "seen": by_path[p]} for p in false[:5]],
            "score_s_first": round(first, 3), "score_s_warm": round(warm, 3),
            "added_ms_per_image_warm": round(1000 * (warm - base) / len(paths), 2),
            "added_ms_per_image_first": round(1000 * (first - base) / len(paths), 2),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--work", type=Path, required=True, help="folder for the stores and the re-uploads (kept for reruns)")
    parser.add_argument("--per-class", type=int, default=30, help="judged images per task and class")
    parser.add_argument("--tasks", nargs="*", help="task folders (default: all)")
    parser.add_argument("--rules", nargs="+", default=["pooled", "aligned"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    from stylesift.featurizer.extract import Featurizer

    featurizer = Featurizer()
    tasks = sorted(p for p in args.data.iterdir() if p.is_dir() and (not args.tasks or p.name in args.tasks))
    result = {"date": time.strftime("%Y-%m-%d"), "machine": f"{platform.processor() or platform.machine()}, "
              f"{os.cpu_count()} CPUs", "per_class": args.per_class, "tasks": {}}
    for task in tasks:
        prep = prepare(task, args.work, args.per_class, args.seed, featurizer)
        result["tasks"][task.name] = evaluate(prep, predictor_for(prep["store"], featurizer), args.rules)
        result["tasks"][task.name]["load_average"] = [round(x, 2) for x in os.getloadavg()]
        if not args.json:
            print(task.name, json.dumps(result["tasks"][task.name]), flush=True)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for rule in args.rules:
            print(f"\n{rule}: task | found | " + " | ".join(KINDS) + " | false marks")
            for name, r in result["tasks"].items():
                x = r["rules"][rule]
                print(f"{name} | {x['found']:.3f} | " + " | ".join(f"{x['found_by_kind'][k]:.3f}" for k in KINDS)
                      + f" | {x['false_marks']:.4f}")


if __name__ == "__main__":
    main()
