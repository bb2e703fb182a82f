"""The review page's server: the FastAPI app over one :class:`~stylesift.review.round.ReviewRound`.

``stylesift review MODEL PATH... --store STORE`` scores the images, then serves one page (FastAPI +
uvicorn) on loopback by default. The page shows the picks (one card per near-duplicate group),
the borderline band and suggestions from the batch, and takes a verdict per image: the model's
positive label, its negative label, or skip (no verdict), with an optional note. Scoring, verdicts
and their state live in :mod:`stylesift.review.round`, retraining in :mod:`stylesift.review.retrain`.

What the server guarantees:

- **Only the batch is served.** Images are addressed by their position in the batch
  (``/img/7``, and its 1:1 centre crop ``/api/crop/7``); a request never carries a file path, so
  nothing outside the scored set can be read.
- **A token guards everything.** The printed URL carries a random token; every request must
  present it (query ``token`` or header ``X-Token``), so another local user, a page on another
  site or a machine on the network (with ``--host``) cannot read images or write verdicts.
- **A verdict shown as saved is saved.** The page marks a card saved only when
  :meth:`~stylesift.review.round.ReviewRound.give_verdict` returned (the verdict is in the store);
  if the store stays busy the page says the verdict was not saved.
- **Retraining never replaces a file.** A retrained model is written next to the old one with the
  next free number (``model-002.ssmodel``), loaded back through the bundle checks, and only then
  put in use; the page shows which file scores the batch.
"""

# No ``from __future__ import annotations`` here: FastAPI reads the endpoints' annotations (``Request``,
# imported inside :func:`create_app` so that fastapi stays an optional extra) as live objects.
import json
import socket

from stylesift.review.round import ReviewError, ReviewRound
from stylesift.review.sockets import bind_tcp, is_loopback  # noqa: F401 - is_loopback: re-exported

MAX_BODY_BYTES = 64 * 1024  # a verdict is an id, a word and a note of at most 2,000 characters


def create_app(rnd: ReviewRound):
    """The FastAPI application serving ``rnd``."""
    from stylesift.extras import require

    fastapi = require("fastapi", "review", "the review page")
    from fastapi import Request
    from fastapi.concurrency import run_in_threadpool
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
        declared = request.headers.get("content-length", "0")
        raw = b"" if not declared.isdigit() or int(declared) > MAX_BODY_BYTES else await request.body()
        if not raw or len(raw) > MAX_BODY_BYTES:
            return JSONResponse({"error": f"the body is over {MAX_BODY_BYTES} bytes: {{id, verdict, note}}"},
                                status_code=413)
        try:
            body = json.loads(raw)
        except (ValueError, RecursionError):  # RecursionError: a body nested thousands deep
            return JSONResponse({"error": "the body must be JSON: {id, verdict, note}"}, status_code=400)
        if not isinstance(body, dict):
            return JSONResponse({"error": "the body must be a JSON object: {id, verdict, note}"}, status_code=400)
        try:
            # The store write blocks (the lock may be held by an extract): off the event loop, so the
            # page's other requests are answered meanwhile.
            return await run_in_threadpool(rnd.give_verdict, body.get("id"), body.get("verdict"),
                                           str(body.get("note") or ""))
        except ReviewError as exc:
            return JSONResponse({"error": str(exc)}, status_code=exc.status)

    @app.post("/api/more/{item_id}")
    def more_like(item_id: int):
        # A plain def: FastAPI runs it on its thread pool (the search reads the store).
        try:
            return {"id": item_id, "added": rnd.more_like(item_id)}
        except ReviewError as exc:
            return JSONResponse({"error": str(exc)}, status_code=exc.status)

    @app.post("/api/retrain")
    def retrain():
        return {"started": rnd.retrain(), "retraining": rnd.retraining}

    def jpeg(item_id: int, make, what: str):
        if not 0 <= item_id < len(rnd.items):
            return JSONResponse({"error": f"no image {item_id} in this round"}, status_code=404)
        try:
            return Response(make(item_id), media_type="image/jpeg")
        except Exception as exc:  # noqa: BLE001 - a file moved or damaged since scoring: the page shows a placeholder
            return JSONResponse({"error": f"no {what}: {type(exc).__name__}"}, status_code=404)

    # Plain defs: FastAPI runs them on its thread pool, so a decode never holds up the event loop.
    @app.get("/img/{item_id}")
    def image(item_id: int):
        return jpeg(item_id, rnd.thumbnail, "preview")

    @app.get("/api/crop/{item_id}")
    def crop(item_id: int):
        return jpeg(item_id, rnd.crop, "1:1 crop")

    return app


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (port 0: any free one), or :class:`ReviewError` saying what to do."""
    sock = bind_tcp(host, port, ReviewError, "another review server")
    sock.listen(64)
    return sock


def url_of(host: str, port: int, token: str) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/?token={token}"


def serve(rnd: ReviewRound, sock: socket.socket, *, log_level: str = "warning") -> None:
    """Serve ``rnd`` on the bound ``sock`` until interrupted (Ctrl-C)."""
    from stylesift.extras import require

    uvicorn = require("uvicorn", "review", "the review page")
    config = uvicorn.Config(create_app(rnd), log_level=log_level, access_log=False, lifespan="off")
    uvicorn.Server(config).run(sockets=[sock])
