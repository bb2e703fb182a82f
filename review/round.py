"""A review round: one scored batch, its picks, borderline band and suggestions, and the verdicts given on it.

:class:`ReviewRound` is what the review page (:mod:`stylesift.review.server`) serves. It opens the
feature store once for each operation that needs it (scoring, a verdict, the page's state, starting
a retrain), through one helper (``_open``), so a daily ``extract`` into the same store waits a
moment at most.

- **A verdict shown as saved is saved.** Each verdict is one
  :meth:`~stylesift.featurizer.store.FeatureStore.add_verdicts` call (durable when it returns)
  before the page hears back. The store is opened for the verdict and closed at once; if it stays
  busy the verdict is refused with :class:`ReviewError` and nothing is written.
- **Retraining never replaces a file** (:mod:`stylesift.review.retrain`): the new model gets the
  next free number, is loaded back through the bundle checks, and only then scores the batch.
"""

from __future__ import annotations

import base64
import hmac
import os
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from stylesift.atomic import remove_stale_temps
from stylesift.errors import StylesiftError
from stylesift.review.retrain import Retrainer, needs_negative, retrain_method, train_next

BORDERLINE = 12
SUGGESTIONS = 3
THUMB_PX = 320
# The page polls the state every few seconds; the verdict log of a store that has been fed for years is
# long (200,000 verdicts: a second to read), so it is read again only when the store's manifest
# changed or this many seconds passed; this round's own verdicts are noted at once.
VERDICT_REFRESH_S = 10.0
MORE_LIKE = 8  # stored images one "more like this" opens
THUMB_CACHE = 512  # thumbnails kept (about 20 KB each): the page refetches every image after a retrain
CROP_PX = 512  # side of a card's 1:1 crop on the page: the original's own pixels, asked for by the "1:1" control
CROP_QUALITY = 92  # finer than the mailed sheet's 90 (served locally): reviewers judge the original's compression, not ours
CROP_CACHE = 48  # crops kept (100-300 KB each): a reviewer flips between a few cards' crops


class ReviewError(StylesiftError, RuntimeError):
    """The review server cannot start or cannot do what was asked; the message says what to do.

    ``status`` is the HTTP status the page gets: 400 a bad request, 409 a request that can never
    succeed (e.g. the image left the store since scoring), 503 a busy store (the same request may
    succeed in a moment; nothing was written).
    """

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


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
        Keyword arguments of :func:`~stylesift.classifiers.selection.select` (``threshold``, ``top_k``
        or ``top_fraction``); no threshold means the model's.
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
                 lock_timeout: float = 5.0, method: str | None = None, keep_seen: bool = False):
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
        self.items = [{"id": i, "path": str(it["path"]), "sha256": str(it["sha256"]), "seen_before": it.get("seen_before")}
                      for i, it in enumerate(items)]
        self.keep_seen = bool(keep_seen)
        self.batch_size = len(self.items)  # items past it are stored images opened by "more like this"
        self.more: dict[int, list[int]] = {}  # item id -> the ids "more like this" added for it
        self._lock = threading.RLock()
        self._write_lock = threading.Lock()
        self._latest: tuple[object, float, dict] | None = None  # (store generation, when read, sha256 -> Verdict)
        self._thumbs: dict[int, bytes] = {}
        self._crops: dict[int, bytes] = {}
        self._decoding = threading.BoundedSemaphore(min(4, os.cpu_count() or 1))
        self._retrainer = Retrainer(self._lock)
        self.model = ModelState(Path(model), bundle)
        remove_stale_temps(Path(model).parent, ".ssmodel")  # a retrain of an earlier server killed mid-write
        st = self._open()
        # pooled: near-duplicates, evidence, suggestion spread; the model's set: what it scores
        self._features, self._model_features = self._load_features(st)
        self._rescore(st)

    @property
    def retraining(self) -> dict | None:
        """``{"started", "error"?, "done"?, "file"?}`` once a retrain started (see :class:`~stylesift.review.retrain.Retrainer`)."""
        return self._retrainer.status

    @property
    def verdicts_at_last_train(self) -> int:
        return self._retrainer.verdicts_at_last_train

    def _open(self, mode: str = "r"):
        """The round's store, opened for one operation (``"a"``: for writing, waiting up to ``lock_timeout``)."""
        from stylesift.featurizer.store import FeatureStore

        if mode == "a":
            return FeatureStore(self.store, "a", lock_timeout=self.lock_timeout)
        return FeatureStore(self.store)

    # ------------------------------------------------------------------ scoring
    def _load_features(self, st) -> tuple[np.ndarray, np.ndarray]:
        """The batch's pooled features and the features of the set the model scores, from ``st``."""
        from stylesift.classifiers.feature_sets import bundle_set, check_set, load_features, store_fingerprints

        rows = st.rows_of([it["sha256"] for it in self.items]) if self.items else np.zeros(0, np.int64)
        missing = [it["path"] for it, r in zip(self.items, rows) if r < 0]
        if missing:
            raise ReviewError(f"{self.store}: {len(missing)} images of the batch are not in the store (first: {missing[0]}); "
                              "score them into this store first")
        pooled = st.features(rows) if len(rows) else np.zeros((0, 0), np.float32)
        check_set(self.model.bundle.summary, store_fingerprints(st), self.store)
        if not len(rows):
            return pooled, np.zeros((0, 0), np.float32)
        return pooled, load_features(st, rows, bundle_set(self.model.bundle.summary))

    def _rescore(self, st) -> None:
        """Score the batch with the model in use; picks, borderline band, suggestions, evidence (store ``st``)."""
        from stylesift.classifiers.grouping import choose, group_sizes
        from stylesift.featurizer.images import perceptual_hash
        from stylesift.review.suggest import suggest

        bundle = self.model.bundle
        scores = bundle.score(self._model_features) if len(self.items) else np.zeros(0)
        rule = {k: self.selection.get(k) for k in ("threshold", "top_k", "top_fraction")}
        # Picks, groups, suggestions and the band come from the scored batch only; stored images that
        # "more like this" opened are scored too, each its own card in its own section.
        n = self.batch_size
        batch = self.items[:n]
        # An image that repeats an earlier judged one (score's history) is shown, marked, but not picked.
        seen = None if self.keep_seen else np.array([it.get("seen_before") is not None for it in batch], bool)
        chosen, groups, how = choose(scores[:n], bundle.threshold, **rule, dedupe=self.dedupe, features=self._features[:n],
                                     hash_of=lambda i: perceptual_hash(batch[i]["path"]), exclude=seen)
        if groups is None:
            groups = np.arange(1, n + 1)  # every image its own card
        extra = len(scores) - n
        chosen = np.r_[chosen, np.zeros(extra, bool)]
        groups = np.r_[groups, (groups.max(initial=0) + 1 + np.arange(extra)).astype(groups.dtype)]
        # Suggestions are placed against the threshold in force (the model's own under a top-k rule).
        threshold = float(rule["threshold"] if rule["threshold"] is not None else bundle.threshold)
        sizes = group_sizes(groups) if len(groups) else groups
        order = np.argsort(-scores[:n], kind="stable")
        leaders, seen = [], set()
        for i in order:
            if groups[i] not in seen:
                seen.add(groups[i])
                leaders.append(int(i))
        picks = [i for i in leaders if chosen[i]]
        # Suggestions first (unlabelled images below the cut whose verdict teaches most), then the
        # borderline band from what is left, so a small batch still offers suggestions.
        known = self._latest_verdicts(st)
        unlabelled = [i for i in leaders if not chosen[i] and self.items[i]["sha256"] not in known]
        sugg = []
        if unlabelled:
            picked = suggest(self._features[unlabelled], scores[unlabelled], threshold,
                             SUGGESTIONS, labelled=self._features[picks] if picks else None)
            sugg = [unlabelled[p.row] for p in picked]
        band = [i for i in leaders if not chosen[i] and i not in set(sugg)][:BORDERLINE]
        evidence = self._evidence(st, picks + band + sugg)
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

    def _evidence(self, st, ids: list[int]) -> dict:
        from stylesift.review.report import nearest_positives

        bundle = self.model.bundle
        positives = np.asarray(bundle.train_sha256)[np.asarray(bundle.train_labels) == bundle.positive_label]
        if not len(positives) or not ids:
            return {}
        try:
            return nearest_positives(st, [self.items[i]["sha256"] for i in ids], positives)
        except StylesiftError:
            return {}  # evidence is a help, not a requirement

    # ------------------------------------------------------------------ verdicts
    def _latest_verdicts(self, st) -> dict[str, object]:
        """The latest verdict of each image of the batch in ``st``'s log, by sha256 (cached, see VERDICT_REFRESH_S)."""
        with self._lock:
            cached = self._latest
        if cached is not None and cached[0] == st.generation and time.monotonic() - cached[1] < VERDICT_REFRESH_S:
            return dict(cached[2])
        wanted = {it["sha256"] for it in self.items}
        latest = {}
        for v in st.verdicts():
            if v.sha256 in wanted:
                latest[v.sha256] = v
        with self._lock:
            self._latest = (st.generation, time.monotonic(), latest)
        return dict(latest)

    def _note_verdict(self, generation, v) -> None:
        """Put a verdict this round just saved into the cache (the log need not be read again for it)."""
        with self._lock:
            if self._latest is not None:
                self._latest = (generation, self._latest[1], {**self._latest[2], v.sha256: v})

    def _round_verdicts(self, st) -> int:
        """How many images of the batch got their latest verdict in this round."""
        return sum(v.time >= self.started for v in self._latest_verdicts(st).values())

    def give_verdict(self, item_id: int, verdict: str, note: str = "") -> dict:
        """Record ``verdict`` (``positive``/``negative``) on item ``item_id``; returns the saved verdict.

        ``skip`` records nothing. Raises :class:`ReviewError` for an unknown id or verdict, or a
        store that stays busy (nothing is written then).
        """
        from stylesift.featurizer.store import StoreBusy, StoreError, Verdict

        if type(item_id) is not int or not 0 <= item_id < len(self.items):  # JSON true is not item 1
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
                with self._open("a") as st:
                    self._latest_verdicts(st)  # the cache is current before this verdict joins it
                    st.add_verdicts([v])
                    self._note_verdict(st.generation, v)
                    verdicts = self._round_verdicts(st)
            except StoreBusy as exc:
                raise ReviewError(f"the verdict was not saved (the store is busy; try again): {exc}", 503) from None
            except StoreError as exc:
                raise ReviewError(f"the verdict cannot be saved: {exc}", 409) from None
        if self._retrainer.due(verdicts, self.retrain_every):
            self.retrain()
        return {"id": item_id, "verdict": verdict, "label": label, "saved": True, "time": v.time}

    # ------------------------------------------------------------------ state for the page
    def state(self) -> dict:
        latest = self._latest_verdicts(self._open())
        round_verdicts = [v for v in latest.values() if v.time >= self.started]
        with self._lock:
            items = []
            for it in self.items:
                v = latest.get(it["sha256"])
                row = {k: it[k] for k in ("id", "score", "selected", "group", "group_size", "seen_before", "like",
                                          "similarity") if k in it}
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
                "more": {str(k): v for k, v in self.more.items()},
                "labels": {"positive": self.positive_label, "negative": self.negative_label},
                "model": {"file": self.model.path.name, "version": self.model.version, "since": self.model.since,
                          "method": self.model.bundle.method, "asked": self.method,
                          "threshold": float(self.model.bundle.threshold)},
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

    # ------------------------------------------------------------------ more like this
    def more_like(self, item_id: int, k: int = MORE_LIKE) -> list[int]:
        """Open the ``k`` unlabelled stored images most like item ``item_id`` as cards of this round; their ids.

        Found by :func:`~stylesift.featurizer.search.similar` (cosine of pooled features, the index
        beside the store; never the image itself); images already in the round are not added again.
        Verdicts on them are given and saved like any other.
        """
        from stylesift.classifiers.feature_sets import bundle_set, load_features
        from stylesift.featurizer.search import similar

        if type(item_id) is not int or not 0 <= item_id < len(self.items):
            raise ReviewError(f"no image {item_id!r} in this round (ids 0..{len(self.items) - 1})", 404)
        with self._lock:
            if item_id in self.more:
                return list(self.more[item_id])
            known = {it["sha256"] for it in self.items}
        (query,) = similar(self.store, [self.items[item_id]["sha256"]], k + len(known), unlabelled=True)
        found = [r for r in query.results if r["sha256"] not in known][:k]
        st = self._open()
        rows = st.rows_of([r["sha256"] for r in found]) if found else np.zeros(0, np.int64)
        with self._lock:
            ids = []
            if len(rows):
                self._features = np.vstack([self._features, st.features(rows)])
                self._model_features = np.vstack([self._model_features,
                                                  load_features(st, rows, bundle_set(self.model.bundle.summary))])
                for r in found:
                    ids.append(len(self.items))
                    self.items.append({"id": ids[-1], "path": r["path"], "sha256": r["sha256"], "seen_before": None,
                                       "like": item_id, "similarity": round(r["similarity"], 4)})
            self.more[item_id] = ids
        self._rescore(st)
        return ids

    # ------------------------------------------------------------------ retraining
    def retrain(self) -> bool:
        """Start a background retrain (False when one is running already)."""
        if self._retrainer.running:
            return False
        st = self._open()
        return self._retrainer.start(lambda: self._retrain(st), self._round_verdicts(st))

    def _retrain(self, st) -> str:
        """Train on ``st``'s labels, write and load the next model, put it in use and rescore; its file name."""
        old = self.model
        method = retrain_method(self.method, st.label_counts(), self.negative_label)
        # Rejections are the negative label; a one-class model uses them to validate when there are any.
        wanted = needs_negative(method) or st.label_counts().get(self.negative_label, 0) > 0
        negative = self.negative_label if wanted else None
        path, loaded = train_next(self.store, old.path, old.bundle, positive=self.positive_label, negative=negative,
                                  method=method, fingerprint=st.fingerprint)
        with self._lock:
            self.model = ModelState(path, loaded, version=old.version + 1)
        self._rescore(self._open())
        return path.name

    # ------------------------------------------------------------------ images
    def thumbnail(self, item_id: int) -> bytes:
        """JPEG bytes of item ``item_id`` fitted into ``THUMB_PX`` (see :meth:`_image`)."""
        from stylesift.review.report import thumbnail_data_uri

        def make(item):
            uri = thumbnail_data_uri(item["path"], THUMB_PX, sha256=item["sha256"])
            return base64.b64decode(uri.split(",", 1)[1])

        return self._image(item_id, self._thumbs, THUMB_CACHE, make)

    def crop(self, item_id: int) -> bytes:
        """JPEG bytes of the centre ``CROP_PX × CROP_PX`` pixels of item ``item_id`` at native resolution (see :meth:`_image`)."""
        from stylesift.review.report import crop_jpeg

        return self._image(item_id, self._crops, CROP_CACHE,
                           lambda item: crop_jpeg(item["path"], CROP_PX, sha256=item["sha256"], quality=CROP_QUALITY))

    def _image(self, item_id: int, cache: dict[int, bytes], keep: int, make) -> bytes:
        """``make(item)`` for item ``item_id``, decoded under the round's decode slots and kept in ``cache`` (at most ``keep``).

        ``make`` must show the scored content or nothing (the ``sha256`` check): the verdict is saved
        against that content, so a file put at the path since scoring is never shown in its place.
        """
        with self._lock:
            cached = cache.get(item_id)
        if cached is not None:
            return cached
        item = self.items[item_id]
        # Thumbnails and crops share the slots: the server runs up to 40 requests at once, a few
        # decodes are enough, and each is within the process's decode budget besides.
        with self._decoding:
            data = make(item)
        with self._lock:
            if len(cache) >= keep:
                cache.pop(next(iter(cache)))
            cache[item_id] = data
        return data

    def check_token(self, token: str | None) -> bool:
        return token is not None and hmac.compare_digest(token.encode(), self.token.encode())
