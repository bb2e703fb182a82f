"""Where extraction time goes: each stage timed alone, the full path, and a naive loop, in one run.

Stages, all on the same files (see :func:`run_bench`):

- ``decode``: read, hash, decode (JPEG draft mode) and resize in the extraction's worker threads;
- ``backbone[P R]``: the network of precision P on runtime R alone, on the tensors the decode stage produced;
- ``extract[P R]``: :meth:`featurizer.extract.Featurizer.extract` into a fresh store, end to end;
- ``naive``: the loop of the classic Keras transfer-learning article: ``keras.utils.load_img``
  (full decode), ``img_to_array``, ``preprocess_input``, ``model.predict``, batch after batch, one thread.

The machine is shared and noisy, so every figure is a ratio against a baseline measured in the same
run, printed with the absolute rates and a description of the machine (:func:`machine_info`).
"""

from __future__ import annotations

import os
import platform
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from stylesift.errors import StylesiftError
from stylesift.featurizer.extract import Featurizer, list_images, prepare_file

PHONE_SIZE = (4032, 3024)  # 12.2 megapixels, the size of a typical phone camera's photo
CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_bf16", "amx_int8")


@dataclass
class Stage:
    """One timed stage: ``images`` processed in ``seconds`` (wall clock)."""

    name: str
    images: int
    seconds: float
    rss_mib: tuple[float, float] | None = None  # resident memory before and after, MiB

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict:
        out = {"name": self.name, "images": self.images, "seconds": round(self.seconds, 3),
               "images_per_second": round(self.images_per_second, 3)}
        if self.rss_mib:
            out["rss_mib"] = [round(v, 1) for v in self.rss_mib]
        return out


def machine_info() -> dict:
    """CPU model, core count, the SIMD flags that matter for inference, load, and runtime threading."""
    info = {"cpu": platform.processor() or platform.machine(), "cpus": os.cpu_count(), "flags": [],
            "load_average": [round(x, 2) for x in os.getloadavg()]}
    try:
        with open("/proc/cpuinfo") as fh:
            text = fh.read()
        for line in text.splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                present = set(line.split(":", 1)[1].split())
                info["flags"] = [f for f in CPU_FLAGS if f in present]
                break
    except OSError:
        pass
    info["tf_enable_onednn_opts"] = os.environ.get("TF_ENABLE_ONEDNN_OPTS", "(unset: TensorFlow's default)")
    try:
        import tensorflow as tf

        info["tensorflow"] = tf.__version__
        # 0 means "TensorFlow decides", which is one thread pool of os.cpu_count() threads.
        info["tf_intra_op_threads"] = tf.config.threading.get_intra_op_parallelism_threads()
        info["tf_inter_op_threads"] = tf.config.threading.get_inter_op_parallelism_threads()
    except ImportError:
        pass
    from importlib.metadata import PackageNotFoundError, version

    for package in ("onnxruntime", "openvino", "nncf"):
        try:
            info[package] = version(package)
        except PackageNotFoundError:
            pass
    info["onednn_max_cpu_isa"] = os.environ.get("ONEDNN_MAX_CPU_ISA", "(unset: all the CPU has)")
    return info


def rss_mib() -> float:
    """Resident memory of this process in MiB (peak resident memory where /proc is missing)."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far, in MiB."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def sample_files(paths: Iterable[str | os.PathLike], limit: int | None) -> list[Path]:
    """Image files under ``paths``; at most ``limit``, spread evenly over the sorted list."""
    files = list_images(paths)
    if limit and len(files) > limit:
        files = [files[i] for i in np.linspace(0, len(files) - 1, limit).round().astype(int)]
    return files


def make_phone_jpegs(sources: Sequence[Path], out_dir: Path, count: int, *, size: tuple[int, int] = PHONE_SIZE,
                     quality: int = 90, progress: Callable[[int, int], None] | None = None) -> list[Path]:
    """Write ``count`` distinct phone-size JPEGs made from ``sources`` (cycled) into ``out_dir``.

    Each is a source picture resized to ``size`` (landscape; portrait sources are turned), with a
    crop a few pixels different for each round over the sources and a numbered JPEG comment, so that
    no two files share content (identical bytes would be featurized once). JPEG quality ``quality``,
    4:2:0 chroma, like a phone's.
    """
    from PIL import Image

    from stylesift.featurizer.images import load_image  # noqa: F401  (same Pillow setup as extraction)

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for i in range(count):
        src = sources[i % len(sources)]
        with Image.open(src) as img:
            img = img.convert("RGB")
            if img.height > img.width:
                img = img.transpose(Image.Transpose.ROTATE_90)
            shift = i // len(sources)
            img = img.crop((shift, shift, img.width, img.height)).resize(size, Image.Resampling.BICUBIC)
        target = out_dir / f"phone-{i:05d}.jpg"
        img.save(target, "JPEG", quality=quality, subsampling="4:2:0", comment=f"stylesift bench copy {i}")
        written.append(target)
        if progress:
            progress(i + 1, count)
    return written


def time_decode(files: Sequence[Path], *, workers: int, input_size: int = 224) -> tuple[Stage, np.ndarray]:
    """Read, hash, decode and resize ``files`` in ``workers`` threads, as extraction does.

    Returns the stage and the decoded batch, uint8 ``(n_ok, size, size, 3)`` (files that failed are left out).
    """
    start = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        items = list(pool.map(lambda p: prepare_file(Path(p), input_size), files))
    seconds = time.perf_counter() - start
    images = [it.image for it in items if it.image is not None]
    stack = np.stack(images) if images else np.zeros((0, input_size, input_size, 3), np.uint8)
    return Stage("decode", len(images), seconds), stack


def time_backbone(backbone, images: np.ndarray, *, batch_size: int, name: str = "backbone") -> tuple[Stage, np.ndarray]:
    """Run ``backbone`` over ready uint8 tensors, ``batch_size`` at a time (after one untimed warm-up batch).

    Returns the stage and the features, float32 ``(n, 2048)``.
    """
    backbone(images[:batch_size])
    start = time.perf_counter()
    feats = [backbone(images[i:i + batch_size]) for i in range(0, len(images), batch_size)]
    seconds = time.perf_counter() - start
    return Stage(name, len(images), seconds), np.concatenate(feats) if feats else np.zeros((0, 2048), np.float32)


def time_extract(featurizer: Featurizer, files: Sequence[Path], store: Path, *, name: str = "extract") -> Stage:
    """``featurizer.extract(files, store)`` into a fresh store, the network already built and warm."""
    before = rss_mib()
    report = featurizer.extract(files, store)
    if report.failed:
        raise StylesiftError(f"bench: {len(report.failed)} files failed to extract, e.g. {report.failed[0]['error']}")
    return Stage(name, report.new, report.seconds, (before, rss_mib()))


def time_naive(model, files: Sequence[Path], *, batch_size: int, input_size: int = 224) -> Stage:
    """The article's loop: full decode with ``keras.utils.load_img``, ``predict``, one thread, batch after batch."""
    import keras
    from keras.applications.resnet50 import preprocess_input

    def load(path):
        return keras.utils.img_to_array(keras.utils.load_img(path, target_size=(input_size, input_size)))

    model.predict(preprocess_input(np.stack([load(files[0])])), verbose=0)  # warm-up, as for the others
    start = time.perf_counter()
    for i in range(0, len(files), batch_size):
        batch = np.array([load(p) for p in files[i:i + batch_size]])
        model.predict(preprocess_input(batch), verbose=0)
    return Stage("naive", len(files), time.perf_counter() - start)


def agreement(reference: np.ndarray, other: np.ndarray) -> dict:
    """Per-image cosine similarity between two feature matrices of the same images, shape ``(n, d)`` each."""
    num = (reference * other).sum(axis=1)
    den = np.linalg.norm(reference, axis=1) * np.linalg.norm(other, axis=1)
    cos = num / np.maximum(den, 1e-12)
    return {"images": int(len(cos)), "cosine_min": float(cos.min()), "cosine_mean": float(cos.mean()),
            "below_0_99": int((cos < 0.99).sum())} if len(cos) else {"images": 0}


def bench_configs(precisions: Sequence[str], runtimes_: Sequence[str]) -> list[tuple[str, str]]:
    """The ``(precision, runtime)`` pairs to time: every combination where the runtime may compute the precision's space."""
    from stylesift.featurizer.backbones import runtimes

    out = []
    for p in precisions:
        for r in runtimes_:
            space = runtimes.space_of(p, r)
            if (r == "auto" or r in runtimes.valid_runtimes(space)) and (p, r) not in out:
                out.append((p, r))
    return out


def run_bench(files: Sequence[Path], *, precisions: Sequence[str] = ("float32",), runtimes: Sequence[str] = ("auto",),
              batch_size: int = 32, workers: int | None = None, naive: bool = True, weights=None, repeat: int = 1,
              feature_sets: Sequence[str] = ("pooled",), log: Callable[[str], None] = lambda message: None) -> dict:
    """Time every stage on ``files`` and return ``{"machine", "stages", "ratios", "agreement"}``.

    Each valid ``(precision, runtime)`` pair (see :func:`bench_configs`; ``auto`` resolved to the
    runtime it picks here, duplicates dropped) is one backbone, named ``"precision runtime"``; the
    first is the baseline of the ratios (normally ``float32`` on Keras).
    With ``repeat`` > 1 all stages run that many rounds, interleaved, and each keeps its fastest
    round: on a shared machine other work only ever slows a stage down, so the best round is the
    one least disturbed. Stores are written to a temporary folder and deleted afterwards.
    """
    files = [Path(f) for f in files]
    if not files:
        raise ValueError("bench: no image files to time")
    machine = machine_info()
    featurizers: dict[str, Featurizer] = {}
    for p, r in bench_configs(precisions, runtimes):
        fz = Featurizer(weights, batch_size=batch_size, workers=workers, precision=p, runtime=r)
        log(f"building the {p} backbone ({r})")
        fz.backbone(np.zeros((batch_size, fz.input_size, fz.input_size, 3), np.uint8))  # build and warm up
        name = f"{p} {fz.runtime_used}"
        featurizers.setdefault(name, fz)
    variants: dict[str, tuple[str, Featurizer]] = {}  # extract-only runs of the other feature sets
    for spec in list(feature_sets)[1:]:
        sets = tuple(dict.fromkeys(["pooled", *(x.strip() for x in spec.split(",") if x.strip())]))
        for name, fz in featurizers.items():
            other = Featurizer(weights, batch_size=batch_size, workers=workers, precision=fz.precision,
                               runtime=fz.runtime_used, feature_sets=sets)
            log(f"building the {name} network for {','.join(sets)}")
            other.backbone  # noqa: B018 - built and cached before timing
            if other.wants_detail:
                other.detail_net  # noqa: B018
            variants[f"{name} {','.join(sets)}"] = (name, other)
    if not featurizers:
        raise ValueError(f"bench: no runtime of {', '.join(runtimes)} computes {', '.join(precisions)}")
    workers = next(iter(featurizers.values())).workers

    best: dict[str, Stage] = {}

    def keep(stage: Stage) -> None:
        if stage.name not in best or stage.images_per_second > best[stage.name].images_per_second:
            best[stage.name] = stage

    naive_model = None
    if naive:
        keras_fz = next((fz for fz in featurizers.values() if fz.runtime_used == "keras" and fz.precision == "float32"), None)
        if keras_fz is not None:
            naive_model = keras_fz.backbone.model
        else:
            from stylesift.featurizer.backbones import Backbone

            naive_model = Backbone(next(iter(featurizers.values())).weights).model
    features = {}
    for round_ in range(max(1, repeat)):
        log(f"round {round_ + 1}: decode: {len(files)} files, {workers} threads")
        stage, images = time_decode(files, workers=workers)
        keep(stage)
        for name, fz in featurizers.items():
            log(f"round {round_ + 1}: backbone[{name}] alone")
            stage, features[name] = time_backbone(fz.backbone, images, batch_size=batch_size, name=f"backbone[{name}]")
            keep(stage)
        with tempfile.TemporaryDirectory(prefix="stylesift-bench-") as tmp:
            for i, (name, fz) in enumerate(featurizers.items()):
                log(f"round {round_ + 1}: extract[{name}] into a fresh store")
                keep(time_extract(fz, files, Path(tmp) / f"{i}.h5", name=f"extract[{name}]"))
            for i, (name, (_, fz)) in enumerate(variants.items()):
                log(f"round {round_ + 1}: extract[{name}] into a fresh store")
                keep(time_extract(fz, files, Path(tmp) / f"v{i}.h5", name=f"extract[{name}]"))
        if naive_model is not None:
            log(f"round {round_ + 1}: naive loop")
            keep(time_naive(naive_model, files, batch_size=batch_size))
    stages = list(best.values())
    machine["load_average_end"] = [round(x, 2) for x in os.getloadavg()]

    rate = {s.name: s.images_per_second for s in stages}
    names = list(featurizers)
    base = names[0]
    ratios = {}
    for p in names:
        ratios[f"extract[{p}] / backbone[{p}]"] = rate[f"extract[{p}]"] / rate[f"backbone[{p}]"]
        if "naive" in rate:
            ratios[f"extract[{p}] / naive"] = rate[f"extract[{p}]"] / rate["naive"]
        if p != base:
            ratios[f"extract[{p}] / extract[{base}]"] = rate[f"extract[{p}]"] / rate[f"extract[{base}]"]
            ratios[f"backbone[{p}] / backbone[{base}]"] = rate[f"backbone[{p}]"] / rate[f"backbone[{base}]"]
    for name, (parent, _) in variants.items():
        ratios[f"extract[{name}] / extract[{parent}]"] = rate[f"extract[{name}]"] / rate[f"extract[{parent}]"]
    machine["peak_rss_mib"] = round(peak_rss_mib(), 1)
    agree = {f"{p} vs {base}": agreement(features[base], features[p]) for p in names if p != base}
    return {"machine": machine, "files": len(files), "batch_size": batch_size, "workers": workers, "repeat": repeat,
            "backbones": {name: {"precision": fz.precision, "runtime": fz.runtime_used} for name, fz in featurizers.items()},
            "stages": [s.to_dict() for s in stages], "ratios": {k: round(v, 3) for k, v in ratios.items()},
            "agreement": agree}


def soak(sources: Sequence[Path], count: int, *, precision: str = "int8", batch_size: int = 32,
         workers: int | None = None, weights=None, progress: Callable[[int, int], None] | None = None,
         runtime: str = "auto") -> dict:
    """Extract ``count`` distinct files made from ``sources`` into a fresh store, sampling resident memory.

    Copies are the source bytes plus a trailing counter (decoders ignore bytes after a JPEG's end
    marker), so each is new content that takes the whole path. Returns the memory samples
    ``[[done, rss_mib], ...]`` (one per batch) and the growth over the second half of the run.
    """
    jpegs = [Path(s) for s in sources if Path(s).suffix.lower() in (".jpg", ".jpeg")]
    if not jpegs:
        raise StylesiftError("soak: needs JPEG sources (their copies differ only after the end marker)")
    fz = Featurizer(weights, batch_size=batch_size, workers=workers, precision=precision, runtime=runtime)
    fz.backbone(np.zeros((batch_size, fz.input_size, fz.input_size, 3), np.uint8))
    samples: list[list[float]] = []

    def sample(done: int, total: int) -> None:
        if done % batch_size == 0 or done == total:
            samples.append([done, round(rss_mib(), 1)])
        if progress:
            progress(done, total)

    with tempfile.TemporaryDirectory(prefix="stylesift-soak-") as tmp:
        folder = Path(tmp) / "images"
        folder.mkdir()
        for i in range(count):
            src = jpegs[i % len(jpegs)]
            (folder / f"{i:06d}.jpg").write_bytes(src.read_bytes() + f"stylesift-soak-{i}".encode())
        start_rss = rss_mib()
        report = fz.extract([folder], Path(tmp) / "soak.h5", progress=sample)
    half = [rss for done, rss in samples if done >= count // 2]
    return {"images": report.new, "seconds": round(report.seconds, 1), "precision": precision,
            "rss_mib_start": round(start_rss, 1), "rss_mib_samples": samples,
            "rss_mib_growth_second_half": round(max(half) - half[0], 1) if half else None,
            "rss_mib_peak": max(r for _, r in samples) if samples else None, "machine": machine_info()}


def compare_stores(reference, other, *, labels: Sequence[str] = ("positive", "negative"), folds: int = 5) -> dict:
    """How far the features of ``other`` are from those of ``reference`` on the same images.

    Rows are matched by content (sha256). Returns the per-image cosine agreement, and for each store
    the accuracy and ROC AUC (in points, 0-100) of a standardised logistic regression under the same
    stratified ``folds``-fold cross-validation, with their differences (other − reference).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_validate
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from stylesift.featurizer.backbones import fingerprint_id
    from stylesift.featurizer.store import FeatureStore

    ref, oth = FeatureStore(reference), FeatureStore(other)
    x_ref, y_ref, sha_ref = ref.load(labels)
    x_oth, _, sha_oth = oth.load(labels)
    where = {s: i for i, s in enumerate(sha_oth)}
    common = [i for i, s in enumerate(sha_ref) if s in where]
    if len(common) < 2 * folds:
        raise StylesiftError(f"{reference} and {other} share only {len(common)} labelled images; extract the same folders into both")
    x_ref, y = x_ref[common], y_ref[common]
    x_oth = x_oth[[where[s] for s in sha_ref[common]]]
    splits = list(StratifiedKFold(folds, shuffle=True, random_state=0).split(x_ref, y))
    result = {"images": len(common), "reference": str(reference), "other": str(other),
              "fingerprints": [fingerprint_id(ref.fingerprint), fingerprint_id(oth.fingerprint)],
              "agreement": agreement(x_ref, x_oth)}
    for name, x in (("reference", x_ref), ("other", x_oth)):
        model = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=3000))
        scores = cross_validate(model, x, y, cv=splits, scoring=("accuracy", "roc_auc"))
        result[name + "_accuracy"] = round(100 * float(scores["test_accuracy"].mean()), 2)
        result[name + "_roc_auc"] = round(100 * float(scores["test_roc_auc"].mean()), 2)
    result["accuracy_difference"] = round(result["other_accuracy"] - result["reference_accuracy"], 2)
    result["roc_auc_difference"] = round(result["other_roc_auc"] - result["reference_roc_auc"], 2)
    return result
