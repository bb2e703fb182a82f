"""A scoring service without the real network: a tiny ONNX backbone (:mod:`helpers.networks`), pictures,
a trained model; FastAPI's TestClient over it, and ``stylesift serve`` as a real process on a free port."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

TOKEN = "test-token-" + "x" * 24
AUTH = {"Authorization": f"Bearer {TOKEN}"}
STYLESIFT = Path(sys.executable).with_name("stylesift")


@dataclass
class ServeWorld:
    folder: Path
    net: Path
    model: Path  # models/model.ssmodel, trained on `store` (good against plain)
    store: Path
    good: list
    plain: list
    new: list  # pictures no store holds


def build_world(folder: Path) -> ServeWorld:
    """Store (labelled good / plain), model, and new pictures, all featurized by the tiny backbone."""
    from helpers.networks import write_network
    from helpers.pictures import write_pictures, write_textures

    folder.mkdir(parents=True, exist_ok=True)
    net = write_network(folder / "tiny.onnx")
    good = write_pictures(folder / "good", 10, seed=1)
    plain = write_textures(folder / "plain", 10, seed=2)
    store = folder / "train.h5"
    extract(net, good, store, "good")
    extract(net, plain, store, "plain")
    (folder / "models").mkdir()
    model = train_model(store, folder / "models" / "model.ssmodel")
    new = write_pictures(folder / "new", 6, seed=7) + write_textures(folder / "new", 3, seed=8)
    return ServeWorld(folder, net, model, store, good, plain, new)


def extract(net, paths, store, label=None):
    from stylesift.featurizer.extract import Featurizer

    return Featurizer(backbone_file=net, batch_size=8, workers=2).extract(paths, store, label=label)


def train_model(store, out, method: str = "head") -> Path:
    import stylesift

    stylesift.train(store, "good", "plain", method).save(out)
    return Path(out)


def other_space_model(world: ServeWorld, out: Path) -> Path:
    """A model of another feature space: the same network file layout with other weights."""
    from helpers.networks import write_network

    net = write_network(world.folder / f"other-{uuid.uuid4().hex[:6]}.onnx", extra=1.0)
    store = world.folder / f"other-{uuid.uuid4().hex[:6]}.h5"
    extract(net, world.good, store, "good")
    extract(net, world.plain, store, "plain")
    return train_model(store, out)


def copy_store(store: Path, to: Path) -> Path:
    """A copy of a store: the .h5 and its .parts folder."""
    shutil.copy2(store, to)
    shutil.copytree(Path(str(store) + ".parts"), Path(str(to) + ".parts"))
    return to


def files_of(paths, names=None) -> list:
    """The multipart ``files`` fields of ``paths`` (httpx/TestClient form)."""
    names = names or [Path(p).name for p in paths]
    return [("files", (n, Path(p).read_bytes(), "image/jpeg")) for n, p in zip(names, paths)]


def open_service(world: ServeWorld, *, store=None, budget=None, **settings):
    from stylesift.review.serve import ScoringService, ServeSettings

    return ScoringService.open(world.model, store, ServeSettings(**settings), budget=budget)


@contextmanager
def client(service, **kwargs):
    """FastAPI's TestClient over ``service`` (started and stopped by the app's lifespan), sending the token."""
    from fastapi.testclient import TestClient

    from stylesift.review.serve import create_app

    with TestClient(create_app(service, TOKEN), headers=AUTH, **kwargs) as c:
        yield c


# ---------------------------------------------------------------------------------- a real server process
@dataclass
class Server:
    process: subprocess.Popen
    url: str
    token: str | None
    stdout: list

    def call(self, path, *, data=None, files=None, token=None, timeout=60):
        """``(status, JSON)`` of a request (POST when ``data`` (JSON) or ``files`` (paths) are given)."""
        headers = {"Authorization": f"Bearer {token or self.token}"}
        body = None
        if files is not None:
            body, kind = multipart(files)
            headers["Content-Type"] = kind
        elif data is not None:
            body = json.dumps(data).encode()
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(self.url + path, data=body, headers=headers, method="POST" if body else "GET")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")

    def stop(self, timeout=60) -> tuple[int, str]:
        """SIGTERM, then the exit code and stderr (the rest of stdout joins :attr:`stdout`)."""
        if self.process.poll() is None:
            self.process.terminate()
        out, err = self.process.communicate(timeout=timeout)
        self.stdout.append(out or "")
        return self.process.returncode, err


def multipart(paths, boundary="stylesift-test-boundary") -> tuple[bytes, str]:
    """A multipart/form-data body of ``paths`` in the field ``files``, and its Content-Type."""
    out = []
    for p in paths:
        out.append(f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="{Path(p).name}"\r\n'
                   "Content-Type: image/jpeg\r\n\r\n".encode() + Path(p).read_bytes() + b"\r\n")
    out.append(f"--{boundary}--\r\n".encode())
    return b"".join(out), f"multipart/form-data; boundary={boundary}"


def start_server(model, *args, env=None, timeout=120) -> Server:
    """``stylesift serve MODEL --port 0 ARGS...`` in a subprocess; returns once ``/health`` answers."""
    process = subprocess.Popen([str(STYLESIFT), "serve", str(model), "--port", "0", *map(str, args)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, **(env or {})})
    lines, token, url = [], None, None
    deadline = time.time() + timeout
    while url is None:
        line = process.stdout.readline()
        if not line:
            _, err = process.communicate(timeout=30)
            raise AssertionError(f"stylesift serve ended early ({process.returncode}): {err[-3000:]}")
        lines.append(line)
        if line.startswith("token: "):
            token = line.split(": ", 1)[1].strip()
        if line.startswith("serving: "):
            url = line.split(": ", 1)[1].strip()
        if time.time() > deadline:
            process.kill()
            raise AssertionError("stylesift serve printed no address in time")
    server = Server(process, url, token, lines)
    while True:
        try:
            with urllib.request.urlopen(url + "/health", timeout=5) as r:
                if r.status == 200:
                    return server
        except OSError:
            pass
        if time.time() > deadline or process.poll() is not None:
            process.kill()
            raise AssertionError(f"stylesift serve did not answer /health: {process.communicate()[1][-3000:]}")
        time.sleep(0.1)
