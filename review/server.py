"""The review page's server: one scored batch (a *round*), verdicts saved at once, retraining in the background.

``stylesift review MODEL PATH... --store STORE`` scores the images, then serves one page (FastAPI +
uvicorn) on loopback by default. The page shows the picks (one card per near-duplicate group),
the borderline band and suggestions from the batch, and takes a verdict per image: the model's
positive label, its negative label, or skip (no verdict), with an optional note.

What the server guarantees:

- **Only the batch is served.** Images are addressed by their position in the batch
  (``/img/7``); a request never carries a file path, so nothing outside the scored set can be read.
- **A token guards everything.** The printed URL carries a random token; every request must
  present it (query ``token`` or header ``X-Token``), so another local user, a page on another
  site or a machine on the network (with ``--host``) cannot read images or write verdicts.
- **A verdict shown as saved is saved.** Each verdict is one
  :meth:`~stylesift.featurizer.store.FeatureStore.add_verdicts` call (durable when it returns)
  before the page hears back; the page marks a card saved only on that answer. The store is
  opened for each verdict and closed at once, so a daily ``extract`` into the same store waits a
  moment at most; if the store stays busy the page says the verdict was not saved.
- **Retraining never replaces a file.** A retrained model is written next to the old one with the
  next free number (``model-002.ssmodel``), loaded back through the bundle checks, and only then
  put in use; the page shows which file scores the batch.
"""

# No ``from __future__ import annotations`` here: FastAPI reads the endpoints' annotations (``Request``,
# imported inside :func:`create_app` so that fastapi stays an optional extra) as live objects.
import base64
import hmac
import os
import secrets
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from stylesift.errors import StylesiftError

BORDERLINE = 12
SUGGESTIONS = 3
THUMB_PX = 320
_LOOPBACK = {"127.0.0.1", "::1", "localhost"}


class ReviewError(StylesiftError, RuntimeError):
    """The review server cannot start or cannot do what was asked; the message says what to do."""


def numbered_model_path(model: Path) -> Path:
    """The next free ``STEM-NNN.SUFFIX`` beside ``model`` (``model.ssmodel`` -> ``model-002.ssmodel``).

    A model already numbered (``model-002``) continues its own series (``model-003``).
    """
    model = Path(model)
    stem, suffix = model.stem, model.suffix
    base, _, num = stem.rpartition("-")
    if base and num.isdigit() and len(num) == 3:
        stem, n = base, int(num) + 1
    else:
        n = 2
    while (model.parent / f"{stem}-{n:03d}{suffix}").exists():
        n += 1
    return model.parent / f"{stem}-{n:03d}{suffix}"


@dataclass
class ModelState:
    """The model in use: its file, bundle, and when it started scoring the batch."""

    path: Path
    bundle: object
    since: float = field(default_factory=time.time)
    version: int = 1


class ReviewRound:
    """One scored batch reviewed on one page.

    Parameters
    ----------
    model : path
        The model bundle in use (already checked against ``store`` by the caller).
    bundle : Bundle
    store : path
        Feature store holding every item's features; verdicts go into its log.
    items : list of dict
        The batch, in any order: ``path``, ``sha256`` (every item must be in ``store``).
    reviewer : str
    selection : dict
        Keyword arguments of :func:`~stylesift.review.dedupe.select_distinct`/``select``
        (``threshold``, ``top_k`` or ``top_fraction``); no threshold means the model's.
    dedupe : float or None
        Near-duplicate threshold (None: every image its own group).
    negative_label : str, optional
        The label a "reject" verdict records when the model has no negative label.
    retrain_every : int
        Retrain in the background after this many new verdicts in the round (0: only on request).
    lock_timeout : float
        Seconds a verdict waits for a store another process is writing.
    """

    def __init__(self, model, bundle, store, items: list[dict], *, reviewer: str, selection: dict | None = None,
                 dedupe: float | None = None, negative_label: str | None = None, retrain_every: int = 0,
                 lock_timeout: float = 5.0, method: str | None = None):
        self.store = Path(store)
        self.reviewer = reviewer
        self.selection = dict(selection or {})
        self.dedupe = dedupe
        self.retrain_every = int(retrain_every)
        self.lock_timeout = float(lock_timeout)
        self.method = method or bundle.method
        self.positive_label = bundle.positive_label
        self.negative_label = bundle.negative_label or negative_label or f"not-{bundle.positive_label}"
        self.started = time.time()
        self.token = secrets.token_urlsafe(24)
        self.items = [{"id": i, "path": str(it["path"]), "sha256": str(it["sha256"])} for i, it in enumerate(items)]
        self._lock = threading.RLock()
        self._write_lock = threading.Lock()
        self.model = ModelState(Path(model), bundle)
        self.retraining: dict | None = None  # {"started", "error"?} while (or after a failed) retrain
        self.verdicts_at_last_train = 0
        self._features = self._load_features()  # pooled: near-duplicates, evidence, suggestion spread
        self._model_features = self._load_features(model=True)  # the set the model scores
        self._rescore()

    # ------------------------------------------------------------------ scoring
    def _load_features(self, model: bool = False) -> np.ndarray:
        from stylesift.classifiers.feature_sets import bundle_set, check_set, load_features, store_fingerprints
        from stylesift.featurizer.store import FeatureStore

        st = FeatureStore(self.store)
        if model:
            check_set(self.model.bundle.summary, store_fingerprints(st), self.store)
        rows = st.rows_of([it["sha256"] for it in self.items]) if self.items else np.zeros(0, np.int64)
        missing = [it["path"] for it, r in zip(self.items, rows) if r < 0]
        if missing:
            raise ReviewError(f"{self.store}: {len(missing)} images of the batch are not in the store (first: {missing[0]}); "
                              "score them into this store first")
        if not len(rows):
            return np.zeros((0, 0), np.float32)
        return load_features(st, rows, bundle_set(self.model.bundle.summary)) if model else st.features(rows)

    def _rescore(self) -> None:
        """Score the batch with the model in use; picks, borderline band, suggestions, evidence."""
        from stylesift.classifiers.selection import select
        from stylesift.review.dedupe import group_by_score, group_sizes, select_distinct
        from stylesift.review.suggest import suggest

        bundle = self.model.bundle
        scores = bundle.score(self._model_features) if len(self.items) else np.zeros(0)
        rule = dict(self.selection)
        if not any(rule.get(k) is not None for k in ("threshold", "top_k", "top_fraction")):
            rule = {"threshold": bundle.threshold}
        rule = {k: v for k, v in rule.items() if v is not None}
        if self.dedupe is not None and len(scores):
            groups = group_by_score(self._features, scores, self.dedupe, paths=[it["path"] for it in self.items])
            chosen, how = select_distinct(scores, groups, **rule)
        else:
            groups = np.arange(1, len(scores) + 1)
            chosen, how = select(scores, **rule)
        sizes = group_sizes(groups) if len(groups) else groups
        order = np.argsort(-scores, kind="stable")
        leaders, seen = [], set()
        for i in order:
            if groups[i] not in seen:
                seen.add(groups[i])
                leaders.append(int(i))
        picks = [i for i in leaders if chosen[i]]
        # Suggestions first (unlabelled images below the cut whose verdict teaches most), then the
        # borderline band from what is left, so a small batch still offers suggestions.
        known = self._latest_verdicts()
        unlabelled = [i for i in leaders if not chosen[i] and self.items[i]["sha256"] not in known]
        sugg = []
        if unlabelled:
            picked = suggest(self._features[unlabelled], scores[unlabelled], float(rule.get("threshold", bundle.threshold)),
                             SUGGESTIONS, labelled=self._features[picks] if picks else None)
            sugg = [unlabelled[p.row] for p in picked]
        band = [i for i in leaders if not chosen[i] and i not in set(sugg)][:BORDERLINE]
        evidence = self._evidence(picks + band + sugg)
        with self._lock:
            for i, it in enumerate(self.items):
                it.update(score=float(scores[i]), selected=bool(chosen[i]), group=int(groups[i]), group_size=int(sizes[i]))
                it.pop("nearest", None)
                ev = evidence.get(it["sha256"])
                if ev is not None:
                    it["nearest"] = {"name": os.path.basename(ev.path or "") or ev.sha256[:12], "similarity": round(ev.similarity, 3)}
            self.sections = {"picks": picks, "borderline": band, "suggestions": sugg}
            lead = set(leaders)
            self.members = {}  # group -> the ids behind its card, best first
            for i in order:
                if int(i) not in lead:
                    self.members.setdefault(int(groups[i]), []).append(int(i))
            self.how = how

    def _evidence(self, ids: list[int]) -> dict:
        from stylesift.featurizer.store import FeatureStore
        from stylesift.review.report import nearest_positives

        bundle = self.model.bundle
        positives = np.asarray(bundle.train_sha256)[np.asarray(bundle.train_labels) == bundle.positive_label]
        if not len(positives) or not ids:
            return {}
        try:
            return nearest_positives(FeatureStore(self.store), [self.items[i]["sha256"] for i in ids], positives)
        except StylesiftError:
            return {}  # evidence is a help, not a requirement

    # ------------------------------------------------------------------ verdicts
    def _latest_verdicts(self) -> dict[str, object]:
        from stylesift.featurizer.store import FeatureStore

        wanted = {it["sha256"] for it in self.items}
        latest = {}
        for v in FeatureStore(self.store).verdicts():
            if v.sha256 in wanted:
                latest[v.sha256] = v
        return latest

    def give_verdict(self, item_id: int, verdict: str, note: str = "") -> dict:
        """Record ``verdict`` (``positive``/``negative``) on item ``item_id``; returns the saved verdict.

        ``skip`` records nothing. Raises :class:`ReviewError` for an unknown id or verdict, or a
        store that stays busy (nothing is written then).
        """
        from stylesift.featurizer.store import FeatureStore, StoreError, Verdict

        if not isinstance(item_id, int) or not 0 <= item_id < len(self.items):
            raise ReviewError(f"no image {item_id!r} in this round (ids 0..{len(self.items) - 1})")
        if verdict == "skip":
            return {"id": item_id, "verdict": "skip", "saved": False}
        if verdict not in ("positive", "negative"):
            raise ReviewError(f"a verdict is positive, negative or skip, not {verdict!r}")
        if len(note) > 2000:
            raise ReviewError("a note is at most 2000 characters")
        item = self.items[item_id]
        label = self.positive_label if verdict == "positive" else self.negative_label
        v = Verdict(sha256=item["sha256"], label=label, reviewer=self.reviewer, time=time.time(), note=note,
                    source=f"review:{self.model.path.name}")
        with self._write_lock:
            try:
                with FeatureStore(self.store, "a", lock_timeout=self.lock_timeout) as st:
                    st.add_verdicts([v])
            except StoreError as exc:
                raise ReviewError(f"the verdict was not saved: {exc}") from None
        self._maybe_retrain()
        return {"id": item_id, "verdict": verdict, "label": label, "saved": True, "time": v.time}

    # ------------------------------------------------------------------ state for the page
    def state(self) -> dict:
        latest = self._latest_verdicts()
        round_verdicts = [v for v in latest.values() if v.time >= self.started]
        with self._lock:
            items = []
            for it in self.items:
                v = latest.get(it["sha256"])
                row = {k: it[k] for k in ("id", "score", "selected", "group", "group_size") if k in it}
                row["name"] = os.path.basename(it["path"]) or it["path"]
                row["nearest"] = it.get("nearest")
                if v is not None:
                    row["verdict"] = {"label": v.label, "positive": v.label == self.positive_label, "reviewer": v.reviewer,
                                      "time": v.time, "note": v.note, "this_round": v.time >= self.started}
                items.append(row)
            picks = set(self.sections["picks"])
            pick_verdicts = [v for v in round_verdicts if self._id_of(v.sha256) in picks]
            accepted = sum(v.label == self.positive_label for v in pick_verdicts)
            rejected = sum(v.label == self.negative_label for v in pick_verdicts)
            return {
                "items": items, "sections": self.sections, "members": {str(k): v for k, v in self.members.items()},
                "labels": {"positive": self.positive_label, "negative": self.negative_label},
                "model": {"file": self.model.path.name, "version": self.model.version, "since": self.model.since,
                          "method": self.method, "threshold": float(self.model.bundle.threshold)},
                "selection": self.how, "retraining": self.retraining, "reviewer": self.reviewer,
                "tally": {"verdicts": len(round_verdicts), "accepted": accepted, "rejected": rejected,
                          "picks": len(picks),
                          "precision": round(accepted / (accepted + rejected), 4) if accepted + rejected else None},
            }

    def _id_of(self, sha: str) -> int | None:
        for it in self.items:
            if it["sha256"] == sha:
                return it["id"]
        return None

    # ------------------------------------------------------------------ retraining
    def _maybe_retrain(self) -> None:
        if self.retrain_every <= 0:
            return
        n = sum(v.time >= self.started for v in self._latest_verdicts().values())
        if n - self.verdicts_at_last_train >= self.retrain_every:
            self.retrain()

    def retrain(self) -> bool:
        """Start a background retrain (False when one is running already)."""
        with self._lock:
            if self.retraining and "error" not in self.retraining and "done" not in self.retraining:
                return False
            self.retraining = {"started": time.time()}
            self.verdicts_at_last_train = sum(v.time >= self.started for v in self._latest_verdicts().values())
        threading.Thread(target=self._retrain, name="stylesift-retrain", daemon=True).start()
        return True

    def _retrain(self) -> None:
        from stylesift.classifiers.bundle import Bundle
        from stylesift.classifiers.train import train
        from stylesift.featurizer.store import FeatureStore

        try:
            old = self.model
            # Rejections are the negative label; a one-class model uses them to validate when there are any.
            negative = self.negative_label if self._needs_negative() or self._has_label(self.negative_label) else None
            from stylesift.classifiers.feature_sets import bundle_set

            bundle = train(self.store, self.positive_label, negative, self.method, n_jobs=1,
                           feature_set=bundle_set(old.bundle.summary))
            path = numbered_model_path(old.path)
            bundle.save(path)
            loaded = Bundle.load(path, fingerprint=FeatureStore(self.store).fingerprint)
            with self._lock:
                self.model = ModelState(path, loaded, version=old.version + 1)
            self._rescore()
            with self._lock:
                self.retraining = {"started": self.retraining["started"], "done": time.time(), "file": path.name}
        except Exception as exc:  # noqa: BLE001 - shown on the page; the old model stays in use
            with self._lock:
                self.retraining = {"started": (self.retraining or {}).get("started"), "error": str(exc)}

    def _needs_negative(self) -> bool:
        from stylesift.classifiers.methods import get_method

        return get_method(self.method).needs_negatives

    def _has_label(self, label: str) -> bool:
        from stylesift.featurizer.store import FeatureStore

        return FeatureStore(self.store).label_counts().get(label, 0) > 0

    # ------------------------------------------------------------------ images
    def thumbnail(self, item_id: int) -> bytes:
        from stylesift.review.report import thumbnail_data_uri

        uri = thumbnail_data_uri(self.items[item_id]["path"], THUMB_PX)
        return base64.b64decode(uri.split(",", 1)[1])

    def check_token(self, token: str | None) -> bool:
        return token is not None and hmac.compare_digest(token.encode(), self.token.encode())


def create_app(rnd: ReviewRound):
    """The FastAPI application serving ``rnd``."""
    from stylesift.extras import require

    fastapi = require("fastapi", "review", "the review page")
    from fastapi import Request
    from fastapi.responses import HTMLResponse, JSONResponse, Response

    from stylesift.review.page import PAGE

    app = fastapi.FastAPI(title="stylesift review", docs_url=None, redoc_url=None, openapi_url=None)

    @app.middleware("http")
    async def require_token(request: Request, call_next):
        token = request.query_params.get("token") or request.headers.get("x-token")
        if not rnd.check_token(token):
            return JSONResponse({"error": "missing or wrong token: open the URL the review command printed"}, status_code=403)
        response = await call_next(request)
        response.headers["Cache-Control"] = "no-store"
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"  # the token is in the URL
        return response

    @app.get("/", response_class=HTMLResponse)
    def page():
        return HTMLResponse(PAGE, headers={"Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
                                           "style-src 'unsafe-inline'; script-src 'unsafe-inline'; connect-src 'self'"})

    @app.get("/api/state")
    def state():
        return rnd.state()

    @app.post("/api/verdict")
    async def verdict(request: Request):
        try:
            body = await request.json()
        except ValueError:
            return JSONResponse({"error": "the body must be JSON: {id, verdict, note}"}, status_code=400)
        if not isinstance(body, dict):
            return JSONResponse({"error": "the body must be a JSON object: {id, verdict, note}"}, status_code=400)
        try:
            return rnd.give_verdict(body.get("id"), body.get("verdict"), str(body.get("note") or ""))
        except ReviewError as exc:
            status = 503 if "not saved" in str(exc) else 400
            return JSONResponse({"error": str(exc)}, status_code=status)

    @app.post("/api/retrain")
    def retrain():
        return {"started": rnd.retrain(), "retraining": rnd.retraining}

    @app.get("/img/{item_id}")
    def image(item_id: int):
        if not 0 <= item_id < len(rnd.items):
            return JSONResponse({"error": f"no image {item_id} in this round"}, status_code=404)
        try:
            return Response(rnd.thumbnail(item_id), media_type="image/jpeg")
        except Exception as exc:  # noqa: BLE001 - a file moved or damaged since scoring: the page shows a placeholder
            return JSONResponse({"error": f"no preview: {type(exc).__name__}"}, status_code=404)

    return app


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (port 0: any free one), or :class:`ReviewError` saying what to do."""
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(64)
    except OSError as exc:
        sock.close()
        if exc.errno in (98, 48, 10048):  # EADDRINUSE on Linux, macOS, Windows
            raise ReviewError(f"port {port} on {host} is in use (another review server?); pass --port with a free "
                              "port, or --port 0 to pick one") from None
        raise ReviewError(f"cannot listen on {host}:{port}: {exc.strerror or exc}; check --host and --port") from None
    return sock


def url_of(host: str, port: int, token: str) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/?token={token}"


def is_loopback(host: str) -> bool:
    return host in _LOOPBACK or host.startswith("127.")


def serve(rnd: ReviewRound, sock: socket.socket, *, log_level: str = "warning") -> None:
    """Serve ``rnd`` on the bound ``sock`` until interrupted (Ctrl-C)."""
    from stylesift.extras import require

    uvicorn = require("uvicorn", "review", "the review page")
    config = uvicorn.Config(create_app(rnd), log_level=log_level, access_log=False, lifespan="off")
    uvicorn.Server(config).run(sockets=[sock])
