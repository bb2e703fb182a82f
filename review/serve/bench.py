"""``stylesift bench serve``: the scoring service under load on loopback, against ``extract`` on the same images.

One run (see :func:`run_bench`):

1. ``images`` become ``size``-pixel JPEG copies (longest side; distinct contents) in a temporary folder;
2. **baseline**: :meth:`~stylesift.featurizer.extract.Featurizer.extract` of those copies into a fresh
   store with the precision asked for (``extract --precision int8``), the network built and warm,
   best of ``repeat`` rounds;
3. a ``head`` model of ``feature_set`` (e.g. ``detail``: the baseline store then holds it too) is trained
   on that store (the images' two parent folders as labels, else the two halves of the list) unless
   ``model`` is given;
4. ``stylesift serve`` starts in its own process on a free loopback port, **without a store** (each
   request runs the network: a store would answer repeated images from their stored features);
5. for each number of concurrent clients and images per request: closed-loop clients (threads,
   keep-alive connections, bodies made in advance) send requests until ``requests`` images were
   scored or ``max_seconds`` passed; throughput, p50/p99 latency, failed requests; the server's resident
   memory (``/proc/PID/statm``) is sampled all along.

Bounded in count (``requests`` images per configuration, at most :data:`MAX_REQUESTS`) and in time,
and loopback only: the server it measures is the one it started.
"""

from __future__ import annotations

import http.client
import itertools
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from stylesift.review.serve.errors import ServeError

MAX_REQUESTS = 100_000
BOUNDARY = "stylesift-bench-boundary"


def make_jpegs(files: Sequence[Path], folder: Path, size: int = 384, quality: int = 90) -> list[Path]:
    """JPEG copies of ``files`` whose longest side is ``size`` pixels (EXIF orientation applied)."""
    from PIL import Image, ImageOps

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i, f in enumerate(files):
        with Image.open(f) as img:
            img = ImageOps.exif_transpose(img).convert("RGB")
            scale = size / max(img.size)
            img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.Resampling.LANCZOS)
            target = folder / f"{i:05d}-{Path(f).stem}.jpg"
            img.save(target, "JPEG", quality=quality)
        out.append(target)
    return out


def multipart(paths: Sequence[Path]) -> bytes:
    """A ``multipart/form-data`` body of ``paths`` in the field ``files``."""
    parts = [f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="files"; filename="{p.name}"\r\n'
             f"Content-Type: image/jpeg\r\n\r\n".encode() + p.read_bytes() + b"\r\n" for p in paths]
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


def server_rss_mib(pid: int) -> float | None:
    """Resident memory of process ``pid`` in MiB (None where /proc is missing or it has ended)."""
    try:
        with open(f"/proc/{pid}/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return None


def percentile(values: Sequence[float], q: float) -> float | None:
    return float(np.percentile(np.asarray(values), q)) if len(values) else None


class _Server:
    """``stylesift serve`` in a subprocess on a free loopback port, with a token file."""

    def __init__(self, model: Path, folder: Path, args: Sequence[str], timeout: float = 300):
        self.token = "bench-" + os.urandom(18).hex()
        token_file = folder / "token"
        token_file.write_text(self.token + "\n")
        token_file.chmod(0o600)
        self.process = subprocess.Popen([sys.executable, "-m", "stylesift", "serve", str(model), "--host", "127.0.0.1",
                                         "--port", "0", "--token-file", str(token_file), *args],
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + timeout
        self.port = None
        while self.port is None:
            line = self.process.stdout.readline()
            if not line or time.monotonic() > deadline:
                self.process.kill()
                raise RuntimeError(f"stylesift serve did not start: {self.process.communicate()[1][-2000:]}")
            if line.startswith("serving: "):
                self.port = int(line.strip().rsplit(":", 1)[1])
        while not self._healthy():
            if time.monotonic() > deadline or self.process.poll() is not None:
                self.process.kill()
                raise RuntimeError(f"stylesift serve did not answer: {self.process.communicate()[1][-2000:]}")
            time.sleep(0.1)

    def _healthy(self) -> bool:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
            conn.request("GET", "/health")
            ok = conn.getresponse().status == 200
            conn.close()
            return ok
        except OSError:
            return False

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.communicate()
        return self.process.returncode


def load(port: int, token: str, bodies: Sequence[bytes], *, clients: int, requests: int, max_seconds: float) -> dict:
    """``clients`` closed-loop clients sending ``bodies`` (cycled) until ``requests`` were sent or time is up."""
    headers = {"Authorization": f"Bearer {token}", "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
    counter = itertools.count()
    deadline = time.monotonic() + max_seconds
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors = [0] * clients
    first_error: list[str] = []

    def client(k: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        while time.monotonic() < deadline:
            i = next(counter)
            if i >= requests:
                break
            body = bodies[i % len(bodies)]
            started = time.perf_counter()
            try:
                conn.request("POST", "/score", body=body, headers=headers)
                response = conn.getresponse()
                data = response.read()
                ok = response.status == 200 and all("score" in r for r in json.loads(data)["results"])
            except (OSError, http.client.HTTPException, ValueError, KeyError) as exc:
                ok, data = False, f"{type(exc).__name__}: {exc}".encode()
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            latencies[k].append(time.perf_counter() - started)
            if not ok:
                errors[k] += 1
                if not first_error:
                    first_error.append(data[:300].decode("utf-8", "replace"))
        conn.close()

    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(k,), name=f"bench-client-{k}") for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - started
    lat = [x for per in latencies for x in per]
    out = {"requests": len(lat), "errors": sum(errors), "seconds": round(seconds, 3),
           "requests_per_second": round(len(lat) / seconds, 2) if seconds > 0 else 0.0,
           "latency_ms": {"p50": _ms(percentile(lat, 50)), "p99": _ms(percentile(lat, 99)), "max": _ms(max(lat, default=None))}}
    if first_error:
        out["first_error"] = first_error[0]
    return out


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


def _train_model(store: Path, files: Sequence[Path], sources: Sequence[Path], out: Path,
                 feature_set: str = "pooled") -> Path:
    """A ``head`` model on ``store``: the sources' two parent folders as labels, else the two halves of the list."""
    import hashlib

    import stylesift
    from stylesift.featurizer.store import FeatureStore

    parents = sorted({Path(s).parent.name for s in sources})
    with FeatureStore(store, "a") as st:
        for i, (f, s) in enumerate(zip(files, sources)):
            positive = Path(s).parent.name == parents[-1] if len(parents) == 2 else i % 2 == 0
            st.update(hashlib.sha256(Path(f).read_bytes()).hexdigest(), label="a" if positive else "b")
    stylesift.train(store, "a", "b", "head", feature_set=feature_set).save(out)
    return out


def run_bench(images: Sequence[str | os.PathLike], *, limit: int = 256, size: int = 384, requests: int = 2000,
              clients: Sequence[int] = (1, 8, 32), per_request: Sequence[int] = (1, 16), max_seconds: float = 120.0,
              precision: str = "int8", runtime: str = "auto", model: Path | None = None, max_batch: int = 16,
              batch_wait_ms: float = 10.0, batch_size: int = 32, workers: int | None = None, repeat: int = 2,
              warmup: int = 64, log: Callable[[str], None] | None = None, feature_set: str = "pooled") -> dict:
    """Time the scoring service against ``extract`` on the same images; returns the report (see the module docstring).

    ``requests`` is the number of *images* each configuration scores (so 16 per request sends a
    sixteenth as many requests), at most ``max_seconds`` each.
    """
    from stylesift.classifiers.feature_sets import stored_parts
    from stylesift.featurizer.bench import machine_info, sample_files, time_extract
    from stylesift.featurizer.extract import Featurizer

    log = log or (lambda message: None)
    requests = min(int(requests), MAX_REQUESTS)
    sources = sample_files(images, limit)
    if len(sources) < 2:
        raise ServeError(f"bench serve needs at least two images, found {len(sources)} under {list(map(str, images))}; "
                         "give --images with a folder of photos")
    with tempfile.TemporaryDirectory(prefix="stylesift-bench-serve-") as tmp:
        tmp = Path(tmp)
        log(f"writing {len(sources)} {size}-pixel JPEG copies")
        files = make_jpegs(sources, tmp / "images", size)
        featurizer = Featurizer(precision=precision, runtime=runtime, batch_size=batch_size, workers=workers,
                                feature_sets=stored_parts([feature_set]))
        warm_tiles = None
        if featurizer.wants_detail:  # its network built (and quantized, the first time) before the clock starts
            from stylesift.featurizer import tiles

            warm_tiles = np.zeros((batch_size, tiles.TILES, tiles.TILE, tiles.TILE, 3), np.uint8)
        featurizer.featurize_sets(np.zeros((batch_size, featurizer.input_size, featurizer.input_size, 3), np.uint8),
                                  warm_tiles)
        log(f"baseline: extract --precision {precision} --features {','.join(featurizer.feature_sets)}, best of {repeat}")
        rounds = [time_extract(featurizer, files, tmp / f"extract-{r}.h5", name=f"extract[{precision}]")
                  for r in range(repeat)]
        baseline = max(rounds, key=lambda s: s.images_per_second)
        if model is None:
            model = _train_model(tmp / "extract-0.h5", files, sources, tmp / "model.ssmodel", feature_set)
        log("starting stylesift serve")
        server = _Server(Path(model), tmp, ["--max-batch", str(max_batch), "--batch-wait-ms", str(batch_wait_ms),
                                            "--runtime", runtime] + (["--workers", str(workers)] if workers else []))
        samples: list[tuple[float, float]] = []
        stop_sampling = threading.Event()

        def sample():
            while not stop_sampling.wait(0.25):
                rss = server_rss_mib(server.process.pid)
                if rss is not None:
                    samples.append((time.monotonic(), rss))

        sampler = threading.Thread(target=sample, name="bench-rss", daemon=True)
        try:
            singles = [multipart([f]) for f in files]
            log(f"warm-up: {warmup} requests")
            load(server.port, server.token, singles, clients=min(8, max(clients)), requests=warmup, max_seconds=60)
            rss_warm = server_rss_mib(server.process.pid)
            sampler.start()
            configs = []
            for per in per_request:
                bodies = singles if per == 1 else [multipart([files[(i * per + j) % len(files)] for j in range(per)])
                                                   for i in range(max(1, len(files) // per))]
                for n in clients:
                    count = max(n, -(-requests // per))
                    log(f"{n} clients, {per} images per request: {count} requests")
                    t0 = time.monotonic()
                    rss_start = server_rss_mib(server.process.pid)
                    result = load(server.port, server.token, bodies, clients=n, requests=count, max_seconds=max_seconds)
                    window = [rss for t, rss in samples if t >= t0]
                    images_per_second = result["requests"] * per / result["seconds"] if result["seconds"] > 0 else 0.0
                    configs.append({"clients": n, "images_per_request": per, **result,
                                    "images": result["requests"] * per,
                                    "images_per_second": round(images_per_second, 2),
                                    "ratio_to_extract": round(images_per_second / baseline.images_per_second, 3),
                                    "rss_mib_start": _round(rss_start), "rss_mib_end": _round(window[-1] if window else None),
                                    "rss_mib_samples": [round(r) for r in window[:: max(1, len(window) // 20)]]})
            rss_end = server_rss_mib(server.process.pid)
        finally:
            stop_sampling.set()
            code = server.stop()
    rss = [r for _, r in samples]
    return {
        "machine": machine_info(),
        "images": len(files), "size": size, "precision": precision, "runtime": runtime, "feature_set": feature_set,
        "server": {"max_batch": max_batch, "batch_wait_ms": batch_wait_ms, "exit_code": code, "store": None},
        "extract": {**baseline.to_dict(), "rounds": [s.to_dict() for s in rounds]},
        "configs": configs,
        "requests_total": sum(c["requests"] for c in configs),
        "errors_total": sum(c["errors"] for c in configs),
        "rss_mib": {"after_warmup": _round(rss_warm), "peak": _round(max(rss, default=None)), "end": _round(rss_end),
                    "growth_after_warmup": _round(None if rss_warm is None or rss_end is None else rss_end - rss_warm)},
    }


def _round(x):
    return None if x is None else round(float(x), 1)


def table(result: dict) -> str:
    """The report as lines of text."""
    m, e = result["machine"], result["extract"]
    lines = [f"machine: {m['cpu']}, {m['cpus']} CPUs, flags {' '.join(m['flags']) or '-'}; load {m['load_average']}",
             f"images: {result['images']} JPEGs of {result['size']} px; model of {result.get('feature_set', 'pooled')}; "
             f"server max batch {result['server']['max_batch']}, "
             f"batch wait {result['server']['batch_wait_ms']} ms, no store",
             f"baseline {e['name']}: {e['images_per_second']:.1f} images/s ({e['images']} in {e['seconds']:.1f} s)",
             f"  {'clients':>7} {'img/req':>7} {'requests':>8} {'errors':>6} {'images/s':>9} {'× extract':>9} "
             f"{'p50 ms':>8} {'p99 ms':>8}"]
    for c in result["configs"]:
        lat = c["latency_ms"]
        lines.append(f"  {c['clients']:>7} {c['images_per_request']:>7} {c['requests']:>8} {c['errors']:>6} "
                     f"{c['images_per_second']:>9.1f} {c['ratio_to_extract']:>9.2f} {lat['p50'] or 0:>8.1f} "
                     f"{lat['p99'] or 0:>8.1f}")
    r = result["rss_mib"]
    lines.append(f"server resident memory: {r['after_warmup']} MiB after warm-up, peak {r['peak']}, end {r['end']} "
                 f"(growth {r['growth_after_warmup']} MiB over {result['requests_total']} requests); "
                 f"{result['errors_total']} failed requests")
    return "\n".join(lines)
